"""Prediction intervals on a new flight, and whether they hold.

Every interval is ``prediction ± half-width``, its lower end raised to the sea surface
(:data:`FLOOR_KM`: a cloud base is never below it, so coverage is unchanged and the width
is what a user is given); methods differ in which residuals set the half-width at nominal
level ``1 - alpha``:

* ``validation``: split conformal on the training flights' validation residuals. They
  carry no between-flight shift, so on a new flight they undercover (the earlier method).
* ``flight``: flight-aware, label-free for the new flight: residuals of models that never
  saw the residual's flight (nested leave-one-flight-out inside the training flights),
  each training flight weighing the same.
* ``flight_max``: flight level: the largest of the training flights' own (1 - alpha)
  residual quantiles. Flights are the exchangeable units: with G training flights the
  chance a new flight's quantile exceeds all G is 1/(G+1), so at most G/(G+1) of new
  flights are guaranteed (80 % with four training flights), whatever the nominal level.
* ``flight_t``: a new flight under a random-effects model: residual = flight bias + noise,
  flight biases normal with the spread of the training flights' mean out-of-flight
  residuals. Half-width ``t(G-1) * sqrt(s_b^2 (1 + 1/G) + s_w^2)``: the few-flights
  uncertainty enters through Student's t with G - 1 degrees of freedom (2.35 at 90 %
  with four training flights). Parametric: no distribution-free guarantee, and wide.
* ``first_k``: split conformal on the first k labelled samples of the new flight.
* ``aci``: online, as the new flight's labels arrive: adaptive conformal inference
  (Gibbs and Candès 2021) starts from the flight-aware residuals, adds each new residual
  and moves its miscoverage level after each label, ``a <- a + gamma (alpha - miss)``;
  ``aci_budget`` gets only as many labels as ``first_k``, spread along the flight.
* ``aci_centred``: ACI on the new flight's residuals recentred on its bias and rescaled to its
  spread learnt so far (labels before each sample only), calibrated on the training flights'
  out-of-flight residuals put through the same procedure, with the step chosen by replaying
  the training flights as new ones (:func:`aci_centred`): a shifted flight is recentred
  instead of covered by ever wider intervals, a calm one narrows.

Each interval is computed before its sample's label is used; the online methods and
``first_k`` are scored on the same samples (those after the first k).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

METHODS = {
    "validation": "training flights' validation residuals",
    "flight": "flight-aware (nested leave-one-flight-out residuals, flights weighted equally)",
    "flight_max": "flight level (largest training-flight quantile)",
    "flight_t": "new-flight random-effects interval (Student t, training flights - 1 dof)",
    "first_k": "first k labels of the new flight",
    "aci": "online ACI (every label as it arrives)",
    "aci_budget": "online ACI (k labels, spread along the flight)",
    "aci_centred": "online ACI recentred and rescaled to the flight so far (every label; step by replay)",
}
SHORT = {  # panel titles
    "validation": "validation residuals",
    "flight": "flight-aware",
    "flight_max": "flight level (max)",
    "flight_t": "random effects (t)",
    "first_k": "first k labels",
    "aci": "online ACI",
    "aci_budget": "online ACI, k labels",
    "aci_centred": "online ACI, recentred + rescaled",
}
LABEL_FREE = ("validation", "flight", "flight_max", "flight_t")  # need no label of the new flight


def conformal_quantile(residuals: np.ndarray, alpha: float = 0.1) -> float:
    """The split-conformal half-width: the ceil((n + 1)(1 - alpha))-th smallest |residual|.

    Returns inf when there are too few calibration residuals for the level.
    """
    r = np.sort(np.abs(np.asarray(residuals, float)))
    n = len(r)
    rank = math.ceil((n + 1) * (1 - alpha))
    return float(r[rank - 1]) if 1 <= rank <= n else float("inf")


FLOOR_KM = 0.0  # no cloud base lies below the sea surface


def bounds(pred: np.ndarray, half_width: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) km of the intervals pred +- half_width, the lower end at least :data:`FLOOR_KM`."""
    pred = np.asarray(pred, float)
    return np.maximum(pred - half_width, FLOOR_KM), pred + half_width


