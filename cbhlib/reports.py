"""Run reports: the seed's JSON keys plus provenance, predictions CSV, atomic writes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import cbhlib
from cbhlib.metrics import aggregate

FOLD_KEYS = ("fold_id", "test_flight", "n_train", "n_test", "r2", "mae_km", "rmse_km", "epoch_trained")


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(_clean(obj), indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)


def git_commit() -> str | None:
    """The source tree's git commit, when it is a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(cbhlib.__file__).parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(params: dict[str, Any], campaign_sha: str, seed: int | list[int]) -> dict[str, Any]:
    """Where a result came from."""
    return {
        "parameters": params,
        "campaign_sha256": campaign_sha,
        "package_version": cbhlib.__version__,
        "seed": seed,
        "git_commit": git_commit(),
    }


def build_report(model_variant: str, description: str, protocol: str, units: list[dict[str, Any]],
                 prov: dict[str, Any]) -> dict[str, Any]:
    """A report in the seed's schema from per-unit results.

    Args:
        units: dicts with FOLD_KEYS plus ``seed``, ``test_idx`` and ``pred`` / ``true``.
    """
    units = sorted(units, key=lambda u: (u["fold_id"], u.get("seed", 0)))
    fold_results = [{k: u.get(k) for k in (*FOLD_KEYS, "seed", "n_val")} for u in units]
    y_true = np.concatenate([np.asarray(u["true"], float) for u in units]) if units else np.array([])
    y_pred = np.concatenate([np.asarray(u["pred"], float) for u in units]) if units else np.array([])
    return {
        "model_variant": model_variant,
        "description": description,
        "validation_protocol": protocol,
        "fold_results": fold_results,
        "aggregate_metrics": aggregate(fold_results, y_true, y_pred),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": prov,
    }


def predictions_frame(units: list[dict[str, Any]], flight_names: list[str], flight: np.ndarray) -> pd.DataFrame:
    """One row per held-out prediction: sample, flight, fold, seed, true, predicted."""
    rows = []
    for u in units:
        idx = np.asarray(u["test_idx"], int)
        rows.append(pd.DataFrame({
            "sample": idx,
            "flight": [flight_names[k] for k in flight[idx]],
            "fold": u["fold_id"],
            "seed": u.get("seed", 0),
            "true_km": np.asarray(u["true"], float),
            "pred_km": np.asarray(u["pred"], float),
        }))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["sample", "flight", "fold", "seed", "true_km", "pred_km"])


def write_predictions(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    return atomic_write_text(path, frame.to_csv(index=False))
