"""Reports: the seed's JSON keys, seed spread on every aggregate, provenance; tidy predictions.

Per seed, a model's folds give the seed's aggregates (mean +- std of fold metrics, and
metrics pooled over all held-out predictions); the report's ``aggregate_metrics`` is the
mean of those over seeds, and ``seed_spread`` holds each headline metric's mean, sd
(ddof 1) and number of seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import cbhlib
from cbhlib.atomic import atomic_write_bytes, atomic_write_text
from cbhlib.evaluation.metrics import aggregate, regression_metrics
from cbhlib.models.fusion import HeadConfig
from cbhlib.store.units import Unit, UnitResult, UnitStore, plain

HEADLINE = ("pooled_mae_km", "mean_mae_km", "mean_r2", "pooled_r2", "pooled_rmse_km", "pooled_bias_km")
PREDICTION_COLUMNS = [
    "model",
    "protocol",
    "seed",
    "fold",
    "flight",
    "sample",
    "time_utc",
    "lat",
    "lon",
    "truth_km",
    "pred_km",
]


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """JSON (NaN/inf as null) written atomically."""
    return atomic_write_text(path, json.dumps(plain(obj), indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)


def git_commit() -> str | None:
    """The source tree's git commit, when it is a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(cbhlib.__file__).parent
        )
        return (out.stdout.strip() or None) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(settings: dict[str, Any], campaign_sha: str, seeds: list[int]) -> dict[str, Any]:
    """Where a result came from."""
    return {
        "parameters": settings,
        "campaign_sha256": campaign_sha,
        "package_version": cbhlib.__version__,
        "seeds": list(seeds),
        "git_commit": git_commit(),
    }


def seed_aggregates(units: list[UnitResult]) -> dict[int, dict[str, Any]]:
    """Per seed: the aggregate of its folds (seed's mean of folds and pooled metrics)."""
    out = {}
    for seed in sorted({u.seed for u in units}):
        us = sorted((u for u in units if u.seed == seed), key=lambda u: u.fold_id)
        y = np.concatenate([u.true for u in us]) if us else np.array([])
        p = np.concatenate([u.pred for u in us]) if us else np.array([])
        out[seed] = aggregate([u.fold_row() for u in us], y, p)
    return out


