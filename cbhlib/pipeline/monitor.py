"""``cbh monitor RUN_DIR``: progress of a run from its logs (JSON lines, written live); and the
:class:`Watcher` thread that prints the same progress during ``cbh run`` (the notebooks run headless)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType

import pandas as pd

from cbhlib.errors import CbhError
from cbhlib.store.rundir import RUN_NAME, RunDir
from cbhlib.training.loops import read_jsonl


def training_status(run: RunDir) -> pd.DataFrame:
    """Per (model, protocol): units done of total, latest fold/epoch, best validation loss, time."""
    rows = []
    for path in sorted(run.logs.glob("training_*.log")) if run.logs.is_dir() else []:
        log = pd.DataFrame(read_jsonl(path))
        if log.empty or "model" not in log:
            continue
        for (model, proto), d in log.groupby(["model", "protocol"], sort=False):
            last = d.groupby(["fold", "seed"]).tail(1)
            n_units = max(int(d["n_units"].max()), len(last))
            done = int((last["stopped"] | (last["epoch"] >= last["max_epochs"])).sum())
            remaining = float(((last["max_epochs"] - last["epoch"]) * (~last["stopped"])).sum())
            remaining += max(0, n_units - len(last)) * float(d["max_epochs"].iloc[-1])  # pending units
            rows.append(
                {
                    "model": model,
                    "protocol": proto,
                    "units_done": min(done, n_units),
                    "running": len(last) - min(done, n_units),
                    "pending": max(0, n_units - len(last)),
                    "units": n_units,
                    "latest": f"{_held_out(d.iloc[-1])}, epoch {int(d['epoch'].iloc[-1])}/"
                    f"{int(d['max_epochs'].iloc[-1])}",
                    "best_val_loss": float(last["best_val_loss"].min()),
                    "elapsed_s": float(d["seconds"].sum()),
                    "remaining_s_max": remaining * float(d["seconds"].mean()),
                }
            )
    return pd.DataFrame(rows)


def _held_out(rec: pd.Series) -> str:
    """What a log record's unit is tested on, in words: "30Oct24 held out" (LOFO), "30Oct24 held
    out, nested" (a nested unit, which also leaves out one training flight), "test fold random-3"
    (other protocols); the fold number where the log names no test set."""
    test, proto = rec.get("test_flight"), str(rec.get("protocol", ""))
    if not (isinstance(test, str) and test):
        return f"fold {int(rec['fold'])}"
    if proto == "lofo":
        return f"{test} held out"
    return f"{test} held out, nested" if proto.endswith("_nested") else f"test fold {test}"


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``1.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def eta(done: int, total: int, elapsed: float) -> str:
    """``about 3 min left`` from the mean time of the finished parts."""
    if done <= 0 or total <= done:
        return "" if total <= done else "no estimate yet"
    return f"about {duration(elapsed / done * (total - done))} left"


def _stamp(text: str) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except (TypeError, ValueError):
        return None


def step_history(run: RunDir) -> dict[str, tuple[float, str]]:
    """Each step's latest finished duration (seconds) and where: this run folder first, else a sibling run."""
    own: dict[str, tuple[float, str]] = {}
    other: dict[str, tuple[float, str]] = {}
    parent = run.root.parent
    siblings = sorted(p for p in parent.iterdir() if p.is_dir() and p != run.root) if parent.is_dir() else []
    for folder in [*siblings, run.root]:
        into, where = (own, "last time") if folder == run.root else (other, f"in run {folder.name}")
        for rec in read_jsonl(RunDir(folder).pipeline_log):
            if rec.get("status") == "ok":
                into[str(rec["name"])] = (float(rec.get("seconds", 0.0)), where)
    return {**other, **own}


def running_steps(run: RunDir, now: float | None = None) -> list[str]:
    """``compare running 2 min; about 7 min left (9 min last time)`` for every step now running."""
    latest = {s["name"]: s for s in read_jsonl(run.pipeline_log)}
    history, now = step_history(run), now or time.time()
    lines = []
    for name, rec in latest.items():
        if rec.get("status") != "running":
            continue
        start = _stamp(rec.get("time", ""))
        elapsed = max(0.0, now - start) if start else 0.0
        took = history.get(name)
        if took is None:
            left = "no earlier run of this step to estimate from"
        elif elapsed < took[0]:
            left = f"about {duration(took[0] - elapsed)} left ({duration(took[0])} {took[1]})"
        else:
            left = f"longer than the {duration(took[0])} it took {took[1]}"
        lines.append(f"{name} running {duration(elapsed)}; {left}")
    return lines