def interval_coverage(y: np.ndarray, pred: np.ndarray, half_width: float | np.ndarray) -> tuple[float, float]:
    """(coverage, mean width) of the intervals :func:`bounds` gives (width: upper - lower, km)."""
    y, hw = np.asarray(y, float), np.broadcast_to(half_width, np.shape(y))
    if not len(y):
        return float("nan"), float("nan")
    lo, hi = bounds(pred, hw)
    return float(((y >= lo) & (y <= hi)).mean()), float(np.mean(hi - lo))


def weighted_quantile(values: np.ndarray, weights: np.ndarray, level: float) -> float:
    """The smallest value whose cumulative (normalised) weight reaches ``level``."""
    v, w = np.asarray(values, float), np.asarray(weights, float)
    order = np.argsort(v)
    cum = np.cumsum(w[order]) / w.sum()
    return float(v[order][min(np.searchsorted(cum, level - 1e-12), len(v) - 1)])


def flight_halfwidth(residuals: np.ndarray, groups: np.ndarray, alpha: float, how: str = "flight") -> float:
    """Half-width from out-of-flight residuals of the training flights.

    Args:
        residuals: (n,) residuals of models that never saw each residual's flight.
        groups: (n,) the flight of each residual.
        how: ``flight`` (each flight weighs the same), ``flight_max`` (the largest flight
            quantile), ``flight_t`` (random effects, :func:`random_effects_halfwidth`) or
            ``pooled`` (every sample the same: large flights dominate).
    """
    r, g = np.abs(np.asarray(residuals, float)), np.asarray(groups)
    if len(r) == 0:
        return float("nan")
    if how == "pooled":
        return conformal_quantile(r, alpha)
    flights = list(dict.fromkeys(g.tolist()))
    if how == "flight_max":
        per = [conformal_quantile(r[g == k], alpha) for k in flights]
        return float(max(q if np.isfinite(q) else r[g == k].max() for q, k in zip(per, flights, strict=True)))
    if how == "flight_t":
        return random_effects_halfwidth(np.asarray(residuals, float), g, alpha)
    if how != "flight":
        raise ValueError(f"how: expected flight, flight_max, flight_t or pooled; found {how!r}")
    w = np.array([1.0 / np.sum(g == k) for k in g])
    return weighted_quantile(r, w, 1 - alpha)


def random_effects_halfwidth(residuals: np.ndarray, groups: np.ndarray, alpha: float) -> float:
    """Half-width of a ``1 - alpha`` prediction interval for one sample of a new flight.

    Model: the residual of flight g is ``b_g + e``, ``b_g ~ N(0, s_b^2)`` across flights and
    ``e`` within-flight noise of variance ``s_w^2``. ``s_b^2`` is the mean squared flight bias
    (the prediction is the interval's centre, so biases are measured from 0) and ``s_w^2`` the
    mean within-flight variance, flights weighted equally. With G flights the half-width is
    ``t_{1-alpha/2}(G-1) * sqrt(s_b^2 (1 + 1/G) + s_w^2)``; inf with fewer than two flights.

    Args:
        residuals: (n,) signed out-of-flight residuals of the training flights (km).
        groups: (n,) the flight of each residual.
    """
    r, g = np.asarray(residuals, float), np.asarray(groups)
    flights = list(dict.fromkeys(g.tolist()))
    G = len(flights)
    if G < 2:
        return float("inf")
    bias = np.array([r[g == k].mean() for k in flights])
    s_w2 = float(np.mean([r[g == k].var() for k in flights]))
    s_b2 = float(np.mean(bias**2))
    return float(stats.t.ppf(1 - alpha / 2, G - 1) * math.sqrt(s_b2 * (1 + 1 / G) + s_w2))


