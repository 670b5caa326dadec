"""Split-conformal prediction intervals and their coverage."""

from __future__ import annotations

import math

import numpy as np


def conformal_quantile(residuals: np.ndarray, alpha: float = 0.1) -> float:
    """The split-conformal half-width: the ceil((n + 1)(1 - alpha))-th smallest |residual|.

    Returns inf when there are too few calibration residuals for the level.
    """
    r = np.sort(np.abs(np.asarray(residuals, float)))
    n = len(r)
    rank = math.ceil((n + 1) * (1 - alpha))
    return float(r[rank - 1]) if 1 <= rank <= n else float("inf")


def interval_coverage(y: np.ndarray, pred: np.ndarray, half_width: float) -> tuple[float, float]:
    """(coverage, mean width) of intervals pred +- half_width."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    covered = np.abs(y - pred) <= half_width
    return float(covered.mean()) if len(y) else float("nan"), 2 * half_width
