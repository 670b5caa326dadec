"""Online intervals along a new flight as its lidar labels arrive, one by one.

Adaptive conformal inference (ACI, Gibbs and Candès 2021) moves the miscoverage level after
each label; :func:`aci_centred` first recentres the flight's residuals on its bias and
rescales them to its spread learnt so far, calibrates on the training flights put through
the same procedure, and picks its step by replaying the training flights as new ones. No
interval uses a label at or after its own time, and nothing is chosen with the new flight.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


def aci(
    y: np.ndarray,
    pred: np.ndarray,
    scores: np.ndarray,
    alpha: float = 0.1,
    gamma: float = 0.05,
    labelled: np.ndarray | None = None,
    reset: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive conformal inference along one flight, samples in time order.

    The half-width at each sample is the ``1 - a_t`` conformal quantile of the scores known
    so far (``scores``, then the residual of every labelled sample before it); after a
    labelled sample, ``a_t += gamma * (alpha - miss)``. Nothing uses a label before its time.
    With ``reset``, a sample whose previous sample brought no label gets ``alpha``: between
    labels no feedback steers the level, so it does not hold one moment's swing across a gap
    (only earlier arrivals count: a later label never changes an earlier interval). The label
    that ends a gap updates the level it was given (``alpha``), so the level builds up again only
    while labels come one after another. With every label present nothing changes.

    Args:
        y, pred: (n,) truth and predictions in time order.
        scores: calibration residuals known before the flight (e.g. flight-aware ones).
        labelled: (n,) which samples' labels arrive (default: all).

    Returns:
        (half-widths (n,), miscoverage levels a_t (n,) used for each sample).
    """
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    labelled = np.ones(len(y), bool) if labelled is None else np.asarray(labelled, bool)
    known = sorted(np.abs(np.asarray(scores, float)).tolist())  # kept sorted: each step inserts one
    a, latest = alpha, None  # the level after the latest label so far, and that label's index
    hw, used = np.empty(len(y)), np.empty(len(y))
    for t in range(len(y)):
        used[t] = alpha if reset and latest is not None and t - latest > 1 else a
        if used[t] >= 1:
            hw[t] = 0.0
        elif not known:
            hw[t] = float("inf")
        else:  # conformal_quantile at level max(a_t, 0); too few scores for the level: the largest
            rank = math.ceil((len(known) + 1) * (1 - max(used[t], 0.0)))
            hw[t] = known[min(rank, len(known)) - 1]
        if labelled[t]:
            score = abs(y[t] - pred[t])
            a = used[t] + gamma * (alpha - float(score > hw[t]))
            bisect.insort(known, score)
            latest = t
    return hw, used


PRIOR_LABELS = 5  # pseudo-labels of zero bias: the first labels move the centre only part of the way
SCALE_PRIOR_LABELS = 2  # pseudo-labels at the training flights' spread: a flight's own spread takes over fast
GAMMAS = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4)  # ACI steps the recentred method chooses among, by replay


def running_bias(
    y: np.ndarray, pred: np.ndarray, prior: float = PRIOR_LABELS, labelled: np.ndarray | None = None
) -> np.ndarray:
    """(n,) the flight's bias known before each sample: the mean residual of the labelled samples
    before it (``labelled`` (n,), default all), shrunk towards 0 by ``prior`` pseudo-labels (0 at
    the first sample; never its own label, never an unlabelled sample's value)."""
    before, count = sums_before(np.asarray(y, float) - np.asarray(pred, float), labelled)
    return before / (count + max(prior, 1e-9))  # prior 0: the plain mean (0 at the first sample)


