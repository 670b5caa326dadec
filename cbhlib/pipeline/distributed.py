"""Running the pipeline on Dask: a LocalCluster of processes, an existing scheduler, or a
dask-jobqueue cluster (Slurm, PBS).

Independent steps run side by side as soon as the steps they need have finished; each step
runs in a worker process (papermill starts its kernel there). Inside a step, pretraining
hands its encoders to the same cluster (``CBH_DASK_SCHEDULER``), one task per (scope,
seed); encoders on a GPU ask for the worker resource ``GPU``. Without ``--workers``,
``--scheduler`` or ``--cluster`` nothing here is imported and runs are serial.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbhlib.config import read_yaml
from cbhlib.errors import CbhError, ParamsError
from cbhlib.fields import opt, parse_dataclass
from cbhlib.training.cluster import SCHEDULER_ENV

log = logging.getLogger(__name__)


@dataclass
class ClusterFile:
    """A dask-jobqueue cluster (params/cluster-slurm.yaml, params/cluster-pbs.yaml)."""

    kind: str = opt("slurm", "slurm or pbs", choices=("slurm", "pbs"))
    queue: str = opt("", "queue / partition")
    account: str = opt("", "account / project to charge")
    cores: int = opt(8, "cores per job", min=1)
    memory: str = opt("32GB", "memory per job")
    processes: int = opt(1, "Dask worker processes per job", min=1)
    walltime: str = opt("02:00:00", "wall time per job")
    jobs: int = opt(2, "jobs to start", min=1)
    gpus_per_job: int = opt(0, "GPUs per job (adds the scheduler's GPU request and a worker GPU resource)", min=0)
    job_extra_directives: list[str] = opt([], "extra #SBATCH / #PBS lines")
    job_script_prologue: list[str] = opt(
        [], "shell lines before the worker starts (e.g. module load, venv activate): they run as written"
    )
    local_directory: str = opt("", "worker scratch folder on the compute nodes")


_FORMATS = {  # what each string of a cluster file may be: it lands in a job script that a shell runs
    "queue": (r"[A-Za-z0-9_.@+,-]*", "a queue name (letters, digits, _.@+,-)"),
    "account": (r"[A-Za-z0-9_.@+-]*", "an account name (letters, digits, _.@+-)"),
    "memory": (r"\d+(\.\d+)?\s?([KMGT]i?B|B)", "a size such as 32GB or 64GiB"),
    "walltime": (r"(\d+-)?\d{1,4}(:\d{2}){0,2}", "a wall time such as 02:00:00 or 1-00:00:00"),
    "local_directory": (r"[A-Za-z0-9_./~+${}-]*", "a path of letters, digits, _./~+- and $VARIABLES"),
}


def check_cluster_file(cfg: ClusterFile, path: object) -> None:
    """Refuse what could add job-script lines or shell commands: control characters anywhere,
    strings outside their format, ``$(...)`` and backticks; bound the sizes."""
    for name in ("queue", "account", "memory", "walltime", "local_directory", "job_extra_directives"):
        values = getattr(cfg, name)
        for i, v in enumerate(values if isinstance(values, list) else [values]):
            key = f"{name}[{i}]" if isinstance(values, list) else name
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in v):
                raise ParamsError(path, key, "one line without control characters", f"{v!r}")
            fmt = _FORMATS.get(name)
            if fmt and not re.fullmatch(fmt[0], v):
                raise ParamsError(path, key, fmt[1], repr(v))
            if name == "job_extra_directives" and (not v.strip() or v.lstrip().startswith("#")):
                raise ParamsError(path, key, "a scheduler option such as --qos=normal", repr(v))
    if "$" in cfg.local_directory and not re.fullmatch(r"([^$]|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)*", cfg.local_directory):
        raise ParamsError(path, "local_directory", "$NAME or ${NAME} variables only", repr(cfg.local_directory))
    for i, line in enumerate(cfg.job_script_prologue):
        if "\n" in line or "\r" in line or "\0" in line:
            raise ParamsError(path, f"job_script_prologue[{i}]", "one shell line per item", repr(line))
    for name, hi in (("cores", 4096), ("processes", cfg.cores), ("jobs", 1000), ("gpus_per_job", 64)):
        if getattr(cfg, name) > hi:
            raise ParamsError(path, name, f"at most {hi}", repr(getattr(cfg, name)))


def _cluster_from_file(path: str) -> Any:
    cfg: ClusterFile = parse_dataclass(ClusterFile, read_yaml(path), path)
    check_cluster_file(cfg, path)
    extra = list(cfg.job_extra_directives)
    # per worker process: one single-threaded encoder per core at a time (as a local cluster); notebooks:
    # DaskExecutor.max_steps
    slots = [f"cpu={max(1, cfg.cores // cfg.processes)}", "step=1"]
    if cfg.gpus_per_job:
        extra.append(f"--gres=gpu:{cfg.gpus_per_job}" if cfg.kind == "slurm" else f"-l ngpus={cfg.gpus_per_job}")
        slots.insert(0, f"GPU={max(1, cfg.gpus_per_job // cfg.processes)}")
    worker_extra = ["--resources", ",".join(slots)]
    kw: dict[str, Any] = {
        "cores": cfg.cores,
        "memory": cfg.memory,
        "processes": cfg.processes,
        "walltime": cfg.walltime,
        "job_extra_directives": extra,
        "job_script_prologue": cfg.job_script_prologue,
        "worker_extra_args": worker_extra,
    }
    if cfg.queue:
        kw["queue"] = cfg.queue
    if cfg.account:
        kw["account"] = cfg.account
    if cfg.local_directory:
        kw["local_directory"] = f'"{cfg.local_directory}"'  # quoted on the worker command line ($VARS expand)
    import dask
    import dask_jobqueue

    cls = dask_jobqueue.SLURMCluster if cfg.kind == "slurm" else dask_jobqueue.PBSCluster
    with dask.config.set(SCHEDULER_CONFIG):  # the scheduler runs here, in this process
        return cls(**kw), cfg.jobs, max(1, cfg.cores // cfg.processes)


class DaskExecutor:
    """Runs pipeline steps on a Dask client, respecting each step's ``needs``.

    A step task supervises its notebook's kernel (a separate process); at most one step per
    worker runs at a time (:meth:`max_steps`). The units a step hands back (encoders) claim a
    worker's ``cpu`` slot (or ``GPU``), the only resource any task asks for, so a worker's queue
    of waiting tasks never holds one kind behind another.
    """

    def __init__(self, client: Any, cluster: Any = None, threads: int = 0) -> None:
        self.client, self.cluster, self.threads = client, cluster, threads
        os.environ[SCHEDULER_ENV] = client.scheduler.address

    def run_steps(
        self, root: str, plan: list[tuple[Any, Any]], run: Any, html: bool, has_images: bool
    ) -> Iterator[Any]:
        """Submit steps as their needs finish; yield each result as it completes."""
        from distributed import as_completed

        from cbhlib.pipeline.execute import StepResult, _skip_reason

        done: dict[str, Any] = {}
        waiting = list(plan)
        running: dict[Any, str] = {}
        ac = as_completed([])

        def submit_ready() -> Iterator[Any]:
            for step, cfg in list(waiting):
                if any(n not in done for n in step.needs if n in {s.name for s, _ in plan}):
                    continue
                if len(running) >= self.max_steps():
                    return
                waiting.remove((step, cfg))
                skipped = _skip_reason(step, done, has_images)
                if skipped is not None:
                    done[step.name] = skipped
                    yield skipped
                    continue
                fut = self.client.submit(
                    _step_task,
                    self.client.scheduler.address,
                    self.threads,
                    root,
                    step,
                    cfg,
                    run,
                    html,
                    key=f"step-{step.name}",
                    pure=False,
                )
                running[fut] = step.name
                ac.add(fut)

        yield from submit_ready()
        while running:
            fut = next(ac)
            name = running.pop(fut)
            try:
                res = fut.result()
            except Exception as exc:  # e.g. KilledWorker: its worker died more often than Dask retries
                res = StepResult(name, "failed", 0.0, "", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            done[res.name] = res
            yield res
            yield from submit_ready()
            if not running and waiting:
                yield from submit_ready()

    def max_steps(self) -> int:
        """Notebooks run at once: one per worker process (at least one while workers start).

        Kept here, not as a worker resource: a step queued on a worker behind a resource it
        lacks blocked the encoders queued after it, while the pretrain step holding that
        resource waited for those encoders (``cbh run --workers 2`` hung)."""
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def close(self) -> None:
        os.environ.pop(SCHEDULER_ENV, None)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


THREADS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Work stealing moves resource-restricted tasks between workers without moving their resource
# accounting (dask/distributed#4446): on two workers a step's encoders ended "processing" on a
# worker whose `cpu` slot read 12 in use while the other read -10, and `cbh run --workers 2` hung.
# Steps and encoders are few and long, so stealing gains nothing here; schedulers we start run without it.
SCHEDULER_CONFIG = {"distributed.scheduler.work-stealing": False}
# Dask's nanny sets this in every worker to return memory to the OS; it also pins glibc's mmap
# threshold, so each torch temporary is mmapped afresh: training ran 1.7-3x slower in a worker
MALLOC_ENV = "MALLOC_TRIM_THRESHOLD_"


def _step_task(address: str, threads: int, *args: Any) -> Any:
    """A step on a worker: its kernel inherits the scheduler address (so it can hand units
    back) and a thread count that keeps the processes from oversubscribing the cores."""
    from cbhlib.pipeline.execute import execute_step

    os.environ[SCHEDULER_ENV] = address
    os.environ.pop(MALLOC_ENV, None)  # the kernel starts with glibc's adaptive malloc (see make_executor)
    if threads:
        os.environ.update({k: str(threads) for k in THREADS_ENV})
    return execute_step(*args)


def make_executor(
    workers: int = 0,
    scheduler: str | None = None,
    cluster_file: str | None = None,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> DaskExecutor | None:
    """A Dask executor for ``cbh run``; None after a dry run (the job script was printed)."""
    try:
        from distributed import Client
    except ImportError:
        raise CbhError("--workers/--scheduler/--cluster need Dask: pip install -e '.[dask]'") from None
    if cluster_file:
        if not Path(cluster_file).is_file():
            raise ParamsError(cluster_file, "(file)", "an existing cluster YAML", "no such file")
        cluster, jobs, threads = _cluster_from_file(cluster_file)
        if dry_run:
            say(cluster.job_script())
            cluster.close()
            return None
        cluster.scale(jobs=jobs)
        client = Client(cluster)
        if client.dashboard_link:
            say(f"Dask dashboard: {client.dashboard_link}")
        return DaskExecutor(client, cluster, threads=threads)  # each worker process: its share of the job's cores
    elif scheduler:
        client, cluster = connect_scheduler(scheduler), None
    else:
        n = check_workers(workers)
        # per worker: one single-threaded encoder per core ("cpu") at a time, and one notebook
        # (DaskExecutor.max_steps); spare threads let a step that waits on its encoders sit beside them
        t = max(1, (os.cpu_count() or 1) // n)
        cluster = local_cluster(n, t, threads_per_worker=4, resources={"cpu": t, "step": 1, **_local_resources(n)})
        client = Client(cluster)
        say(
            f"Dask: {n} local worker processes, {t} torch thread(s) each (encoders train on one thread each, as "
            f"in a serial run: the same weights; heads on {t}: a serial run with --set threads={t} gives the same "
            "reports bit for bit, another thread count changes the heads' float sums in the last digits)"
        )
        if client.dashboard_link:
            say(f"Dask dashboard: {client.dashboard_link}")
        return DaskExecutor(client, cluster, threads=t)
    if client.dashboard_link:
        say(f"Dask dashboard: {client.dashboard_link}")
    return DaskExecutor(client, cluster)


def check_workers(workers: object, option: str = "--workers") -> int:
    """A number of local worker processes (>= 1); more than the cores here is allowed, with a warning."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ParamsError(option, "workers", "a number of processes >= 1 (0 or no option: serial)", repr(workers))
    cores = os.cpu_count() or 1
    if workers > cores:
        log.warning(
            "%s %d: more processes than the %d cores here; they will share them (slower)", option, workers, cores
        )
    return workers


