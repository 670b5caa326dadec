"""Regression metrics (scikit-learn), per fold, mean of folds and pooled."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R2, MAE and RMSE in km (R2 is NaN for fewer than two samples)."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if len(y_true) == 0:
        return {"r2": float("nan"), "mae_km": float("nan"), "rmse_km": float("nan"), "n": 0}
    if not np.isfinite(y_pred).all():
        raise ValueError("non-finite predictions cannot be scored")
    r2 = float(r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan")
    return {
        "r2": r2,
        "mae_km": float(mean_absolute_error(y_true, y_pred)),
        "rmse_km": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "n": int(len(y_true)),
    }


def aggregate(fold_results: Iterable[Mapping[str, float]], y_true: np.ndarray | None = None,
              y_pred: np.ndarray | None = None) -> dict[str, float]:
    """The seed's mean +- std of fold metrics, plus metrics pooled over all predictions.

    Args:
        fold_results: dicts with ``r2``, ``mae_km``, ``rmse_km``.
        y_true, y_pred: every held-out prediction, concatenated (for pooled metrics).
    """
    rows = list(fold_results)
    out: dict[str, float] = {}
    for key in ("r2", "mae_km", "rmse_km"):
        vals = np.array([r[key] for r in rows], float)
        vals = vals[np.isfinite(vals)]
        out[f"mean_{key}"] = float(vals.mean()) if len(vals) else float("nan")
        out[f"std_{key}"] = float(vals.std()) if len(vals) else float("nan")
    if y_true is not None and y_pred is not None:
        pooled = regression_metrics(y_true, y_pred)
        out.update({f"pooled_{k}": v for k, v in pooled.items() if k != "n"})
        out["n_predictions"] = int(len(y_true))
    return out