def sums_before(values: np.ndarray, labelled: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sum, count) (n,) of the labelled ``values`` (n,) strictly before each sample (default all
    labelled); an unlabelled value is never read."""
    known = np.ones(len(values), bool) if labelled is None else np.asarray(labelled, bool)
    total = np.concatenate([[0.0], np.cumsum(np.where(known, values, 0.0))])[: len(values)]
    return total, np.concatenate([[0], np.cumsum(known)])[: len(values)]


def bias_prior(flights: list[np.ndarray]) -> float:
    """Pseudo-labels for :func:`running_bias` under the random-effects model of ``flight_t``:
    ``s_w^2 / s_b^2``, so that after t labels a flight's mean residual is shrunk by
    ``t / (t + s_w^2 / s_b^2)`` (its best linear predictor, were the variances known).

    ``s_w^2`` is the mean within-flight variance; ``s_b^2`` the mean squared flight bias less
    the noise in each flight's mean (``s_g^2 / n_g``), at least 0. inf where the training
    flights show no bias beyond that noise: the centre stays on the prediction.

    Args:
        flights: each training flight's out-of-flight residuals (km), finite.
    """
    var = [float(np.var(r, ddof=1)) if len(r) > 1 else 0.0 for r in flights]
    s_b2 = float(np.mean([np.mean(r) ** 2 - v / len(r) for r, v in zip(flights, var, strict=True)]))
    s_w2 = float(np.mean(var))
    return s_w2 / s_b2 if s_b2 > 0 else float("inf")


def running_scale(
    centred: np.ndarray, scale0: float, prior: float = SCALE_PRIOR_LABELS, labelled: np.ndarray | None = None
) -> np.ndarray:
    """(n,) the flight's spread known before each sample: root mean square of the centred
    residuals (n,) of the labelled samples before it (default all), with ``prior`` pseudo-labels
    at ``scale0`` > 0 (``scale0`` at the first sample)."""
    before, count = sums_before(np.asarray(centred, float) ** 2, labelled)
    return np.sqrt((prior * scale0**2 + before) / (prior + count))


@dataclass(frozen=True)
class Recentring:
    """What the recentred online method learns from training flights (never from the new one).

    Attributes:
        prior: pseudo-labels of the running bias (:func:`bias_prior`).
        scale0: the flights' spread around their running bias (km): the scale's starting point.
        pool: (m,) |standardised residuals| of the flights, as :meth:`standardise` gives them.
    """

    prior: float
    scale0: float
    pool: np.ndarray

    def standardise(
        self, r: np.ndarray, labelled: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(standardised residuals, centre shifts, scales), each (n,), of one flight's residuals
        ``r`` (n,) in time order: ``(r - running bias) / running scale``, each from the earlier
        labelled samples (``labelled`` (n,), default all; an unlabelled residual may be NaN)."""
        r = np.asarray(r, float)
        shift = running_bias(r, np.zeros_like(r), self.prior, labelled)
        scale = running_scale(r - shift, self.scale0, labelled=labelled)
        return (r - shift) / scale, shift, scale


def recentring(flights: list[np.ndarray]) -> Recentring:
    """:class:`Recentring` of these training flights (each (n_g,) residuals in time order)."""
    prior = bias_prior(flights)
    centred = [r - running_bias(r, np.zeros_like(r), prior) for r in flights]
    scale0 = math.sqrt(float(np.mean(np.concatenate(centred) ** 2))) or 1.0  # all residuals 0: any scale will do
    return Recentring(prior, scale0, np.abs(np.concatenate([c / running_scale(c, scale0) for c in centred])))