def connect_scheduler(address: str, timeout: float = 20.0) -> Any:
    """A client of the Dask scheduler at ``address``; one line naming what was found instead
    (nothing listening, no answer, a server that is not a Dask scheduler), never a hang."""
    import socket
    import threading

    from distributed import Client

    m = re.fullmatch(r"(?:(tcp|tls)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})", address.strip())
    if not m or not 0 < int(m.group(3)) < 65536:
        raise ParamsError("--scheduler", "scheduler", "an address such as tcp://host:8786", repr(address))
    host, port = m.group(2).strip("[]"), int(m.group(3))

    def fail(found: str) -> CbhError:
        return CbhError(f"--scheduler {address}: expected a Dask scheduler; found {found}")

    try:
        socket.create_connection((host, port), timeout=min(timeout, 10.0)).close()
    except TimeoutError:
        raise fail(f"no answer to a connection within {min(timeout, 10.0):g} s") from None
    except OSError as exc:
        raise fail(f"nothing listening ({exc.strerror or type(exc).__name__})") from None
    out: dict[str, Any] = {}

    def connect() -> None:
        try:
            out["client"] = Client(address, timeout=f"{timeout:g}s")
        except BaseException as exc:  # reported below, in one line (MemoryError on an HTTP answer)
            out["error"] = exc

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 5)
    if "client" in out:
        return out["client"]
    what = _http_server(host, port)
    if worker.is_alive():
        raise fail(what or f"a server that accepts connections but sent no Dask handshake within {timeout + 5:g} s")
    exc = out.get("error")
    first = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
    raise fail(what or f"a server that did not answer as one ({type(exc).__name__}{': ' + first if first else ''})")


