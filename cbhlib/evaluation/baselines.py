"""Simple baselines on exactly the folds of the neural models, in the same unit schema.

* ``climatology``: the mean CBH of the fold's training samples.
* ``lcl``: Espy's lifting condensation level (125 m per K of dewpoint depression from
  ERA5 t2m and d2m) plus one offset fitted on the fold's training samples.
* ``gbdt``: HistGradientBoostingRegressor on the physical features (the seed's WP-3).
* ``image_stats_gbdt``: the same trees on calibration-free image statistics.
* ``gbdt_all``: the same trees on physical features and image statistics together.
* ``ridge``, ``ridge_all``: a linear model (ridge, weight chosen by leave-one-out on the
  fit samples) on the physical features, and on physical features plus image statistics.

Every baseline but climatology and LCL has flight-normalised variants (``gbdt_fn``,
``gbdt_fnrun``, ...): inputs standardised within their own flight, the within-flight
anomaly modelled, the level added back (:mod:`cbhlib.evaluation.flightnorm`).

(The neural baselines ``image_stats_mlp`` and ``random_init`` train heads: see ``runner``.)
These models are deterministic: each seed's unit holds the same fit, so their spread over
seeds is exactly zero (reports say so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from cbhlib import threads
from cbhlib.config import Config
from cbhlib.constants import ESPY_KM_PER_K
from cbhlib.data.campaign import Campaign
from cbhlib.data.folds import Fold
from cbhlib.evaluation import imagestats
from cbhlib.evaluation.flightnorm import levels, normalise, split_variant
from cbhlib.evaluation.reports import write_unit
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import Unit, UnitResult, UnitStore, unit_sha

log = logging.getLogger(__name__)

SKLEARN_BASELINES = ("climatology", "lcl", "gbdt", "image_stats_gbdt", "gbdt_all", "ridge", "ridge_all")
ADAPTABLE = ("gbdt", "image_stats_gbdt", "gbdt_all", "ridge", "ridge_all")  # have flight-normalised variants
DESCRIPTIONS = {
    "climatology": "Mean CBH of the training flights",
    "lcl": "Espy LCL from ERA5 t2m/d2m plus an offset fitted on the training flights",
    "gbdt": "HistGradientBoostingRegressor on the physical features",
    "image_stats_gbdt": "HistGradientBoostingRegressor on 13 calibration-free image statistics",
    "gbdt_all": "HistGradientBoostingRegressor on physical features plus image statistics",
    "ridge": "Ridge regression (weight by leave-one-out) on the standardised physical features",
    "ridge_all": "Ridge regression on the standardised physical features plus image statistics",
    "image_stats_mlp": "13 calibration-free image statistics -> the physical_only MLP head",
    "random_init": "The same encoder architecture, untrained (random weights), frozen -> image_only head",
}
GBDT_PARAMS = {
    "max_iter": 200,
    "learning_rate": 0.05,
    "max_leaf_nodes": 15,
    "l2_regularization": 1.0,
    "early_stopping": False,
}
RIDGE_ALPHAS = np.logspace(-3, 4, 15)


@dataclass
class BaselineData:
    """Inputs of the sklearn baselines over all N samples."""

    y: np.ndarray  # (N,) km
    phys: np.ndarray  # (N, K) physical features, NaN allowed
    phys_names: list[str]
    stats: np.ndarray | None = None  # (N, 13) image statistics, or None without images
    key: str = ""  # campaign fingerprint
    flight: np.ndarray | None = None  # (N,) flight of each sample (flight normalisation, nested folds)
    time: np.ndarray | None = None  # (N,) POSIX seconds (running normalisation)


def espy_lcl_km(t2m_k: np.ndarray, d2m_k: np.ndarray) -> np.ndarray:
    """Espy's LCL height above the surface: 125 m per K of dewpoint depression (>= 0)."""
    return np.maximum(ESPY_KM_PER_K * (np.asarray(t2m_k, float) - np.asarray(d2m_k, float)), 0.0)


def _find(names: list[str], short: str) -> int | None:
    return next((i for i, n in enumerate(names) if n == short or n.endswith("/" + short)), None)


Predictor = Callable[[np.ndarray], np.ndarray]  # fit indices -> predictions for all N samples


def _gbdt() -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(**GBDT_PARAMS, random_state=0)


def _ridge() -> Pipeline:
    """Median imputation, standardisation, ridge with its weight chosen by leave-one-out on the fit samples."""
    return make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS)
    )


def sklearn_estimator(name: str) -> HistGradientBoostingRegressor | Pipeline:
    """The unfitted scikit-learn estimator of a plain sklearn baseline (``gbdt``, ``ridge_all``, ...)."""
    if name not in ADAPTABLE:
        raise ValueError(f"'{name}' is not a scikit-learn baseline; choose from {', '.join(ADAPTABLE)}")
    return _ridge() if name.startswith("ridge") else _gbdt()


def _inputs(name: str, d: BaselineData) -> np.ndarray:
    """The feature matrix a baseline reads. Raises ValueError naming what the campaign lacks."""
    needs_stats = name in ("image_stats_gbdt", "gbdt_all", "ridge_all")
    needs_phys = name in ("gbdt", "gbdt_all", "ridge", "ridge_all")
    if needs_stats and d.stats is None:
        raise ValueError(f"the {name} baseline needs images; the campaign has none")
    if needs_phys and d.phys.shape[1] == 0:
        raise ValueError(f"the {name} baseline needs physical features; the campaign has none")
    if needs_stats and needs_phys:
        return np.concatenate([d.phys, d.stats], axis=1)  # type: ignore[list-item]
    return d.stats if needs_stats else d.phys  # type: ignore[return-value]


