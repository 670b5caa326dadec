"""Running the pipeline's notebooks: papermill with plain parameters only, then HTML.

Every step's config is resolved and type-checked before the first notebook starts.
Parameters reach papermill through :class:`SafeTranslator`, which writes each value as
its Python ``repr`` and refuses anything but str, int, float, bool, None, lists and
dicts: no value can become code in the injected cell. A failing notebook keeps its
executed copy (papermill marks the failing cell) and the steps that need it are skipped.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from cbhlib.atomic import atomic_write_text
from cbhlib.config import Config, notebook_values
from cbhlib.errors import CbhError, ParamsError
from cbhlib.fields import check_plain
from cbhlib.pipeline.nbtools import declared, keys_taken
from cbhlib.pipeline.spec import NOTEBOOKS, Pipeline, Step, check_overrides, select, step_config
from cbhlib.store.lock import RunLock
from cbhlib.store.rundir import RunDir
from cbhlib.training.loops import read_jsonl

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """How a step ended: ``ok``, ``skipped`` (with a reason) or ``failed`` (with the error)."""

    name: str
    status: str
    seconds: float
    notebook: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def safe_translator() -> type:
    """A papermill Python translator that writes plain values with ``repr`` and refuses others."""
    from papermill.translators import PythonTranslator

    class SafeTranslator(PythonTranslator):
        @classmethod
        def translate(cls, val: Any) -> str:
            check_plain("notebook parameters", "value", val)
            if isinstance(val, dict):
                return "{" + ", ".join(f"{k!r}: {cls.translate(v)}" for k, v in val.items()) + "}"
            if isinstance(val, (list, tuple)):
                return "[" + ", ".join(cls.translate(v) for v in val) + "]"
            return repr(val)

        @classmethod
        def codify(cls, parameters: dict[str, Any], comment: str = "Parameters") -> str:
            return f"# {comment}\n" + "".join(f"{name} = {cls.translate(v)}\n" for name, v in parameters.items())

    return SafeTranslator


def ipc_kernel_manager() -> type:
    """A kernel manager on IPC sockets in the temp folder (no unencrypted-TCP warning, no open port)."""
    import tempfile
    import uuid

    from jupyter_client.manager import KernelManager

    class IPCKernelManager(KernelManager):
        def __init__(self, **kw: Any) -> None:
            if os.name == "posix":
                kw.setdefault("transport", "ipc")
                kw.setdefault("ip", os.path.join(tempfile.gettempdir(), f"cbh-kernel-{uuid.uuid4().hex[:12]}"))
            super().__init__(**kw)

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client interrupts before every shutdown request; an idle kernel then logs
            # "[IPKernelApp] ERROR | KeyboardInterrupt" to the terminal. A finished notebook needs no interrupt
            # (a busy one is still killed after the shutdown wait).
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

    return IPCKernelManager


def register_safe_translator() -> None:
    from papermill.translators import papermill_translators

    papermill_translators.register("python", safe_translator())


def _error_line(exc: Exception) -> str:
    cell = getattr(exc, "exec_count", None) or getattr(exc, "cell_index", None)
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    evalue = str(evalue).strip().splitlines()[-1] if str(evalue).strip() else ""
    return f"cell {cell} raised {ename}: {evalue}" if cell is not None else f"{ename}: {evalue}"


def execute_step(root: str, step: Step, cfg: Config, run: RunDir, html: bool = True) -> StepResult:
    """Execute one step's notebook into the run folder (and render it). Picklable for workers."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from cbhlib.pipeline.render import render_html

    register_safe_translator()
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    base = Path(root)
    out = run.notebook(step.name)
    (base / out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(base / run.step_config(step.name), yaml.safe_dump(cfg.to_nested(), sort_keys=False))
    params = notebook_values(cfg, declared(base / step.notebook))
    _log_step(base / run.root, StepResult(step.name, "running", 0.0, out.as_posix()))
    t0 = time.perf_counter()
    error = ""
    try:
        papermill.execute_notebook(
            str(base / step.notebook),
            str(base / out),
            parameters=params,
            kernel_name="python3",
            progress_bar=False,
            cwd=str(base),
            log_output=False,
            kernel_manager_class=ipc_kernel_manager(),
        )
    except PapermillExecutionError as exc:
        error = _error_line(exc)
    except Exception as exc:  # the kernel died, the notebook is unreadable, ...
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    seconds = time.perf_counter() - t0
    if html and (base / out).exists():
        pages = (base / run.html_page(step.name), base / run.html_page(step.name, report=True))
        render_html(base / out, *pages, step=step.name, run=run.name)
    return StepResult(step.name, "failed" if error else "ok", seconds, out.as_posix(), error)


def _log_step(run_root: Path, res: StepResult) -> None:
    path = run_root / "logs" / "pipeline.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps({**asdict(res), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")


