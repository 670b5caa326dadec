"""Intervals on a campaign that ``cbh predict`` applies a run's heads to.

Every method calibrates on the run's nested heads: each was trained without one training flight
(and without its outer held-out flight) and scored on that flight, so its residuals carry the
shift between flights. The label-free methods (``flight_t``, ``flight``, ``flight_max``) read no
label of the new campaign. ``online`` reads the new flight's lidar labels as they arrive: each
sample's interval comes from the labels before it in time (:func:`online.aci_centred`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cbhlib.constants import NESTED_BASE, NESTED_PROTOCOL
from cbhlib.errors import CbhError
from cbhlib.evaluation.intervals import bounds, flight_halfwidth
from cbhlib.evaluation.intervals.online import OnlineFit, aci_centred, fit_centred
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import UnitStore

ONLINE = "online"  # the method that needs the new flight's labels, as they arrive


def calibration_residuals(run: RunDir, model: str) -> pd.DataFrame:
    """Out-of-flight residuals of a run's nested heads (each trained without the flight it is scored
    on, and without its outer held-out flight): fold (outer), seed, flight (the left-out one),
    residual_km; in time order within each (fold, seed, flight)."""
    rows = [
        pd.DataFrame(
            {
                "fold": u.fold_id // NESTED_BASE,
                "seed": u.seed,
                "flight": u.fold_id % NESTED_BASE,
                "residual_km": np.asarray(u.true, float) - np.asarray(u.pred, float),
            }
        )  # fmt: skip
        for u in UnitStore(run).read_all(model, NESTED_PROTOCOL)
    ]
    if not rows:
        raise CbhError(
            f"{run.root}: intervals: expected the nested heads of {model} (train.nested, under leave-one-flight-out); "
            "found none: rerun the model's step, or predict without --intervals"
        )
    return pd.concat(rows, ignore_index=True)


def _groups(res: pd.DataFrame, method: str) -> np.ndarray:
    """``flight_t`` counts distinct flights (its degrees of freedom); the other label-free methods
    take each (outer fold, left-out flight) as one group; ``online`` replays each (seed, outer fold,
    left-out flight) as one flight, its residuals in time order."""
    if method == "flight_t":
        return res["flight"].to_numpy()
    if method == ONLINE:
        return res.groupby(["seed", "fold", "flight"], sort=False).ngroup().to_numpy()
    return res["fold"].to_numpy() * NESTED_BASE + res["flight"].to_numpy()


def halfwidth(res: pd.DataFrame, alpha: float, method: str) -> float:
    """One label-free half-width (km) from :func:`calibration_residuals` rows."""
    return flight_halfwidth(res["residual_km"].to_numpy(), _groups(res, method), alpha, method)


class Intervals:
    """``1 - alpha`` intervals of one method, calibrated on one run's nested residuals.

    ``online`` follows :func:`online.aci_centred` along each flight, with two changes for labels
    that arrive part of the way, both from earlier arrivals only: before its flight's first label a
    sample gets the label-free ``flight_t`` interval (the recentred one would start from the
    training flights' pooled spread, which a shifted flight's first samples escape), and a sample
    whose previous sample brought no label gets the nominal level (``reset``: ACI's swings act
    while labels come one after another, not across gaps). With every label present it is the
    method the comparison scores; with gaps it was not scored there.

    Args:
        res: :func:`calibration_residuals` of the run's model.
        method: ``flight_t``, ``flight``, ``flight_max`` or ``online``.
        labels: (n,) the new campaign's lidar labels (km), NaN where none has arrived; ``online`` only.
    """

    def __init__(self, res: pd.DataFrame, alpha: float, method: str, labels: np.ndarray | None = None) -> None:
        if (method == ONLINE) != (labels is not None):
            raise ValueError("labels: expected with the online method, and only with it")
        self.res, self.alpha, self.method, self.labels = res, alpha, method, labels
        self._fits: dict[tuple[int, ...], OnlineFit] = {}  # the replay is the costly part: once per set of folds

    def bounds(
        self, pred: np.ndarray, flights: np.ndarray, folds: tuple[int, ...] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) (n,) km around predictions ``pred`` (n,) of the samples of ``flights`` (n,)
        (the campaign's samples, in its order: time order within each flight), from the residuals
        of the outer ``folds`` (default all; a fold without nested residuals: all)."""
        res = self.res if folds is None else self.res[self.res["fold"].isin(folds)]
        if not len(res):
            res = self.res
        if self.method != ONLINE:
            return bounds(pred, halfwidth(res, self.alpha, self.method))
        key, r, g = tuple(sorted(set(res["fold"].tolist()))), res["residual_km"].to_numpy(), _groups(res, ONLINE)
        if key not in self._fits:
            self._fits[key] = fit_centred(r, g, self.alpha)
        free = halfwidth(res, self.alpha, "flight_t")  # before a flight's first label
        lo, hi = np.empty(len(pred)), np.empty(len(pred))
        y, before = np.asarray(self.labels, float), self.arrival(flights)["labels_before"].to_numpy()
        for fl in dict.fromkeys(np.asarray(flights).tolist()):
            at = np.flatnonzero(np.asarray(flights) == fl)
            on = aci_centred(
                y[at], pred[at], r, g, self.alpha, fit=self._fits[key], labelled=np.isfinite(y[at]), reset=True
            )
            none = before[at] == 0
            lo[at], hi[at] = bounds(pred[at] + on.shift, np.where(none, free, on.half_width))
        return lo, hi

    def arrival(self, flights: np.ndarray) -> pd.DataFrame:
        """Per sample (n rows): ``labels_before``, how many of its flight's labels its online interval
        learnt from, and ``samples_since_label``, how far back the latest of them is (NA: none yet)."""
        known = np.isfinite(np.asarray(self.labels, float))
        before, since = np.zeros(len(flights), int), np.full(len(flights), -1)
        for fl in dict.fromkeys(np.asarray(flights).tolist()):
            at = np.flatnonzero(np.asarray(flights) == fl)
            k = known[at]
            before[at] = np.cumsum(k) - k
            latest = np.maximum.accumulate(np.where(k, np.arange(len(at)), -1))  # the latest label at or before
            prev = np.concatenate([[-1], latest[:-1]])
            since[at] = np.where(prev >= 0, np.arange(len(at)) - prev, -1)
        return pd.DataFrame(
            {"labels_before": before, "samples_since_label": pd.array(np.where(since >= 0, since, None), "Int64")}
        )