def _http_server(host: str, port: int) -> str:
    """'an HTTP server ...' if one answers at host:port (e.g. the dashboard's port), else ''."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            sock.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            head = sock.recv(16)
    except OSError:
        return ""
    return (
        "an HTTP server (a dashboard? the scheduler listens on its own port, 8786 by default)"
        if head.startswith(b"HTTP/")
        else ""
    )


def local_cluster(n_workers: int, torch_threads: int, **kw: Any) -> Any:
    """A LocalCluster of processes whose workers start with ``torch_threads`` threads and glibc's
    adaptive malloc (Dask's ``MALLOC_TRIM_THRESHOLD_`` left unset), and a scheduler without work
    stealing (:data:`SCHEDULER_CONFIG`)."""
    import dask
    from distributed import LocalCluster

    environ = {MALLOC_ENV: None, **{k: torch_threads for k in THREADS_ENV}}  # None: not set in the workers
    os.environ.pop(MALLOC_ENV, None)  # nor inherited from this process
    spawn = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in environ.items()}
    with dask.config.set({**spawn, **SCHEDULER_CONFIG}):
        return LocalCluster(n_workers=n_workers, processes=True, dashboard_address=":0", **kw)


def _local_resources(n_workers: int) -> dict[str, float]:
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # torch import problems must not stop a CPU run
        gpus = 0
    return {"GPU": 1} if gpus and gpus >= n_workers else {}
