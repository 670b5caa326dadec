"""Label-free flight adaptation: the normaliser and the level never see a held-out label, and
``running`` never sees a later sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cbhlib.config import TrainConfig
from cbhlib.data.campaign import Campaign
from cbhlib.data.folds import lofo_folds
from cbhlib.evaluation.baselines import BaselineData, make_predictor
from cbhlib.evaluation.flightnorm import levels, normalise, split_variant, variant
from cbhlib.models.fusion import HeadConfig
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import Unit, UnitStore
from cbhlib.training.heads import TrainInputs, train_units
from cbhlib.training.inputs import flight_normalised


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flight = np.repeat([0, 1, 2], [30, 20, 25])
    X = rng.normal(size=(75, 3)) + np.array([5.0, -2.0, 0.0]) * flight[:, None]  # flight-level offsets
    X[rng.random(X.shape) < 0.1] = np.nan
    return X, flight, np.arange(75, dtype=float)


def test_flight_normalisation_standardises_each_flight_from_its_own_inputs() -> None:
    X, flight, t = _data()
    Z = normalise(X, flight, t, "flight")
    for k in range(3):
        z = Z[flight == k]
        np.testing.assert_allclose(np.nanmean(z, 0), 0, atol=1e-9)
        np.testing.assert_allclose(np.nanstd(z, 0), 1, atol=1e-9)
    assert np.array_equal(np.isnan(Z), np.isnan(X))  # missing stays missing
    X2 = X.copy()
    X2[flight == 2] *= 10  # another flight's inputs change: this flight's normalised inputs do not
    np.testing.assert_array_equal(normalise(X2, flight, t, "flight")[flight != 2], Z[flight != 2])


def test_running_normalisation_never_uses_a_later_sample() -> None:
    X, flight, t = _data(1)
    Z = normalise(X, flight, t, "running", warmup=5)
    members = np.flatnonzero(flight == 1)
    for cut in (7, 12, 19):
        X2 = X.copy()
        X2[members[cut:]] = np.random.default_rng(cut).normal(50, 9, X2[members[cut:]].shape)
        Z2 = normalise(X2, flight, t, "running", warmup=5)
        np.testing.assert_array_equal(Z2[members[:cut]], Z[members[:cut]])
    assert np.all(Z[members[:5]][np.isfinite(X[members[:5]])] == 0)  # warm-up: no anomaly yet
    # time order, not file order, defines "later"
    perm = np.random.default_rng(2).permutation(75)
    np.testing.assert_allclose(normalise(X[perm], flight[perm], t[perm], "running", 5), Z[perm])


def test_levels_read_only_the_fit_labels() -> None:
    X, flight, _ = _data()
    y = np.linspace(0.2, 1.5, 75)
    fit = np.flatnonzero(flight != 1)
    lv = levels(y, flight, fit)
    assert np.allclose(lv[flight == 0], y[flight == 0].mean()) and np.allclose(lv[flight == 2], y[flight == 2].mean())
    assert np.allclose(lv[flight == 1], y[fit].mean())  # the new flight gets the training level
    for level in ("training", "inputs"):
        y2 = y.copy()
        y2[flight == 1] = 99.0  # the held-out flight's labels cannot move any level
        np.testing.assert_array_equal(levels(y2, flight, fit, X, level), levels(y, flight, fit, X, level))


def test_variant_names_round_trip() -> None:
    assert variant("gbdt_all", "flight") == "gbdt_all_fn" and split_variant("gbdt_all_fn") == ("gbdt_all", "flight")
    assert split_variant("concat_fnrun") == ("concat", "running") and split_variant("gbdt") == ("gbdt", "none")


@pytest.mark.parametrize("how", ["flight", "running"])
def test_a_flight_normalised_baseline_never_sees_the_held_out_labels(tiny_campaign: Path, how: str) -> None:
    camp = Campaign(tiny_campaign)
    X, names = camp.feature_matrix()
    y = camp.cbh_km.astype(float)
    for f in lofo_folds(camp):
        y2 = y.copy()
        y2[f.test_idx] = np.random.default_rng(0).uniform(0, 5, len(f.test_idx))  # other held-out labels
        preds = []
        for labels in (y, y2):
            d = BaselineData(labels, X, names, key="k", flight=camp.flight, time=camp.time_utc)
            preds.append(make_predictor("gbdt", d, how)(f.fit_idx)[f.test_idx])
        np.testing.assert_array_equal(preds[0], preds[1])


def test_a_flight_normalised_head_never_sees_the_held_out_labels(tiny_campaign: Path, tmp_path: Path) -> None:
    camp = Campaign(tiny_campaign)
    X, names = camp.feature_matrix()
    folds = lofo_folds(camp)
    out = []
    for k, labels in enumerate((camp.cbh_km.astype(float), None)):
        if labels is None:  # every held-out label changed: the held-out predictions must not move
            labels = camp.cbh_km.astype(float).copy()
            labels[folds[1].test_idx] += 3.0
        inputs = TrainInputs(labels, X, names, key="tiny")
        inputs = flight_normalised(inputs, camp.flight, camp.time_utc, "flight", 10, "training")
        units = [Unit("physical_only_fn", "lofo", folds[1], 0)]
        res = train_units(
            inputs,
            units,
            "physical_only",
            TrainConfig(epochs=3),
            HeadConfig(),
            UnitStore(RunDir(tmp_path / str(k))),
            progress=False,
        )
        out.append(np.asarray(res[0].pred))
    np.testing.assert_array_equal(out[0], out[1])


def test_nested_folds_never_hold_the_left_out_or_the_held_out_flight(tiny_campaign: Path) -> None:
    from cbhlib.training.runner import NESTED_BASE, nested_folds

    camp = Campaign(tiny_campaign)
    folds = lofo_folds(camp)
    nested = nested_folds(camp, folds)
    assert len(nested) == len(folds) * (camp.n_flights - 1)
    for nf in nested:
        outer, g = folds[nf.fold_id // NESTED_BASE], nf.fold_id % NESTED_BASE
        seen = camp.flight[np.concatenate([nf.train_idx, nf.val_idx])]
        assert g not in seen and camp.flight[outer.test_idx[0]] not in seen
        assert set(camp.flight[nf.test_idx]) == {g}


def test_interval_calibration_never_reads_the_held_out_flights_labels(tiny_campaign: Path) -> None:
    from cbhlib.evaluation.baselines import out_of_flight

    camp = Campaign(tiny_campaign)
    X, names = camp.feature_matrix()
    y = camp.cbh_km.astype(float)
    f = lofo_folds(camp)[0]
    outs = []
    for labels in (y, np.where(np.isin(np.arange(len(y)), f.test_idx), 50.0, y)):
        d = BaselineData(labels, X, names, key="k", flight=camp.flight, time=camp.time_utc)
        outs.append(out_of_flight(make_predictor("gbdt", d, "flight"), f.fit_idx, camp.flight))
    np.testing.assert_array_equal(outs[0], outs[1])
    # each calibration prediction comes from a model that did not see its own flight's labels either
    g = camp.flight[f.fit_idx[0]]
    y3 = np.where(camp.flight == g, y + 7.0, y)
    d3 = BaselineData(y3, X, names, key="k", flight=camp.flight, time=camp.time_utc)
    third = out_of_flight(make_predictor("gbdt", d3, "flight"), f.fit_idx, camp.flight)
    own = camp.flight[f.fit_idx] == g
    np.testing.assert_array_equal(third[own], outs[0][own])


def test_a_rerun_gives_the_same_numbers_bit_for_bit(tiny_campaign: Path, tmp_path: Path) -> None:
    """Two runs of the same settings on the same machine: identical predictions, verdicts and intervals."""
    from cbhlib.config import load_config
    from cbhlib.evaluation import compare, intervals
    from cbhlib.evaluation.results import headline_table, load_predictions
    from cbhlib.training.runner import run_mode

    outs = []
    for k in range(2):
        run_dir = tmp_path / f"run{k}"
        cfg = load_config(
            overrides={"campaign": str(tiny_campaign), "run_dir": str(run_dir), "seeds": [0, 1], "protocols": ["lofo"],
                       "threads": 1, "train.epochs": 3, "progress": False, "compare.bootstrap_reps": 100,
                       "compare.baselines": ["climatology", "gbdt"], "train.flight_norm": "flight"}
        )  # fmt: skip
        camp = Campaign(tiny_campaign)
        run_mode(cfg, "physical_only", camp)
        compare.run_baselines(cfg, camp, RunDir(run_dir))
        pred = load_predictions(RunDir(run_dir), camp)
        table = compare.comparisons(pred, cfg, headline=headline_table(pred))
        models = sorted(pred["model"].unique())
        cal = compare.flight_residuals(RunDir(run_dir), camp, models)
        conf = intervals.interval_table(pred, {}, cal, 0.1, 5)
        outs.append((pred.drop(columns=[]).reset_index(drop=True), table, conf))
    (p0, t0, c0), (p1, t1, c1) = outs
    assert {"physical_only_fn", "gbdt_fn", "climatology"} <= set(p0["model"])
    pd.testing.assert_frame_equal(p0, p1, check_exact=True)
    pd.testing.assert_frame_equal(t0, t1, check_exact=True)
    pd.testing.assert_frame_equal(c0, c1, check_exact=True)


@pytest.mark.parametrize("name", ["gbdt", "ridge"])
def test_nested_intervals_of_a_baseline_are_mapies_cross_conformal_with_flights_as_groups(
    tiny_campaign: Path, name: str
) -> None:
    """The flight-aware residuals (each training sample predicted by a model fitted without its
    flight) and the conformal quantile reproduce MAPIE's cross-conformal intervals
    (``method='base'``, leave-one-group-out CV over flights): the reference library pins the nested refits."""
    from mapie.regression import CrossConformalRegressor
    from sklearn.model_selection import LeaveOneGroupOut

    from cbhlib.evaluation.baselines import out_of_flight, sklearn_estimator
    from cbhlib.evaluation.intervals import conformal_quantile

    camp = Campaign(tiny_campaign)
    X, names = camp.feature_matrix()
    y = camp.cbh_km.astype(float)
    d = BaselineData(y, X, names, key="k", flight=camp.flight, time=camp.time_utc)
    predict = make_predictor(name, d)
    for f in lofo_folds(camp)[:2]:
        pred = predict(f.fit_idx)[f.test_idx]
        q = conformal_quantile(y[f.fit_idx] - out_of_flight(predict, f.fit_idx, camp.flight), 0.1)
        ref = CrossConformalRegressor(
            sklearn_estimator(name), confidence_level=0.9, method="base", cv=LeaveOneGroupOut()
        )
        ref.fit_conformalize(X[f.fit_idx], y[f.fit_idx], groups=camp.flight[f.fit_idx])
        point, iv = ref.predict_interval(X[f.test_idx])
        np.testing.assert_allclose(point, pred, atol=1e-5)
        np.testing.assert_allclose(iv[:, 0, 0], pred - q, atol=1e-5)
        np.testing.assert_allclose(iv[:, 1, 0], pred + q, atol=1e-5)
        assert q > 0.05  # a real spread of out-of-flight residuals, not a degenerate zero
