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
  the training flights as new ones (:mod:`cbhlib.evaluation.intervals.online`): a shifted flight is recentred
  instead of covered by ever wider intervals, a calm one narrows.

Each interval is computed before its sample's label is used; the online methods and
``first_k`` are scored on the same samples (those after the first k).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from cbhlib.evaluation.intervals.online import OnlineFit, aci, aci_centred, fit_centred

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
    "flight_t": "random effects (t):\ncbh predict --intervals",
    "first_k": "first k labels",
    "aci": "online ACI",
    "aci_budget": "online ACI, k labels",
    "aci_centred": "online ACI, recentred + rescaled:\ncbh predict --intervals online",
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
    fits: dict[bytes, OnlineFit] = {}  # the recentred method's fit per set of training residuals: a head's
    # nested residuals (and a deterministic baseline's) serve every seed, and the replay is the costly part
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
            fk = np.asarray(res, float).tobytes() + np.asarray(grp).tobytes()
            if fk not in fits:
                fits[fk] = fit_centred(res, grp, alpha)
            on = aci_centred(y, p, res, grp, alpha, fit=fits[fk])
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


def _in_band_counts(n: int, nominal: float, band: float = LATER_HALF_BAND) -> range:
    """Covered counts of an ``n``-sample later half that lie within ``band`` of ``nominal``."""
    return range(math.ceil((nominal - band) * n - 1e-9), math.floor((nominal + band) * n + 1e-9) + 1)


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
        r = _in_band_counts(m, nominal, band)
        hit = stats.binom.cdf(r.stop - 1, m, nominal) - stats.binom.cdf(r.start - 1, m, nominal)
        chance *= float(hit) if m else 1.0
    return chance


def _out_of_band(table: pd.DataFrame, per: pd.DataFrame, keys: list[str], nominal: float) -> pd.DataFrame:
    """Per (model, method): ``later_half_out``, the flights whose seed-mean later half lies
    outside the band ("18Feb25 98.3%", comma-separated; "" when none), and ``narrow_band``, the
    flights on which a single run has at most one covered count in the band
    ("18Feb25 (later half of 12 samples: only 11 covered)")."""
    n = table.groupby("flight")["n_later_half"].max()
    narrow = {f: r for f, m in n.items() if m and len(r := _in_band_counts(int(m), nominal)) <= 1}
    out = per.assign(
        off=(per["coverage_later_half"] - nominal).abs().gt(LATER_HALF_BAND + 1e-9) & per["coverage_later_half"].notna()
    )
    out["text"] = out["flight"].astype(str) + " " + out["coverage_later_half"].map(lambda c: f"{c:.1%}")
    rows = []
    for key, d in out.groupby(keys, sort=False):
        flights = set(d["flight"])
        rows.append(
            dict(zip(keys, key, strict=True))
            | {
                "later_half_out": ", ".join(d.loc[d["off"], "text"]),
                "narrow_band": ", ".join(
                    f"{f} (later half of {int(n[f])} samples: {f'only {r.start} covered' if len(r) else 'no count'})"
                    for f, r in narrow.items()
                    if f in flights
                ),
            }
        )
    return pd.DataFrame(rows, columns=[*keys, "later_half_out", "narrow_band"])


def interval_summary(table: pd.DataFrame, nominal: float) -> pd.DataFrame:
    """Per (model, method): worst flight's coverage (the headline), which flight and its scored samples, mean
    coverage, mean width, width relative to the ``validation`` method, the later half's lowest
    and highest coverage over flights (seeds averaged first); the share of single runs (seeds)
    whose later half is within :data:`LATER_HALF_BAND` of nominal on every flight, and the
    chance of that for one run of a perfectly calibrated interval (:func:`band_chance`); the
    smallest and largest ACI step of an online method, and its mean share of widest intervals;
    the flights out of the band on seed means, and those too short for a band wider than one count."""
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
    per = table.groupby([*keys, "flight"], sort=False)[["coverage", "width_m", "coverage_later_half", "n_scored"]]
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
    out = out.merge(_out_of_band(table, per, keys, nominal), on=keys)
    worst = per.loc[g["coverage"].idxmin().to_numpy(), [*keys, "flight", "n_scored"]]
    worst = worst.rename(columns={"flight": "worst_flight", "n_scored": "worst_n"})
    out = out.merge(worst.assign(worst_n=worst["worst_n"].round().astype(int)), on=keys)
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
    pred: pd.DataFrame, cal: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]], alpha: float
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """Half-widths along each flight (time order) of one model's first seed, for the figure:
    method label -> flight -> (n,) km, the label-free interval ``cbh predict --intervals``
    writes (``flight_t``) first, then the recentred online one; and the online one's centre
    shifts in the same layout."""
    d0 = pred[pred["seed"] == pred["seed"].min()]
    names = [
        "label-free: random effects over flights, Student t (cbh predict --intervals)",
        "online: ACI recentred and rescaled on the labels so far (needs lidar)",
    ]
    out: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    shifts: dict[str, dict[str, np.ndarray]] = {names[1]: {}}
    for (model, s, fl), d in d0.groupby(["model", "seed", "flight"], sort=False):
        if (model, int(s), fl) not in cal or not len(cal[(model, int(s), fl)][0]):
            continue
        d = d.sort_values("time_utc")
        y, p = d["truth_km"].to_numpy(float), d["pred_km"].to_numpy(float)
        res, grp = cal[(model, int(s), fl)]
        out[names[0]][fl] = np.full(len(d), flight_halfwidth(res, grp, alpha, "flight_t"))
        on = aci_centred(y, p, res, grp, alpha)
        out[names[1]][fl], shifts[names[1]][fl] = on.half_width, on.shift
    return out, shifts


def interval_label(method: str, alpha: float) -> str:
    """An interval's name in the tables: its method and nominal coverage (``flight_t 87.5%``)."""
    return f"{method} {100 * (1 - alpha):.4g}%"


def with_bounds(
    pred: pd.DataFrame, cal: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]], alpha: float
) -> pd.DataFrame:
    """The tidy predictions with the label-free interval ``cbh predict --intervals`` writes
    (``flight_t``) on every leave-one-flight-out row whose unit has out-of-flight residuals in
    ``cal`` (the report's calibration of that unit: a head's seeds share the first seed's
    nested residuals; never a label of the held-out flight): ``lower_km``, ``upper_km`` and
    ``interval`` (e.g. ``flight_t 90%``, as ``cbh predict`` labels it); missing elsewhere
    (random splits, no nested residuals). Rows keep their order and index."""
    out = pred.copy()
    lower, upper = np.full(len(out), np.nan), np.full(len(out), np.nan)
    label = np.full(len(out), None, dtype=object)
    p = out["pred_km"].to_numpy(float)
    for (protocol, model, s, fl), rows in out.groupby(
        ["protocol", "model", "seed", "flight"], sort=False
    ).indices.items():
        key = (model, int(s), fl)  # rows: positions, whatever the index
        if protocol != "lofo" or key not in cal or not len(cal[key][0]):
            continue
        lower[rows], upper[rows] = bounds(p[rows], random_effects_halfwidth(*cal[key], alpha))
        label[rows] = interval_label("flight_t", alpha)
    out["lower_km"], out["upper_km"], out["interval"] = lower, upper, label
    return out