def aci(
    y: np.ndarray,
    pred: np.ndarray,
    scores: np.ndarray,
    alpha: float = 0.1,
    gamma: float = 0.05,
    labelled: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive conformal inference along one flight, samples in time order.

    The half-width at each sample is the ``1 - a_t`` conformal quantile of the scores known
    so far (``scores``, then the residual of every labelled sample before it); after a
    labelled sample, ``a_t += gamma * (alpha - miss)``. Nothing uses a label before its time.

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
    a = alpha
    hw, used = np.empty(len(y)), np.empty(len(y))
    for t in range(len(y)):
        used[t] = a
        if a >= 1:
            hw[t] = 0.0
        elif not known:
            hw[t] = float("inf")
        else:  # conformal_quantile at level max(a, 0); too few scores for the level: the largest
            rank = math.ceil((len(known) + 1) * (1 - max(a, 0.0)))
            hw[t] = known[min(rank, len(known)) - 1]
        if labelled[t]:
            score = abs(y[t] - pred[t])
            a += gamma * (alpha - float(score > hw[t]))
            bisect.insort(known, score)
    return hw, used


PRIOR_LABELS = 5  # pseudo-labels of zero bias: the first labels move the centre only part of the way
SCALE_PRIOR_LABELS = 2  # pseudo-labels at the training flights' spread: a flight's own spread takes over fast
GAMMAS = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4)  # ACI steps the recentred method chooses among, by replay


def running_bias(y: np.ndarray, pred: np.ndarray, prior: float = PRIOR_LABELS) -> np.ndarray:
    """(n,) the flight's bias known before each sample: the mean residual of the samples before
    it, shrunk towards 0 by ``prior`` pseudo-labels (0 at the first sample; never its own label)."""
    r = np.asarray(y, float) - np.asarray(pred, float)
    before = np.concatenate([[0.0], np.cumsum(r)[:-1]])
    return before / (np.arange(len(r)) + max(prior, 1e-9))  # prior 0: the plain mean (0 at the first sample)


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


def running_scale(centred: np.ndarray, scale0: float, prior: float = SCALE_PRIOR_LABELS) -> np.ndarray:
    """(n,) the flight's spread known before each sample: root mean square of the centred
    residuals (n,) before it, with ``prior`` pseudo-labels at ``scale0`` > 0 (``scale0`` at the
    first sample)."""
    c = np.asarray(centred, float)
    before = np.concatenate([[0.0], np.cumsum(c**2)[:-1]])
    return np.sqrt((prior * scale0**2 + before) / (prior + np.arange(len(c))))


