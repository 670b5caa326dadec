"""Small helpers that keep notebooks thin: tables from reports, logs, the environment."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import pandas as pd


def read_log(path: str | Path | None) -> pd.DataFrame:
    """A JSON-lines training log as a frame (empty frame if missing)."""
    if path is None or not Path(path).exists():
        return pd.DataFrame(columns=["mode", "protocol", "fold", "seed", "epoch", "train_loss", "val_loss"])
    rows = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
    return pd.DataFrame(rows)


def fold_table(report: dict[str, Any]) -> pd.DataFrame:
    """Per-fold metrics of a report beside its climatology baseline (metres for errors)."""
    df = pd.DataFrame(report["fold_results"])
    clim = pd.DataFrame(report.get("climatology_fold_results", []))
    cols = ["fold_id", "test_flight", "seed", "n_train", "n_val", "n_test", "epoch_trained", "r2", "mae_km", "rmse_km"]
    df = df[[c for c in cols if c in df]]
    df["mae_m"], df["rmse_m"] = df.pop("mae_km") * 1000, df.pop("rmse_km") * 1000
    if len(clim):
        df = df.merge(clim.rename(columns={"r2": "clim_r2", "mae_km": "clim_mae_km", "rmse_km": "clim_rmse_km"})
                      [["fold_id", "clim_r2", "clim_mae_km"]], on="fold_id", how="left")
        df["clim_mae_m"] = df.pop("clim_mae_km") * 1000
    return df


def protocol_table(run: Any) -> pd.DataFrame:
    """One row per protocol: mean of fold R2 (seed style), pooled R2, MAE (m), climatology pooled R2."""
    rows = []
    for proto, rep in run.reports.items():
        a, c = rep["aggregate_metrics"], rep.get("climatology_aggregate", {})
        rows.append({"protocol": proto, "mean_r2": a["mean_r2"], "std_r2": a["std_r2"], "pooled_r2": a.get("pooled_r2"),
                     "mean_mae_m": a["mean_mae_km"] * 1000, "pooled_rmse_m": (a.get("pooled_rmse_km") or 0) * 1000,
                     "climatology_pooled_r2": c.get("pooled_r2"), "climatology_mean_mae_m": (c.get("mean_mae_km") or 0) * 1000})
    return pd.DataFrame(rows)


def environment_report() -> None:
    """Print the versions that produced this notebook's outputs."""
    import h5py
    import numpy as np
    import sklearn
    import torch

    import cbhlib

    print(f"python {sys.version.split()[0]} on {platform.platform()}")
    for name, mod in (("cbhlib", cbhlib), ("numpy", np), ("torch", torch), ("h5py", h5py), ("scikit-learn", sklearn),
                      ("pandas", pd)):
        print(f"  {name:13s} {getattr(mod, '__version__', '?')}")
    print(f"  torch threads {torch.get_num_threads()}, cuda available: {torch.cuda.is_available()}")
