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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbhlib.config import read_yaml
from cbhlib.errors import CbhError, ParamsError
from cbhlib.fields import opt, parse_dataclass
from cbhlib.training.cluster import SCHEDULER_ENV, worker_resources

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
    job_script_prologue: list[str] = opt([], "shell lines before the worker starts (e.g. module load, venv activate)")
    local_directory: str = opt("", "worker scratch folder on the compute nodes")


def _cluster_from_file(path: str) -> Any:
    cfg: ClusterFile = parse_dataclass(ClusterFile, read_yaml(path), path)
    extra = list(cfg.job_extra_directives)
    slots = ["cpu=1", "step=1"]  # per worker process: one encoder and one notebook at a time, each on all its cores
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
        kw["local_directory"] = cfg.local_directory
    import dask_jobqueue

    cls = dask_jobqueue.SLURMCluster if cfg.kind == "slurm" else dask_jobqueue.PBSCluster
    return cls(**kw), cfg.jobs, max(1, cfg.cores // cfg.processes)


class DaskExecutor:
    """Runs pipeline steps on a Dask client, respecting each step's ``needs``.

    A step task supervises its notebook's kernel (a separate process) and holds the worker's
    ``step`` slot; the units it hands back (encoders) claim the worker's ``cpu`` slot (or ``GPU``).
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
        # one notebook per worker at a time where workers declare a "step" slot (local clusters do), so
        # kernels never outnumber the torch threads the worker was sized for
        slots = {"step": 1} if "step" in worker_resources(self.client) else None
        running: dict[Any, str] = {}
        ac = as_completed([])

        def submit_ready() -> Iterator[Any]:
            for step, cfg in list(waiting):
                if any(n not in done for n in step.needs if n in {s.name for s, _ in plan}):
                    continue
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
                    resources=slots,
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

    def close(self) -> None:
        os.environ.pop(SCHEDULER_ENV, None)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


THREADS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
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
        client, cluster = Client(scheduler, timeout="20s"), None
    else:
        n = max(1, workers)
        # per worker: one notebook ("step") and one encoder ("cpu") at a time; spare threads let a step
        # that waits on its encoders (the pretrain step) sit beside them
        t = max(1, (os.cpu_count() or 1) // n)
        cluster = local_cluster(n, t, threads_per_worker=4, resources={"cpu": 1, "step": 1, **_local_resources(n)})
        client = Client(cluster)
        say(
            f"Dask: {n} local worker processes, {t} torch thread(s) each (reports are bit-identical to a serial "
            f"run with --set threads={t}; another thread count can change float sums in the last digits)"
        )
        if client.dashboard_link:
            say(f"Dask dashboard: {client.dashboard_link}")
        return DaskExecutor(client, cluster, threads=t)
    if client.dashboard_link:
        say(f"Dask dashboard: {client.dashboard_link}")
    return DaskExecutor(client, cluster)


def local_cluster(n_workers: int, torch_threads: int, **kw: Any) -> Any:
    """A LocalCluster of processes whose workers start with ``torch_threads`` threads and glibc's
    adaptive malloc (Dask's ``MALLOC_TRIM_THRESHOLD_`` left unset)."""
    import dask
    from distributed import LocalCluster

    environ = {MALLOC_ENV: None, **{k: torch_threads for k in THREADS_ENV}}  # None: not set in the workers
    os.environ.pop(MALLOC_ENV, None)  # nor inherited from this process
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in environ.items()}):
        return LocalCluster(n_workers=n_workers, processes=True, dashboard_address=":0", **kw)


def _local_resources(n_workers: int) -> dict[str, float]:
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # torch import problems must not stop a CPU run
        gpus = 0
    return {"GPU": 1} if gpus and gpus >= n_workers else {}