RESULT_NEUTRAL = ("progress", "threads", "device", "run_dir", "figures.dpi", "figures.formats")  # not results


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_changes(run_root: Path, configs: dict[str, Config], taken: dict[str, set[str]] | None = None) -> list[str]:
    """``key (old -> new)`` for every setting that differs from the one a step of this run folder last ran with.

    Args:
        taken: per step, the dotted keys its notebook declares; a setting a notebook does not take
            cannot change its results (its own record of the run keeps the default there). Default: all.
    """
    run, changes = RunDir(run_root), {}
    for name, cfg in configs.items():
        path = run.step_config(name)
        try:
            old = _flat(yaml.safe_load(path.read_text())) if path.is_file() else {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        new = _flat(cfg.to_nested())
        keys = old.keys() & new.keys() & (taken[name] if taken and name in taken else new.keys())
        for key in sorted(keys):
            if key not in RESULT_NEUTRAL and old[key] != new[key]:
                changes.setdefault(key, f"{key} ({old[key]!r} -> {new[key]!r})")
    return list(changes.values())


def check_exists(pipe: Pipeline, step: Step, root: Path) -> None:
    """Refuse a step whose notebook is not there, naming the closest one (before any step runs)."""
    if (root / step.notebook).is_file():
        return
    known = sorted(p.relative_to(root).as_posix() for p in (root / NOTEBOOKS).glob("*.ipynb"))
    close = difflib.get_close_matches(step.notebook, known, n=1)
    raise ParamsError(
        pipe.source,
        f"steps ({step.name}).notebook",
        "an existing notebook",
        f"'{step.notebook}': no such file" + (f" (did you mean '{close[0]}'?)" if close else ""),
    )


def campaign_change(run_root: Path, campaign: Path) -> list[str]:
    """``campaign file <path> (sha256 old -> new)`` where the file differs from the one the run folder's
    summary recorded at the same path (its size and time first: the file is hashed only when they
    moved); else [] (also for another path: the ``campaign`` setting's change says so)."""
    from cbhlib.pipeline.summary import campaign_file

    try:
        summary = json.loads(RunDir(run_root).summary.read_text())
        old = summary.get("campaign_file")
        same = Path(str(summary.get("campaign", ""))).resolve() == campaign.resolve()
        st = campaign.stat()
    except (OSError, ValueError, AttributeError, TypeError):  # no summary, a damaged one, or no campaign
        return []
    if not same or not isinstance(old, dict) or not isinstance(old.get("sha256"), str):
        return []  # another file, or a summary from before the file was recorded
    if (old.get("bytes"), old.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
        return []
    new = campaign_file(campaign).get("sha256")  # hashed only now, when the size or time moved
    if not new or new == old["sha256"]:
        return []
    return [f"the campaign file {campaign} changed since (sha256 {old['sha256'][:12]}... -> {new[:12]}...)"]


def check_taken(pipe: Pipeline, sets: dict[str, Any], takes: dict[str, set[str] | None]) -> None:
    """Refuse a ``--set`` key that no notebook of the pipeline takes (``takes``: per step, from
    :func:`taken_keys`): it would be ignored without a word (``--set train.epochs=3`` on the shift
    sweep's pipeline). Unreadable notebooks: no check."""
    if not sets or any(t is None for t in takes.values()):
        return
    union = set().union(*takes.values())  # type: ignore[arg-type]
    for key in sets:
        if key not in union:
            names = ", ".join(s.name for s in pipe.steps)
            raise ParamsError(
                "--set",
                key,
                f"a setting a notebook of {pipe.source} takes (its steps: {names})",
                "one none of them takes, so it would be ignored"
                + (" (a sweep's points take theirs from the sweep file's set)" if "sweep.file" in union else ""),
            )


def taken_keys(step: Step, root: Path) -> set[str] | None:
    """Dotted keys of the settings the step's notebook declares (None where it cannot be read: all;
    a missing notebook fails when it runs)."""
    return keys_taken(root / step.notebook)


def plan_steps(
    pipe: Pipeline,
    only: list[str] | None,
    overrides: dict[str, Any] | None,
    force: bool = False,
    root: Path = Path("."),
    warn: bool = True,
) -> dict[str, Config]:
    """Every selected step's checked config; a run folder made with other settings is refused unless ``force``."""
    run = RunDir.named(pipe.run_name)
    sets = check_overrides(overrides or {})
    steps = select(pipe, only)
    takes = {s.name: taken_keys(s, root) for s in pipe.steps}  # each notebook read once
    check_taken(pipe, sets, takes)
    configs = {s.name: step_config(pipe, s, run, sets) for s in steps}  # every error before a notebook
    ran = [s for s in steps if (root / run.step_config(s.name)).is_file()]  # only a rerun compares
    taken = {s.name: keys for s in ran if (keys := takes[s.name]) is not None}
    changes = settings_changes(root / run.root, configs, taken)
    if ran and not pipe.synthetic_preset:  # a pipeline's own synthetic campaign is refreshed by design
        changes += campaign_change(root / run.root, root / pipe.campaign)
    if changes and not force:
        more = f" and {len(changes) - 4} more" if len(changes) > 4 else ""
        raise CbhError(
            f"{run.root}: expected the settings this run was made with (its results would be replaced); found "
            f"{', '.join(changes[:4])}{more}: choose another --run-name to keep both, or pass --force to replace them"
        )
    if changes and warn:
        log.warning("%s: --force: replacing results made with other settings: %s", run.root, ", ".join(changes))
    return configs


def run_pipeline(
    pipe: Pipeline,
    only: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    html: bool = True,
    out: TextIO | None = sys.stdout,
    root: str | Path = ".",
    has_images: bool = True,
    executor: Any = None,
    force: bool = False,
) -> list[StepResult]:
    """Execute the pipeline's notebooks (serially, or on ``executor``), then write the index.

    Args:
        force: run even where the run folder's steps ran with other settings (see :func:`plan_steps`).

    Returns:
        Every selected step's result, in pipeline order.
    """
    from cbhlib.pipeline.monitor import Watcher
    from cbhlib.pipeline.summary import write_index, write_summary

    root = Path(root)
    run = RunDir.named(pipe.run_name)
    steps = select(pipe, only)
    configs = plan_steps(pipe, only, overrides, force, root)
    for s in steps:
        check_exists(pipe, s, root)  # a misspelled notebook: one line before any step runs

    def say(msg: str) -> None:
        """Progress lines go to the stream the caller chose (the CLI: stdout); None: silent."""
        if out is not None:
            out.write(msg + "\n")
            out.flush()

    results: dict[str, StepResult] = {}
    with RunLock(root / run.lock), Watcher(root / run.root, say if out is not None else None):
        plan = [(s, configs[s.name]) for s in steps]
        if executor is None:
            for step, cfg in plan:
                res = _skip_reason(step, results, has_images) or execute_step(str(root), step, cfg, run, html)
                results[step.name] = res
                _log_step(root / run.root, res)
                say(_line(res))
        else:
            for res in executor.run_steps(str(root), plan, run, html, has_images):
                results[res.name] = res
                _log_step(root / run.root, res)
                say(_line(res))
        shown = with_earlier_steps(root, run, pipe, results)  # after --only: the other steps' notebooks stay listed
        if html:
            write_index(root / run.root, pipe, shown, root)  # writes summary.json too
        else:
            write_summary(root / run.root, root / pipe.campaign, shown)
    return [results[s.name] for s in steps]


def with_earlier_steps(root: Path, run: RunDir, pipe: Pipeline, results: dict[str, StepResult]) -> list[StepResult]:
    """Every step of the run folder, in pipeline order: this call's results, and for the steps an
    earlier call ran (``cbh run --only`` runs some), their last finished record in the pipeline log,
    where their notebook is still there."""
    last = {r["name"]: r for r in read_jsonl(root / run.pipeline_log) if r.get("status") != "running"}
    out = []
    for step in pipe.steps:
        rec = last.get(step.name)
        if step.name in results:
            out.append(results[step.name])
        elif rec is not None and (root / str(rec.get("notebook", ""))).is_file():
            out.append(
                StepResult(step.name, rec["status"], float(rec["seconds"]), rec["notebook"], rec.get("error", ""))
            )
    return out


def _skip_reason(step: Step, done: dict[str, StepResult], has_images: bool) -> StepResult | None:
    if step.needs_images and not has_images:
        return StepResult(step.name, "skipped", 0.0, "", "the campaign has no images")
    failed = [n for n in step.needs if n in done and done[n].status == "failed"]
    if failed:
        return StepResult(step.name, "skipped", 0.0, "", f"needs {', '.join(failed)}, which failed")
    return None


def _line(res: StepResult) -> str:
    if res.status == "ok":
        return f"[{res.name}] ok ({res.seconds:.1f} s) -> {res.notebook}"
    if res.status == "skipped":
        return f"[{res.name}] skipped: {res.error}"
    return f"[{res.name}] FAILED after {res.seconds:.1f} s: {res.error} (see {res.notebook})"


def raise_on_failure(results: list[StepResult]) -> None:
    """One error naming every failed notebook and its failing cell."""
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise CbhError("notebooks failed: " + "; ".join(f"{r.name} ({r.notebook}): {r.error}" for r in failed))