def spread(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean, sd (ddof 1; 0 for one value) and count of the defined values."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], float)
    if not len(v):
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def build_report(
    model: str,
    description: str,
    protocol: str,
    protocol_label: str,
    units: list[UnitResult],
    prov: dict[str, Any],
    deterministic: bool = False,
) -> dict[str, Any]:
    """A report in the seed's schema (``fold_results``, ``aggregate_metrics``...) plus seed spread."""
    units = sorted(units, key=lambda u: (u.fold_id, u.seed))
    per_seed = seed_aggregates(units)
    keys = sorted({k for a in per_seed.values() for k in a})
    agg = {k: spread([a.get(k) for a in per_seed.values()])["mean"] for k in keys}
    return {
        "model_variant": model,
        "description": description,
        "protocol": protocol,
        "validation_protocol": protocol_label,
        "fold_results": [u.fold_row() for u in units],
        "aggregate_metrics": agg,
        "seed_spread": {k: spread([a.get(k) for a in per_seed.values()]) for k in HEADLINE},
        "per_seed": {str(s): a for s, a in per_seed.items()},
        "n_seeds": len(per_seed),
        "deterministic": deterministic,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "provenance": prov,
    }


def predictions_frame(units: list[UnitResult], camp: Any) -> pd.DataFrame:
    """One row per held-out prediction of these units, with time and position (tidy)."""
    rows = []
    for u in units:
        idx = np.asarray(u.test_idx, int)
        rows.append(
            pd.DataFrame(
                {
                    "model": u.model,
                    "protocol": u.protocol,
                    "seed": u.seed,
                    "fold": u.fold_id,
                    "flight": [camp.flight_names[k] for k in camp.flight[idx]],
                    "sample": idx,
                    "time_utc": pd.to_datetime(camp.time_utc[idx], unit="s", utc=True),
                    "lat": camp.lat[idx] if camp.lat is not None else np.nan,
                    "lon": camp.lon[idx] if camp.lon is not None else np.nan,
                    "truth_km": np.asarray(u.true, float),
                    "pred_km": np.asarray(u.pred, float),
                }
            )
        )
    if not rows:
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    return pd.concat(rows, ignore_index=True)[PREDICTION_COLUMNS]


def write_predictions(frame: pd.DataFrame, csv_path: Path, parquet_path: Path | None = None) -> list[Path]:
    """The tidy predictions as CSV, and as Parquet when pyarrow is installed."""
    out = [atomic_write_text(csv_path, frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ"))]
    if parquet_path is not None:
        try:
            import io

            import pyarrow  # noqa: F401

            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            out.append(atomic_write_bytes(parquet_path, buf.getvalue()))
        except ImportError:
            pass
    return out


def write_unit(
    u: Unit,
    sha: str,
    mode: str,
    y: np.ndarray,
    val_pred: np.ndarray,
    test_pred: np.ndarray,
    store: UnitStore,
    feature_names: list[str] | None = None,
    encoder: str | None = None,
    regions: int = 4,
    head_state: dict[str, torch.Tensor] | None = None,
    scalers: dict[str, np.ndarray] | None = None,
    y_mu: float = 0.0,
    y_sd: float = 1.0,
    epoch: int | None = None,
    epochs_run: int | None = None,
    best_val: float | None = None,
    head: HeadConfig | None = None,
    dims: tuple[int, int] = (0, 0),
    attention: torch.Tensor | None = None,
    cal: tuple[np.ndarray, np.ndarray] | None = None,
    extra: dict[str, object] | None = None,
) -> UnitResult:
    """The one writer of unit results (heads, fine-tuned heads and baselines alike).

    Args:
        y: (N,) labels of the whole campaign, km.
        val_pred, test_pred: predictions (km) on the unit's validation and test samples.
        encoder: the encoder checkpoint (relative to the run folder) of an image head.
        cal: (training-side sample indices, their out-of-flight predictions in km), for
            flight-aware interval calibration.
        extra: more checkpoint entries (e.g. the flight normalisation a head needs to predict).
    """
    test = np.asarray(u.fold.test_idx, np.int64)
    metrics = regression_metrics(y[test], test_pred)
    res = UnitResult(
        model=u.model,
        protocol=u.protocol,
        fold_id=u.fold.fold_id,
        test_flight=u.fold.test_flight,
        seed=u.seed,
        n_train=int(len(u.fold.train_idx)),
        n_val=int(len(u.fold.val_idx)),
        n_test=int(len(test)),
        r2=metrics["r2"],
        mae_km=metrics["mae_km"],
        rmse_km=metrics["rmse_km"],
        bias_km=metrics["bias_km"],
        test_idx=test.tolist(),
        true=y[test].astype(float).tolist(),
        pred=np.asarray(test_pred, float).tolist(),
        val_idx=np.asarray(u.fold.val_idx, int).tolist() if len(val_pred) else [],
        val_pred=np.asarray(val_pred, float).tolist(),
        epoch_trained=epoch,
        epochs_run=epochs_run,
        best_val_loss=best_val,
        encoder=encoder,
        unit_sha=sha,
    )
    if cal is not None:
        keep = np.isfinite(np.asarray(cal[1], float))
        res.cal_idx = np.asarray(cal[0], int)[keep].tolist()
        res.cal_pred = np.asarray(cal[1], float)[keep].tolist()
    if attention is not None:
        res.attention_mean = attention.mean(0).tolist()
        res.attention_test = attention.tolist()
    ckpt = None
    if head_state is not None:
        ckpt = {
            "model_state_dict": head_state,
            "fold_id": u.fold.fold_id,
            "test_flight": u.fold.test_flight,
            "metrics": {k: v for k, v in metrics.items() if v is not None},
            "epoch": epoch,
            "mode": mode,
            "model": u.model,
            "seed": u.seed,
            "head_config": json.dumps(head.to_dict() if head else {}),
            "img_dim": dims[0],
            "n_phys": dims[1],
            "scalers": {k: torch.from_numpy(np.asarray(v)) for k, v in (scalers or {}).items()},
            "y_mean": y_mu,
            "y_std": y_sd,
            "feature_names": list(feature_names or []),
            "encoder": res.encoder or "",
            "regions": regions,
            **(extra or {}),
        }
    return store.save(res, ckpt)