@dataclass(frozen=True)
class Recentring:
    """What the recentred online method learns from training flights (never from the new one).

    Attributes:
        prior: pseudo-labels of the running bias (:func:`bias_prior`).
        scale0: the flights' spread around their running bias (km): the scale's starting point.
        pool: (m,) |standardised residuals| of the flights put through :func:`standardise`.
    """

    prior: float
    scale0: float
    pool: np.ndarray

    def standardise(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(standardised residuals, centre shifts, scales), each (n,), of one flight's residuals
        ``r`` (n,) in time order: ``(r - running bias) / running scale``, each from earlier samples."""
        r = np.asarray(r, float)
        shift = running_bias(r, np.zeros_like(r), self.prior)
        scale = running_scale(r - shift, self.scale0)
        return (r - shift) / scale, shift, scale


def recentring(flights: list[np.ndarray]) -> Recentring:
    """:class:`Recentring` of these training flights (each (n_g,) residuals in time order)."""
    prior = bias_prior(flights)
    centred = np.concatenate([r - running_bias(r, np.zeros_like(r), prior) for r in flights])
    scale0 = math.sqrt(float(np.mean(centred**2))) or 1.0  # all residuals 0: any scale will do
    first = Recentring(prior, scale0, np.empty(0))
    return Recentring(prior, scale0, np.abs(np.concatenate([first.standardise(r)[0] for r in flights])))


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
) -> Online:
    """ACI on the new flight's residuals recentred on its bias and rescaled to its spread so far.

    Before each sample: the centre is the prediction plus :func:`running_bias` (shrunk by
    :func:`bias_prior` of the training flights) and the scale is :func:`running_scale`; the
    score is the standardised residual. The calibration pool is the training flights'
    out-of-flight residuals put through the same procedure, flight by flight, so a new flight
    exchangeable with them gets scores like theirs; the step is :func:`replay_gamma`'s. A flight
    whose level the model misses (a shifted flight) is recentred instead of covered by ever
    wider intervals, and a calm flight narrows instead of inheriting the others' spread.

    Args:
        y, pred: (n,) truth and prediction of the new flight, in time order (finite).
        residuals, groups: (m,) out-of-flight residuals of the training flights (in time order
            within each flight, finite) and their flights.

    A large step holds coverage near nominal over a few dozen labels by swinging: after a
    miss the level can drop below 0, and until enough covered samples lift it again the
    interval is the widest the scores allow (``level <= 0``).

    Returns:
        :class:`Online`; without training residuals, infinite half-widths, no shift, a NaN step.
    """
    r = np.asarray(y, float) - np.asarray(pred, float)
    if not len(residuals):
        return Online(np.full(len(r), np.inf), np.zeros(len(r)), float("nan"), np.full(len(r), alpha))
    flights = by_flight(residuals, groups)
    rc = recentring(flights)
    gamma = replay_gamma(flights, alpha, gammas)
    z, shift, scale = rc.standardise(r)
    hw, level = aci(z, np.zeros_like(z), rc.pool, alpha, gamma)
    return Online(hw * scale, shift, gamma, level)


def _k_used(n: int, k: int, min_scored: int = 5) -> int:
    return max(0, min(k, n - min_scored))


def interval_table(
    pred: pd.DataFrame,
    val: dict[tuple[str, int, str], np.ndarray],
    cal: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]],
    alpha: float,
    k: int,
    gamma: float = 0.05,
) -> pd.DataFrame:
    """Coverage and width of every method per (model, seed, held-out flight).

    Args:
        pred: tidy LOFO predictions (model, seed, flight, time_utc, truth_km, pred_km).
        val: (model, seed, flight) -> validation residuals of the training flights.
        cal: (model, seed, flight) -> (out-of-flight residuals, their flights) of the
            training flights (nested leave-one-flight-out, in time order within each flight);
            never the held-out flight's.
        gamma: the step of plain ACI (``aci``, ``aci_budget``); ``aci_centred`` chooses its own.

    Returns:
        one row per (model, seed, flight, method): coverage, width_m, coverage of the later
        half (online methods), n_scored, n_later_half, n_calibration; for an online method its
        ACI step (gamma) and the share of scored samples given the widest interval its scores
        allow (widest_share: level a_t <= 0).
    """
    rows = []
    for (model, s, fl), d in pred.groupby(["model", "seed", "flight"], sort=False):
        d = d.sort_values("time_utc")
        y, p = d["truth_km"].to_numpy(float), d["pred_km"].to_numpy(float)
        n, key = len(y), (model, int(s), fl)
        ku = _k_used(n, k)
        everything, after_k = np.ones(n, bool), np.arange(n) >= ku
        later = np.arange(n) >= n // 2  # the later half of the flight (online methods have adapted)
        found: list[tuple[str, np.ndarray | float, np.ndarray, int]] = []  # method, half-width, scored, n_cal
        shifts: dict[str, np.ndarray] = {}  # method -> centre shift (km) where it is not the prediction
        steps = {"aci": gamma, "aci_budget": gamma}  # method -> ACI step
        levels: dict[str, np.ndarray] = {}  # online method -> (n,) its miscoverage level a_t
        if key in val and len(val[key]):
            found.append(("validation", conformal_quantile(val[key], alpha), everything, len(val[key])))
        if key in cal and len(cal[key][0]):
            res, grp = cal[key]
            found.append(("flight", flight_halfwidth(res, grp, alpha, "flight"), everything, len(res)))
            found.append(("flight_max", flight_halfwidth(res, grp, alpha, "flight_max"), everything, len(res)))
            found.append(("flight_t", random_effects_halfwidth(res, grp, alpha), everything, len(res)))
            hw_a, levels["aci"] = aci(y, p, res, alpha, gamma)
            found.append(("aci", hw_a, after_k, len(res)))
            budget = np.zeros(n, bool)
            if ku:
                budget[np.unique(np.linspace(0, n - 1, ku).round().astype(int))] = True
            hw_b, levels["aci_budget"] = aci(y, p, res, alpha, gamma, labelled=budget)
            found.append(("aci_budget", hw_b, after_k, len(res)))
            on = aci_centred(y, p, res, grp, alpha)
            shifts["aci_centred"], steps["aci_centred"], levels["aci_centred"] = on.shift, on.gamma, on.level
            found.append(("aci_centred", on.half_width, after_k, len(res)))
        if ku:
            r = y[:ku] - p[:ku]
            q = conformal_quantile(r, alpha)
            found.append(("first_k", q if np.isfinite(q) else float(np.max(np.abs(r))), after_k, ku))
        for method, hw, scored, n_cal in found:
            h = np.broadcast_to(np.asarray(hw, float), (n,))
            c = p + shifts.get(method, 0.0)
            cov, width = interval_coverage(y[scored], c[scored], h[scored])
            cov_late, _ = interval_coverage(y[later], c[later], h[later])
            rows.append(
                {"model": model, "seed": s, "flight": fl, "method": method, "coverage": cov, "width_m": 1000 * width,
                 "coverage_later_half": cov_late, "n_scored": int(scored.sum()), "n_later_half": int(later.sum()),
                 "n_calibration": n_cal, "gamma": steps.get(method, float("nan")),
                 "widest_share": float(np.mean(levels[method][scored] <= 0)) if method in levels else float("nan")}
            )  # fmt: skip
    return pd.DataFrame(rows)


LATER_HALF_BAND = 0.05  # the online check: the later half of every flight within 5 points of nominal


def band_chance(n_later: list[int], nominal: float, band: float = LATER_HALF_BAND) -> float:
    """Chance that one run of an interval covering each sample independently with probability
    ``nominal`` lands within ``band`` of nominal on every flight's later half (``n_later``
    samples each; an empty half passes, as in :func:`interval_summary`).

    The yardstick for the online check: on a few dozen samples even a perfectly calibrated
    interval often misses a 5-point band (12 samples at 90 %: only 11 covered qualifies).
    Misses that cluster along a track make the band harder to hit; ACI's feedback, which
    narrows or widens after each miss, makes it easier than independent misses would.
    """
    chance = 1.0
    for m in n_later:
        lo, hi = math.ceil((nominal - band) * m - 1e-9), math.floor((nominal + band) * m + 1e-9)
        chance *= float(stats.binom.cdf(hi, m, nominal) - stats.binom.cdf(lo - 1, m, nominal)) if m else 1.0
    return chance


def interval_summary(table: pd.DataFrame, nominal: float) -> pd.DataFrame:
    """Per (model, method): worst flight's coverage (the headline) and which flight, mean
    coverage, mean width, width relative to the ``validation`` method, the later half's lowest
    and highest coverage over flights (seeds averaged first); the share of single runs (seeds)
    whose later half is within :data:`LATER_HALF_BAND` of nominal on every flight, and the
    chance of that for one run of a perfectly calibrated interval (:func:`band_chance`); the
    smallest and largest ACI step of an online method, and its mean share of widest intervals."""
    if table.empty:
        return table
    keys = ["model", "method"]
    runs = table.assign(
        in_band=(table["coverage_later_half"] - nominal).abs().le(LATER_HALF_BAND + 1e-9)
        | table["coverage_later_half"].isna()  # an empty later half: nothing to miss
    )
    runs = runs.groupby([*keys, "seed"], sort=False).agg(
        in_band=("in_band", "all"),
        chance=("n_later_half", lambda n: band_chance([int(v) for v in n], nominal)),
    )
    runs = runs.groupby(keys, sort=False).agg(later_half_in_band=("in_band", "mean"), in_band_chance=("chance", "mean"))
    per = table.groupby([*keys, "flight"], sort=False)[["coverage", "width_m", "coverage_later_half"]]
    per = per.mean().reset_index()
    g = per.groupby(keys, sort=False)
    out = g.agg(
        worst_coverage=("coverage", "min"),
        mean_coverage=("coverage", "mean"),
        worst_later_half=("coverage_later_half", "min"),
        best_later_half=("coverage_later_half", "max"),
        mean_width_m=("width_m", "mean"),
    ).reset_index()
    out = out.merge(runs.reset_index(), on=keys)
    if "gamma" in table.columns:  # the ACI steps used (chosen per fold by the recentred method)
        steps = table.groupby(keys, sort=False)["gamma"].agg(gamma_min="min", gamma_max="max")
        out = out.merge(steps.reset_index(), on=keys)
    if "widest_share" in table.columns:
        out = out.merge(table.groupby(keys, sort=False)["widest_share"].mean().reset_index(), on=keys)
    worst = per.loc[g["coverage"].idxmin().to_numpy(), [*keys, "flight"]]
    out = out.merge(worst.rename(columns={"flight": "worst_flight"}), on=keys)
    ref = out[out["method"] == "validation"].set_index("model")["mean_width_m"]
    out["width_vs_validation"] = out["mean_width_m"] / out["model"].map(ref)
    out["nominal"] = nominal
    out["_m"] = out["method"].map(list(METHODS).index)
    return out.sort_values(["model", "_m"]).drop(columns="_m").reset_index(drop=True)


def guarantee_text(n_flights: int, alpha: float) -> str:
    """The guarantee at the level it holds, for a run with ``n_flights`` flights under LOFO."""
    G = n_flights - 1
    return (
        f"Nominal {1 - alpha:.0%}. Samples within a flight are not exchangeable with another flight's, so the "
        f"sample-level guarantee does not reach a new flight; flights are the exchangeable units, and with "
        f"G = {G} training flights per fold a flight-level method can guarantee at most G/(G+1) = {G / (G + 1):.0%} "
        "of new flights (the most extreme of G+1 flights cannot be anticipated from the other G). The "
        f"random-effects interval assumes normal flight biases and pays for estimating their spread from {G} "
        f"flights with Student's t on {G - 1} degrees of freedom: no distribution-free guarantee, and wide. The "
        "online method's guarantee is long-run coverage along a flight, reached only on long flights."
    )


def bands(
    pred: pd.DataFrame,
    cal: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]],
    alpha: float,
    gamma: float = 0.05,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """Half-widths along each flight (time order) of one model's first seed, for the figure:
    method label -> flight -> (n,) km; and, for a method not centred on the prediction, its
    centre shifts in the same layout (``gamma``: plain ACI's step, as :func:`interval_table`)."""
    d0 = pred[pred["seed"] == pred["seed"].min()]
    names = [METHODS[m] for m in ("flight", "aci", "aci_centred")]
    out: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    shifts: dict[str, dict[str, np.ndarray]] = {names[2]: {}}
    for (model, s, fl), d in d0.groupby(["model", "seed", "flight"], sort=False):
        if (model, int(s), fl) not in cal or not len(cal[(model, int(s), fl)][0]):
            continue
        d = d.sort_values("time_utc")
        y, p = d["truth_km"].to_numpy(float), d["pred_km"].to_numpy(float)
        res, grp = cal[(model, int(s), fl)]
        out[names[0]][fl] = np.full(len(d), flight_halfwidth(res, grp, alpha, "flight"))
        out[names[1]][fl] = aci(y, p, res, alpha, gamma)[0]
        on = aci_centred(y, p, res, grp, alpha)
        out[names[2]][fl], shifts[names[2]][fl] = on.half_width, on.shift
    return out, shifts
