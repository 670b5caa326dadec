"""Regression metrics (scikit-learn), per fold, mean of folds and pooled.

R2 is undefined (None, shown as "n/a") when the truth has no variance: a flight whose
labels are all equal cannot be explained better or worse than its mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    """R2 (None if undefined), MAE, RMSE and bias (mean prediction minus truth), km; and n."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if len(y_true) == 0:
        return {"r2": None, "mae_km": float("nan"), "rmse_km": float("nan"), "bias_km": float("nan"), "n": 0}
    if not np.isfinite(y_pred).all():
        raise ValueError("non-finite predictions cannot be scored")
    defined = len(y_true) > 1 and float(np.var(y_true)) > 1e-12
    return {
        "r2": float(r2_score(y_true, y_pred)) if defined else None,
        "mae_km": float(mean_absolute_error(y_true, y_pred)),
        "rmse_km": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "bias_km": float(np.mean(y_pred - y_true)),
        "n": int(len(y_true)),
    }


def _finite(values: Iterable[object]) -> np.ndarray:
    arr = np.array([np.nan if v is None else v for v in values], float)
    return arr[np.isfinite(arr)]


def aggregate(
    fold_results: Iterable[Mapping[str, object]], y_true: np.ndarray | None = None, y_pred: np.ndarray | None = None
) -> dict[str, float | int | None]:
    """The seed's mean +- std of fold metrics, plus metrics pooled over all predictions.

    Args:
        fold_results: dicts with ``r2`` (may be None), ``mae_km``, ``rmse_km``.
        y_true, y_pred: every held-out prediction, concatenated (for pooled metrics).
    """
    rows = list(fold_results)
    out: dict[str, float | int | None] = {}
    for key in ("r2", "mae_km", "rmse_km"):
        vals = _finite(r.get(key) for r in rows)
        out[f"mean_{key}"] = float(vals.mean()) if len(vals) else None
        out[f"std_{key}"] = float(vals.std()) if len(vals) else None
    out["n_folds_r2_defined"] = int(len(_finite(r.get("r2") for r in rows)))
    if y_true is not None and y_pred is not None:
        pooled = regression_metrics(y_true, y_pred)
        out.update({f"pooled_{k}": v for k, v in pooled.items() if k != "n"})
        out["n_predictions"] = int(len(y_true))
    return out


def fmt_r2(value: float | None, digits: int = 2) -> str:
    """R2 for tables: "n/a" where undefined."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"