SCORED_AS = {"flight_t": "flight_t", "flight": "flight", "flight_max": "flight_max", ONLINE: "aci_centred"}


def held_out_record(run: RunDir, model: str, method: str, level: float) -> str:
    """One line: how ``model``'s ``method`` intervals held on the run's held-out flights, as the
    comparison scored them for single heads (worst flight and mean width over seed means; the
    online one with every label arriving, scored after the first k labels as first k is, and its
    later halves), or what to run to score them."""
    path, per_flight = run.table("comparison_intervals_summary"), run.table("comparison_intervals")
    if not (path.exists() and per_flight.exists()):
        return (
            f"{run.root}: no held-out record of these intervals (the compare step scores them: cbh run --only compare)"
        )
    s = pd.read_csv(path)
    s = s[(s["model"] == model) & (s["method"] == SCORED_AS[method])]
    if s.empty:
        return f"{path}: no held-out record of {model}'s {method} intervals (scored by an older compare step?)"
    r, t = s.iloc[0], pd.read_csv(per_flight)
    t = t[t["model"] == model]
    F, worst = t["flight"].nunique(), t[t["flight"] == r["worst_flight"]]
    text = f"held-out record of single heads ({path}: leave-one-flight-out, {F} flights x {t['seed'].nunique()} seeds"
    if method == ONLINE:
        k = worst.loc[worst["method"] == "first_k", "n_calibration"]
        n = worst.loc[worst["method"] == SCORED_AS[method], "n_scored"].mean()
        text += (
            f", every label arriving, nominal {r['nominal']:.0%}): worst flight {r['worst_flight']} covered "
            f"{r['worst_coverage']:.1%} of its {n:.0f} samples after the first {k.max() if len(k) else 0:.0f} labels, "
            f"mean width {r['mean_width_m']:.0f} m; later halves {r['worst_later_half']:.1%} to "
            f"{r['best_later_half']:.1%}"
        )
    else:
        text += (
            f", nominal {r['nominal']:.0%}): worst flight {r['worst_flight']} covered {r['worst_coverage']:.1%}, "
            f"mean width {r['mean_width_m']:.0f} m; a flight-level method promises at most {F - 1}/{F} of new flights"
        )
    if abs(level - r["nominal"]) > 1e-9:
        text += f" (scored at {r['nominal']:.0%}, not the {100 * level:.4g}% asked)"
    return text
