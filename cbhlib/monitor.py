"""``cbh monitor RUN_DIR``: progress of a run from its logs (JSON lines, written live)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from cbhlib.errors import CbhError
from cbhlib.loops import read_jsonl
from cbhlib.rundir import RunDir


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
            rows.append({"model": model, "protocol": proto, "units_done": min(done, n_units), "units": n_units,
                         "latest": f"fold {int(d['fold'].iloc[-1])} epoch {int(d['epoch'].iloc[-1])}/"
                                   f"{int(d['max_epochs'].iloc[-1])}",
                         "best_val_loss": float(last["best_val_loss"].min()), "elapsed_s": float(d["seconds"].sum()),
                         "remaining_s_max": remaining * float(d["seconds"].mean())})
    return pd.DataFrame(rows)


def pretrain_status(run: RunDir) -> str:
    """One line: encoders logged, the latest one's epoch and loss, time so far."""
    log = pd.DataFrame(read_jsonl(run.pretrain_log))
    if log.empty or "key" not in log:
        return ""
    last = log.iloc[-1]
    n = log.groupby(["key", "seed"]).ngroups
    return (f"pretraining: {n} encoders logged; latest {last['key']} seed {int(last['seed'])} epoch "
            f"{int(last['epoch'])}/{int(last['epochs'])}, loss {last['loss']:.4f}, {log['seconds'].sum():.0f} s so far")


def steps_status(run: RunDir) -> str:
    steps = read_jsonl(run.pipeline_log)
    return ", ".join(f"{s['name']} {s['status']} ({s['seconds']:.0f} s)" for s in steps)


def status_text(run_dir: str | Path) -> str:
    """The status of a run as text: finished notebooks, pretraining, training units."""
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise CbhError(f"{run_dir}: expected a run folder; found no such folder")
    lines = [f"[{time.strftime('%H:%M:%S')}] {run.root}", "  notebooks finished: " + (steps_status(run) or "none yet")]
    pre = pretrain_status(run)
    if pre:
        lines.append("  " + pre)
    table = training_status(run)
    lines.append("  no training logs yet" if table.empty else table.round(4).to_string(index=False))
    return "\n".join(lines)