def pretrain_status(run: RunDir) -> str:
    """One line: encoders done / running / pending (across processes), the latest epoch and loss."""
    log = pd.DataFrame(read_jsonl(run.pretrain_log))
    plan = pd.DataFrame(read_jsonl(run.logs / "pretrain_plan.jsonl")).drop_duplicates()
    if log.empty or "key" not in log:
        return f"pretraining: 0 of {len(plan)} encoders done" if len(plan) else ""
    if "settings" not in log:
        log["settings"] = ""
    ids = [tuple(r) for r in log[["settings", "key", "seed"]].drop_duplicates().itertuples(index=False)]
    planned = [tuple(r) for r in plan[["settings", "key", "seed"]].itertuples(index=False)] if len(plan) else ids
    planned += [i for i in ids if i not in planned]
    done = {i for i in planned if run.encoder(str(i[0]), str(i[1]), int(i[2])).exists()}
    running = [i for i in ids if i not in done]
    workers = log[log[["settings", "key", "seed"]].apply(tuple, axis=1).isin(running)].get("worker")
    where = f" on {workers.nunique()} process(es)" if workers is not None and running else ""
    last = log.iloc[-1]
    epochs_done = len(log)  # one log line per epoch of each encoder
    epochs_total = epochs_done + sum(int(last["epochs"]) for i in planned if i not in done and i not in ids)
    epochs_total += sum(
        int(d["epochs"].iloc[-1]) - int(d["epoch"].iloc[-1])
        for i, d in log.groupby(["settings", "key", "seed"])
        if i in running
    )
    left = eta(epochs_done, epochs_total, float(log["seconds"].sum())) if "seconds" in log else ""
    return (
        f"pretraining: {len(done)} of {len(planned)} encoders done, {len(running)} running{where}, "
        f"{len(planned) - len(done) - len(running)} pending; latest {last['key']} seed {int(last['seed'])} "
        f"epoch {int(last['epoch'])}/{int(last['epochs'])}, loss {last['loss']:.4f}" + (f"; {left}" if left else "")
    )


def steps_status(run: RunDir) -> str:
    """Each notebook's latest state: ok / failed / skipped (with seconds) or running."""
    latest = {s["name"]: s for s in read_jsonl(run.pipeline_log)}
    return ", ".join(
        f"{s['name']} running" if s["status"] == "running" else f"{s['name']} {s['status']} ({s['seconds']:.0f} s)"
        for s in latest.values()
    )


def resolve_run(run_dir: str | Path) -> RunDir:
    """The run folder ``run_dir``, or the run of that name (as cbh runs and cbh compare take it)."""
    run = RunDir(run_dir)
    if not run.root.is_dir() and RUN_NAME.match(str(run_dir)) and RunDir.named(str(run_dir)).root.is_dir():
        run = RunDir.named(str(run_dir))
    if not run.root.is_dir():
        raise CbhError(f"{run_dir}: expected a run folder or a run's name (cbh runs lists them); found no such folder")
    return run


def status_text(run_dir: str | Path) -> str:
    """The status of a run as text: finished notebooks, pretraining, training units."""
    run = resolve_run(run_dir)
    lines = [f"[{time.strftime('%H:%M:%S')}] {run.root}", "  notebooks: " + (steps_status(run) or "none started")]
    lines += [f"  {line}" for line in running_steps(run)]
    pre = pretrain_status(run)
    if pre:
        lines.append("  " + pre)
    table = training_status(run)
    lines.append("  no training logs yet" if table.empty else table.round(4).to_string(index=False))
    return "\n".join(lines)


class Watcher:
    """``with Watcher(run_root, say):`` prints progress lines every ``interval`` s (``say=None``: silent)."""

    def __init__(
        self, run_root: str | Path, say: Callable[[str], None] | None, interval: float = 3.0, every: float = 30.0
    ) -> None:
        self.run, self.say, self.interval, self.every = RunDir(run_root), say, interval, every
        self._stop = threading.Event()
        self._seen: dict[str, str] = {}
        self._said_steps = 0.0  # when the running steps' time-left line was last printed
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Print what changed since the last poll."""
        if self.say is None:
            return
        pre = pretrain_status(self.run)
        if pre and self._seen.get("pretrain") != pre:
            self._seen["pretrain"] = pre
            self.say(f"  ... {pre}")
        now = time.monotonic()
        if now - self._said_steps >= self.every:  # every step over a few seconds: elapsed and time left
            lines = running_steps(self.run)
            for line in lines:
                self.say(f"  ... {line}")
            self._said_steps = now if lines else self._said_steps
        table = training_status(self.run)
        for r in table.itertuples():
            key = f"{r.model}/{r.protocol}"
            left = f"; at most {duration(r.remaining_s_max)} left" if r.units_done < r.units else ""
            line = (
                f"  ... {key}: {r.units_done}/{r.units} units done, {r.running} running, {r.pending} pending; "
                f"{r.latest}{left}"
            )
            if self._seen.get(key) != line:
                self._seen[key] = line
                self.say(line)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # a half-written log line: try again next time
                continue

    def __enter__(self) -> Watcher:
        if self.say is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