def replay_gamma(flights: list[np.ndarray], alpha: float, gammas: tuple[float, ...] = GAMMAS) -> float:
    """The ACI step for a new flight, chosen on the training flights alone.

    Each training flight is replayed as if new: recentred with what the others teach
    (:func:`recentring` of the others), its labels arriving one by one. The step whose
    later-half coverage lies nearest nominal, averaged over the flights, wins (the smallest on
    ties; the first step with fewer than two flights).

    Args:
        flights: each training flight's out-of-flight residuals (n_g,), in time order.
    """
    if len(flights) < 2:
        return gammas[0]
    replays = []  # (pool, standardised residuals, later half) per left-out flight
    for i, r in enumerate(flights):
        rc = recentring(flights[:i] + flights[i + 1 :])
        replays.append((rc.pool, rc.standardise(r)[0], np.arange(len(r)) >= len(r) // 2))
    best, chosen = float("inf"), gammas[0]
    for gamma in gammas:
        miss = []
        for pool, z, later in replays:
            hw, _ = aci(z, np.zeros_like(z), pool, alpha, gamma)
            miss.append(abs(float(np.mean(np.abs(z[later]) <= hw[later])) - (1 - alpha)))
        if np.mean(miss) < best - 1e-12:
            best, chosen = float(np.mean(miss)), gamma
    return chosen


def by_flight(residuals: np.ndarray, groups: np.ndarray) -> list[np.ndarray]:
    """Residuals split by flight (first-appearance order), each in the order given (time order)."""
    r, g = np.asarray(residuals, float), np.asarray(groups)
    return [r[g == k] for k in dict.fromkeys(g.tolist())]


class OnlineFit(NamedTuple):
    """What :func:`aci_centred` learns from the training flights alone: recentring and ACI step."""

    recentring: Recentring
    gamma: float


def fit_centred(
    residuals: np.ndarray, groups: np.ndarray, alpha: float = 0.1, gammas: tuple[float, ...] = GAMMAS
) -> OnlineFit:
    """:class:`OnlineFit` of training flights' out-of-flight residuals (m,) and their flights (m,)
    (in time order within each flight, finite, not empty). The same residuals give the same fit,
    so a caller may reuse it for every seed and flight they calibrate."""
    flights = by_flight(residuals, groups)
    return OnlineFit(recentring(flights), replay_gamma(flights, alpha, gammas))


class Online(NamedTuple):
    """An online method's intervals along one flight: ``pred + shift +- half_width``."""

    half_width: np.ndarray  # (n,) km
    shift: np.ndarray  # (n,) km: the centre's move from the prediction
    gamma: float  # the ACI step
    level: np.ndarray  # (n,) the miscoverage level a_t; <= 0: the widest interval the scores allow


def aci_centred(
    y: np.ndarray,
    pred: np.ndarray,
    residuals: np.ndarray,
    groups: np.ndarray,
    alpha: float = 0.1,
    gammas: tuple[float, ...] = GAMMAS,
    fit: OnlineFit | None = None,
    labelled: np.ndarray | None = None,
    reset: bool = False,
) -> Online:
    """ACI on the new flight's residuals recentred on its bias and rescaled to its spread so far.

    Before each sample: the centre is the prediction plus :func:`running_bias` (shrunk by
    :func:`bias_prior` of the training flights) and the scale is :func:`running_scale`; the
    score is the standardised residual. The calibration pool is the training flights'
    out-of-flight residuals put through the same procedure, flight by flight, so a new flight
    exchangeable with them gets scores like theirs; the step is :func:`replay_gamma`'s. A flight
    whose level the model misses (a shifted flight) is recentred instead of covered by ever
    wider intervals, and a calm flight narrows instead of inheriting the others' spread.

    A large step holds coverage near nominal over a few dozen labels by swinging: after a
    miss the level can drop below 0, and until enough covered samples lift it again the
    interval is the widest the scores allow (``level <= 0``).

    Args:
        y, pred: (n,) truth and prediction of the new flight, in time order (finite).
        residuals, groups: (m,) out-of-flight residuals of the training flights (in time order
            within each flight, finite) and their flights.
        fit: :func:`fit_centred` of exactly these residuals, when the caller has it already.
        labelled: (n,) which samples' labels have arrived (default all): only they move the
            centre, the scale and the level, each for later samples; ``y`` may be NaN elsewhere.
        reset: the level is ``alpha`` wherever the previous sample brought no label (:func:`aci`).

    Returns:
        :class:`Online`; without training residuals, infinite half-widths, no shift, a NaN step.
    """
    r = np.asarray(y, float) - np.asarray(pred, float)
    if not len(residuals):
        return Online(np.full(len(r), np.inf), np.zeros(len(r)), float("nan"), np.full(len(r), alpha))
    rc, gamma = fit or fit_centred(residuals, groups, alpha, gammas)
    z, shift, scale = rc.standardise(r, labelled)
    hw, level = aci(z, np.zeros_like(z), rc.pool, alpha, gamma, labelled, reset)
    return Online(hw * scale, shift, gamma, level)
