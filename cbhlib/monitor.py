"""``cbh monitor RUN_DIR``: progress of a run from its JSON-lines logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from cbhlib.errors import CbhError
from cbhlib.notebook import read_log


def status_table(run_dir: str | Path) -> tuple[pd.DataFrame, str]:
    """Per (mode, protocol): units, folds seen, latest epoch, best validation loss, time, estimate."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CbhError(f"{run_dir}: no such run folder")
    rows = []
    for path in sorted(run_dir.glob("training_*.log")):
        log = read_log(path)
        if log.empty:
            continue
        for (mode, proto), d in log.groupby(["mode", "protocol"], sort=False):
            last = d.groupby(["fold", "seed"]).tail(1)
            n_units = int(d["n_units"].max()) if "n_units" in d else len(last)
            done = int(last["stopped"].sum() + (last["epoch"] >= last["max_epochs"]).sum())
            remaining_epochs = float(((last["max_epochs"] - last["epoch"]) * (~last["stopped"])).sum())
            per_epoch = float(d["seconds"].mean())
            rows.append({
                "mode": mode, "protocol": proto, "units": f"{min(done, n_units)}/{n_units} done",
                "latest": f"fold {int(d['fold'].iloc[-1])} epoch {int(d['epoch'].iloc[-1])}/{int(d['max_epochs'].iloc[-1])}",
                "best_val_loss": float(last["best_val_loss"].min()),
                "elapsed_s": float(d["seconds"].sum()),
                "remaining_s_max": remaining_epochs * per_epoch,
            })
    steps = []
    plog = run_dir / "pipeline.log"
    if plog.exists():
        for line in plog.read_text().splitlines():
            try:
                steps.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    text = ", ".join(f"{s['step']} {'ok' if s['ok'] else 'FAILED'} ({s['seconds']:.0f} s)" for s in steps)
    pre = read_log(run_dir / "pretrain.log")
    if not pre.empty and "key" in pre:
        last = pre.iloc[-1]
        text += (f"\n  pretraining: {pre['key'].nunique()} encoders logged; latest {last['key']} epoch "
                 f"{int(last['epoch']) + 1}, loss {last['loss']:.4f}, {pre['seconds'].sum():.0f} s so far")
    return pd.DataFrame(rows), text


def monitor(run_dir: str | Path, loop: bool = False, interval: float = 5.0) -> int:
    """Print the status table once, or every ``interval`` seconds with ``loop``."""
    while True:
        table, steps = status_table(run_dir)
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {run_dir}")
        print("  notebooks finished: " + (steps or "none yet"))
        if table.empty:
            print("  no training logs yet")
        else:
            print(table.round(4).to_string(index=False))
        if not loop:
            return 0
        time.sleep(interval)