def make_predictor(
    name: str, d: BaselineData, how: str = "none", level: str = "training", warmup: int = 10
) -> Predictor:
    """A baseline by name, optionally flight-normalised (:mod:`cbhlib.evaluation.flightnorm`).

    Args:
        how: ``none``; or ``flight`` / ``running``: inputs standardised within their own
            flight, the model fits the within-flight anomaly, predictions add the level.
        level, warmup: see :func:`cbhlib.evaluation.flightnorm.levels` and ``normalise``.

    Raises:
        ValueError: the campaign lacks what the baseline needs (stated in the message).
    """
    if name in ("climatology", "lcl") and how != "none":
        raise ValueError(f"the {name} baseline has no flight-normalised variant")
    if name == "climatology":
        return lambda fit: np.full(len(d.y), float(np.mean(d.y[fit])))
    if name == "lcl":
        it, idd = _find(d.phys_names, "t2m"), _find(d.phys_names, "d2m")
        if it is None or idd is None:
            raise ValueError("the lcl baseline needs t2m and d2m features")
        base = espy_lcl_km(d.phys[:, it], d.phys[:, idd])

        def lcl(fit: np.ndarray) -> np.ndarray:
            ok = np.isfinite(base[fit])
            offset = float(np.median(d.y[fit][ok] - base[fit][ok])) if ok.any() else 0.0
            return np.where(np.isfinite(base), base + offset, float(np.mean(d.y[fit])))

        return lcl
    if name not in SKLEARN_BASELINES:
        raise ValueError(f"unknown baseline '{name}'; choose from {', '.join(SKLEARN_BASELINES)}")
    X = _inputs(name, d)
    if how == "none":

        def plain(fit: np.ndarray) -> np.ndarray:
            with threads.openmp_limits():  # fewer OpenMP threads while other processes hold cores
                return sklearn_estimator(name).fit(X[fit], d.y[fit]).predict(X)

        return plain
    if d.flight is None:
        raise ValueError(f"the flight-normalised {name} needs each sample's flight")
    Xn = normalise(X, d.flight, d.time, how, warmup)  # label-free: each flight's own inputs

    def adapted(fit: np.ndarray) -> np.ndarray:
        lv = levels(d.y, d.flight, fit, X, level)  # type: ignore[arg-type]
        with threads.openmp_limits():
            return lv + sklearn_estimator(name).fit(Xn[fit], d.y[fit] - lv[fit]).predict(Xn)

    return adapted


def out_of_flight(predict: Predictor, fit: np.ndarray, flight: np.ndarray) -> np.ndarray:
    """Predictions for each fit sample by a model fitted without its flight (nested leave-one-flight-out).

    The residuals of these predictions carry between-flight shift, so intervals calibrated on
    them can hold on a new flight (:mod:`cbhlib.evaluation.intervals`). (len(fit),) km, NaN
    where only one flight is fitted.
    """
    fit = np.asarray(fit, np.int64)
    out = np.full(len(fit), np.nan)
    groups = flight[fit]
    if len(np.unique(groups)) < 2:
        return out
    for g in np.unique(groups):
        inside = groups == g
        out[inside] = predict(fit[~inside])[fit[inside]]
    return out


def run_baseline(
    name: str,
    d: BaselineData,
    folds: list[Fold],
    protocol: str,
    seeds: list[int],
    store: UnitStore,
    level: str = "training",
    warmup: int = 10,
    nested: bool = True,
) -> list[UnitResult]:
    """Score a baseline (or its flight-normalised variant, e.g. ``gbdt_fn``) on every fold;
    one unit per (fold, seed), reused when unchanged.

    Baselines fit on training plus validation samples (they need no early stopping).
    Under LOFO they also keep, for interval calibration on the training flights only:
    validation-side predictions (refit without the validation samples) and, with
    ``nested``, each training sample's prediction by a model fitted without its flight.
    """
    base, how = split_variant(name)
    predict = make_predictor(base, d, how, level, warmup)
    settings = {"gbdt": GBDT_PARAMS, "ridge": RIDGE_ALPHAS.tolist(), "how": how, "level": level, "warmup": warmup}
    nested = nested and protocol == "lofo" and d.flight is not None
    out = []
    for fold in folds:
        units = [Unit(name, protocol, fold, s) for s in seeds]
        shas = [
            unit_sha(name, settings, nested, d.key, d.phys_names, fold.fit_idx, fold.test_idx, fold.val_idx, s)
            for s in seeds
        ]
        done = [store.load(u, sha) for u, sha in zip(units, shas, strict=True)]
        if all(r is not None for r in done):
            out.extend(done)  # type: ignore[arg-type]
            continue
        pred = predict(fold.fit_idx)
        val_pred = predict(fold.train_idx)[fold.val_idx] if protocol == "lofo" and len(fold.val_idx) else np.array([])
        cal = out_of_flight(predict, fold.fit_idx, d.flight) if nested else None  # type: ignore[arg-type]
        for u, sha, r in zip(units, shas, done, strict=True):
            out.append(
                r
                if r is not None
                else write_unit(
                    u,
                    sha,
                    name,
                    d.y,
                    val_pred,
                    pred[fold.test_idx],
                    store,
                    feature_names=d.phys_names,
                    cal=(fold.fit_idx, cal) if cal is not None else None,
                )
            )
    return out


def baseline_data(camp: Campaign, cfg: Config, run: RunDir, with_stats: bool = True) -> BaselineData:
    """Labels, physical features and (with images) image statistics for the baselines."""
    X, names = camp.feature_matrix(cfg.feature_groups or None)
    stats = imagestats.campaign_statistics(camp, run.cache) if with_stats and camp.has_images else None
    return BaselineData(camp.cbh_km.astype(np.float64), X, names, stats, camp.fingerprint(), camp.flight, camp.time_utc)
