"""Paired intervals for "does model A beat model B?", over samples and seeds.

The statistic is the difference of pooled MAE (A minus B; negative: A is better),
averaged over seeds. Each bootstrap replicate resamples

* seeds with replacement (paired: replicate seed j of A with seed j of B; a
  deterministic model's seeds are identical), and
* samples by a moving-block bootstrap within each flight (blocks of consecutive samples
  along the track, because neighbours are strongly autocorrelated; an i.i.d. resample
  would make the interval far too narrow), keeping each flight's size.

"A beats B" is stated only when the 95 % interval excludes zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PairedDifference:
    """The pooled-MAE difference of two models and its bootstrap interval (km)."""

    a: str
    b: str
    mae_a: float
    mae_b: float
    diff: float
    lo: float
    hi: float
    n_samples: int
    n_seeds: int

    @property
    def verdict(self) -> str:
        if self.hi < 0:
            return f"{self.a} beats {self.b}"
        if self.lo > 0:
            return f"{self.b} beats {self.a}"
        return "not resolved"

    def row(self) -> dict[str, object]:
        return {
            "model": self.a,
            "reference": self.b,
            "mae_m": 1000 * self.mae_a,
            "reference_mae_m": 1000 * self.mae_b,
            "diff_m": 1000 * self.diff,
            "ci_lo_m": 1000 * self.lo,
            "ci_hi_m": 1000 * self.hi,
            "verdict": self.verdict,
            "n_samples": self.n_samples,
            "n_seeds": self.n_seeds,
        }


def block_indices(groups: np.ndarray, block: int, rng: np.random.Generator, reps: int) -> np.ndarray:
    """Moving-block bootstrap indices [reps, N], resampled within each group (flight).

    ``groups`` gives each sample's flight; samples must be in time order within a flight.
    """
    n = len(groups)
    out = np.empty((reps, n), np.int64)
    pos = 0
    for g in dict.fromkeys(groups.tolist()):
        members = np.flatnonzero(groups == g)
        m = len(members)
        b = max(1, min(block, m))
        n_blocks = int(np.ceil(m / b))
        starts = rng.integers(0, m - b + 1, size=(reps, n_blocks))
        idx = (starts[:, :, None] + np.arange(b)[None, None, :]).reshape(reps, -1)[:, :m]
        out[:, pos : pos + m] = members[idx]
        pos += m
    return out


def paired_mae_difference(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    groups: np.ndarray,
    a: str = "A",
    b: str = "B",
    reps: int = 1000,
    block: int = 10,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Bootstrap interval of pooled MAE(A) - MAE(B).

    Args:
        y: (N,) truth, samples in time order within each flight.
        pred_a, pred_b: (S_a, N), (S_b, N) predictions per seed, same sample order.
        groups: (N,) flight of each sample (blocks never cross flights).
    """
    y = np.asarray(y, float)
    ea = np.abs(np.atleast_2d(pred_a) - y[None])  # [Sa, N]
    eb = np.abs(np.atleast_2d(pred_b) - y[None])
    rng = np.random.default_rng(seed)
    S = max(len(ea), len(eb))
    pick = rng.integers(0, S, size=(reps, S))  # paired seed draws
    wa = np.stack([np.bincount(p % len(ea), minlength=len(ea)) for p in pick]) / S  # [R, Sa]
    wb = np.stack([np.bincount(p % len(eb), minlength=len(eb)) for p in pick]) / S
    d = wa @ ea - wb @ eb  # [R, N]: per-sample error difference under each seed resample
    idx = block_indices(np.asarray(groups), block, rng, reps)
    boot = np.take_along_axis(d, idx, axis=1).mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return PairedDifference(
        a,
        b,
        float(ea.mean()),
        float(eb.mean()),
        float(ea.mean() - eb.mean()),
        float(lo),
        float(hi),
        int(len(y)),
        int(S),
    )
