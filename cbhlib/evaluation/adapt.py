"""Adapting to a new flight with a few labels, and honest intervals there.

Few-shot recalibration: k labelled samples of the held-out flight correct the model's
leave-one-flight-out predictions on that flight; only the flight's other samples are
scored. The k samples are drawn as a scientist would have them, the **first k in time**
(``draw="first"``), or at random along the flight (``draw="random"``, optimistic: they
span the whole flight). Two corrections:

* ``offset``: add the mean residual of the k samples;
* ``linear``: offset plus a slope correction fitted by ridge regression that pulls the
  slope towards 1 with the weight of ``shrinkage`` samples (so k = 2 cannot fit a wild
  slope), which can fix a compressed or stretched prediction range as well as a bias.

Split-conformal intervals are calibrated on the training flights' validation residuals,
or on the k labelled samples of the target flight (the same draws); coverage and width
are reported per flight, with the minimum over flights as the headline.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

MIN_SCORED = 5  # samples of a flight that must remain to be scored


def draws(
    n: int, k: int, draw: str, repeats: int, rng: np.random.Generator, k_max: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Positions (in time order) of the k calibration samples and of the scored samples.

    The scored samples are the same for every k up to ``k_max`` (default k): those outside
    the first ``k_max`` positions (``first``, one draw) or outside a random pool of
    ``k_max`` (``random``, ``repeats`` draws; calibration takes the pool's first k), so a
    curve over k compares like with like. ``k_max`` is capped so that at least
    ``MIN_SCORED`` samples are scored.
    """
    pool_n = max(0, min(max(k, k_max or 0), n - MIN_SCORED))
    k_used = min(k, pool_n)
    if draw == "first" or pool_n == 0:
        return [(np.arange(k_used), np.arange(pool_n, n))]
    out = []
    for _ in range(repeats):
        perm = rng.permutation(n)
        out.append((np.sort(perm[:k_used]), np.sort(perm[pool_n:])))
    return out


def recalibrate(
    y_cal: np.ndarray, p_cal: np.ndarray, p: np.ndarray, method: str, shrinkage: float, p_ref: np.ndarray | None = None
) -> np.ndarray:
    """Corrected predictions ``p`` from calibration pairs (y_cal, p_cal).

    Args:
        method: ``offset`` or ``linear``.
        shrinkage: ridge weight on (slope - 1), in samples of the flight's prediction variance.
        p_ref: the flight's predictions (unlabelled side information) setting that variance.
    """
    if len(y_cal) == 0:
        return p.copy()
    r = y_cal - p_cal
    c = float(r.mean())
    if method == "offset" or len(y_cal) < 2:
        return p + c
    pc = p_cal - p_cal.mean()
    v0 = float(np.var(p_ref if p_ref is not None else p)) + 1e-9
    s = float(np.sum(pc * (r - c)) / (np.sum(pc * pc) + shrinkage * v0))
    return p + c + s * (p - p_cal.mean())


def _mae_r2(y: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """MAE (m) and R2 (NaN where the truth is constant), without per-call library overhead."""
    err = q - y
    ss = float(np.sum((y - y.mean()) ** 2))
    return 1000 * float(np.mean(np.abs(err))), (1 - float(np.sum(err**2)) / ss) if ss > 1e-12 else float("nan")


def few_shot(
    pred: pd.DataFrame,
    ks: list[int],
    draw: str,
    repeats: int,
    shrinkage: float,
    methods: tuple[str, ...] = ("offset", "linear"),
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (model, seed, flight, k, method, repeat) with the scored samples' metrics;
    within a flight and draw every k is scored on the same samples (those after the largest k).

    Args:
        pred: tidy LOFO predictions (model, seed, flight, time_utc, truth_km, pred_km).
    """
    rows = []
    k_max = max(ks) if ks else 0
    for (model, s, fl), d in pred.groupby(["model", "seed", "flight"], sort=False):
        d = d.sort_values("time_utc")
        y, p = d["truth_km"].to_numpy(float), d["pred_km"].to_numpy(float)
        for k in ks:  # the same stream for every k: the same pools, so every k scores the same samples
            rng = np.random.default_rng([seed, int(s), zlib.crc32(str(fl).encode())])
            for rep, (cal, scored) in enumerate(draws(len(y), k, draw, repeats, rng, k_max)):
                for method in methods:
                    mae, r2 = _mae_r2(y[scored], recalibrate(y[cal], p[cal], p[scored], method, shrinkage, p))
                    rows.append(
                        {
                            "model": model,
                            "seed": s,
                            "flight": fl,
                            "k": k,
                            "k_used": len(cal),
                            "draw": draw,
                            "method": method,
                            "repeat": rep,
                            "n_scored": len(scored),
                            "mae_m": mae,
                            "r2": r2,
                        }
                    )
    return pd.DataFrame(rows)


def few_shot_curve(fs: pd.DataFrame) -> pd.DataFrame:
    """Per (model, draw, method, k): mean over flights of per-flight MAE and R2 (repeats
    averaged first), then mean and sd over seeds."""
    per_flight = fs.groupby(["model", "draw", "method", "k", "seed", "flight"], sort=False)[["mae_m", "r2"]].mean()
    per_seed = per_flight.groupby(["model", "draw", "method", "k", "seed"], sort=False).mean().reset_index()
    out = (
        per_seed.groupby(["model", "draw", "method", "k"], sort=False)
        .agg(
            mae_m=("mae_m", "mean"),
            mae_m_sd=("mae_m", "std"),
            r2=("r2", "mean"),
            r2_sd=("r2", "std"),
            n_seeds=("seed", "nunique"),
        )
        .reset_index()
    )
    return out.fillna({"mae_m_sd": 0.0, "r2_sd": 0.0})


def few_shot_per_flight(fs: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per (model, draw, method, flight) at one k: scored n, MAE and R2 (mean over seeds and repeats)."""
    d = fs[fs["k"] == k]
    return (
        d.groupby(["model", "draw", "method", "flight"], sort=False)
        .agg(n_scored=("n_scored", "first"), mae_m=("mae_m", "mean"), r2=("r2", "mean"))
        .reset_index()
    )
