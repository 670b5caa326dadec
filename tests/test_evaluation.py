"""Metrics, baselines, few-shot adaptation and conformal intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from cbhlib.baselines import BASELINES, espy_lcl_km, run_baseline
from cbhlib.campaign import Campaign
from cbhlib.compare import conformal_table, few_shot, few_shot_curve, few_shot_split, run_baselines
from cbhlib.conformal import conformal_quantile, interval_coverage
from cbhlib.data import lofo_folds
from cbhlib.metrics import aggregate, regression_metrics
from cbhlib.reports import build_report


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.normal(1, 0.3, 50), rng.normal(1, 0.3, 50)
    m = regression_metrics(y, p)
    assert m["r2"] == pytest.approx(r2_score(y, p))
    assert m["mae_km"] == pytest.approx(mean_absolute_error(y, p))
    assert m["rmse_km"] == pytest.approx(np.sqrt(mean_squared_error(y, p)))


def test_pooled_differs_from_mean_of_folds() -> None:
    # two folds, each predicted by its own mean: fold R2 = 0 each; pooled R2 is high
    y1, y2 = np.array([0.2, 0.3, 0.4]), np.array([1.2, 1.3, 1.4])
    folds = [regression_metrics(y1, np.full(3, y1.mean())), regression_metrics(y2, np.full(3, y2.mean()))]
    agg = aggregate(folds, np.r_[y1, y2], np.r_[np.full(3, y1.mean()), np.full(3, y2.mean())])
    assert agg["mean_r2"] == pytest.approx(0.0)
    assert agg["pooled_r2"] == pytest.approx(r2_score(np.r_[y1, y2], np.r_[np.full(3, 0.3), np.full(3, 1.3)]))
    assert agg["pooled_r2"] > 0.9 and agg["n_predictions"] == 6


def test_espy_lcl_on_a_known_sounding() -> None:
    # 8 K of dewpoint depression -> 1.0 km (125 m/K); saturated air -> 0
    np.testing.assert_allclose(espy_lcl_km(np.array([293.15, 280.0]), np.array([285.15, 280.0])), [1.0, 0.0])


def test_baselines_write_the_report_schema(tiny_campaign: Path, tmp_path: Path) -> None:
    camp = Campaign(tiny_campaign)
    reports = run_baselines(camp, ["lofo"], tmp_path)
    assert {name for name, _ in reports} == set(BASELINES)
    for (name, _), rep in reports.items():
        assert rep["model_variant"] == name and len(rep["fold_results"]) == 5
        assert (tmp_path / f"report_{name}.json").exists() and (tmp_path / f"predictions_{name}.csv").exists()
        assert np.isfinite(rep["aggregate_metrics"]["pooled_r2"])


def test_climatology_is_the_training_mean(tiny_campaign: Path) -> None:
    camp = Campaign(tiny_campaign)
    folds = lofo_folds(camp)
    units = run_baseline("climatology", camp, folds, "lofo")
    for f, u in zip(folds, units):
        assert u["pred"][0] == pytest.approx(float(camp.cbh_km[f.fit_idx].astype(float).mean()))


def _lofo_pred(n_per: tuple[int, ...] = (60, 40, 12), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k, n in enumerate(n_per):
        y = rng.normal(0.8, 0.3, n)
        rows.append(pd.DataFrame({"flight": f"F{k}", "true_km": y, "pred_km": y + 0.2 * k + rng.normal(0, 0.1, n)}))
    return pd.concat(rows, ignore_index=True)


def test_few_shot_k0_is_plain_lofo_and_shots_are_never_scored() -> None:
    pred = _lofo_pred()
    fs = few_shot(pred, ks=(0, 5, 10, 20, 50), repeats=3, model="m")
    per_flight = [r2_score(d["true_km"], d["pred_km"]) for _, d in pred.groupby("flight", sort=False)]
    curve = few_shot_curve(fs)
    assert curve[curve.k == 0]["r2_mean"].item() == pytest.approx(np.mean(per_flight))
    # recalibration removes the flight offsets: more shots, better
    assert curve[curve.k == 20]["r2_mean"].item() > curve[curve.k == 0]["r2_mean"].item()
    assert fs[(fs.flight == "F2") & (fs.k == 50)]["k_used"].max() == 7  # capped: 5 left to score
    rng = np.random.default_rng(0)
    for n, k in ((40, 10), (12, 50), (8, 0)):
        calib, scored = few_shot_split(n, k, rng)
        assert len(np.intersect1d(calib, scored)) == 0 and len(calib) + len(scored) == n and len(scored) >= 5


def test_conformal_coverage_on_exchangeable_data() -> None:
    rng = np.random.default_rng(1)
    covs = []
    for _ in range(200):
        res_cal = rng.normal(0, 0.2, 200)
        y_test = rng.normal(0, 0.2, 500)
        q = conformal_quantile(res_cal, 0.1)
        covs.append(interval_coverage(y_test, np.zeros(500), q)[0])
    assert abs(np.mean(covs) - 0.9) < 0.05
    assert conformal_quantile(np.ones(5), 0.1) == float("inf")  # too few residuals for 90 %


def test_conformal_from_training_flights_fails_under_shift_and_target_calibration_recovers() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(0.8, 0.3, 400)
    val_idx = np.arange(0, 200)
    unit = {"test_flight": "F", "val_idx": val_idx.tolist(), "val_pred": (y[val_idx] + rng.normal(0, 0.05, 200)).tolist(),
            "true": y[200:].tolist(), "pred": (y[200:] + 0.3 + rng.normal(0, 0.05, 200)).tolist()}  # shifted flight
    table = conformal_table([unit], y, 0.1, k=20, repeats=10, model="m").set_index("calibration")
    assert table.loc["training flights", "coverage"] < 0.3
    assert table.loc["target flight (20-shot)", "coverage"] > 0.75


def test_report_schema_from_units() -> None:
    units = [{"fold_id": 0, "test_flight": "A", "n_train": 3, "n_test": 2, "r2": 0.1, "mae_km": 0.2, "rmse_km": 0.3,
              "epoch_trained": 4, "seed": 0, "true": [1.0, 2.0], "pred": [1.1, 1.9]}]
    rep = build_report("m", "d", "lofo", units, {"seed": 0})
    assert rep["fold_results"][0]["test_flight"] == "A" and rep["aggregate_metrics"]["pooled_mae_km"] == pytest.approx(0.1)


def test_comparison_table_has_per_flight_r2_mae_rmse(tiny_campaign: Path, tmp_path: Path) -> None:
    from cbhlib.compare import comparison_table, load_runs

    camp = Campaign(tiny_campaign)
    run_baselines(camp, ["lofo", "random"], tmp_path, names=("climatology", "gbdt"))
    long, wide = comparison_table(load_runs(tmp_path), camp.flight_names)
    for fl in camp.flight_names:
        assert {f"R2 {fl}", f"MAE m {fl}", f"RMSE m {fl}"} <= set(wide.columns)
    assert {"mean of fold R2", "pooled R2"} <= set(wide.columns)
    assert set(zip(wide["model"], wide["protocol"])) == {(m, p) for m in ("climatology", "gbdt") for p in ("lofo", "random")}
    g = wide[(wide.model == "gbdt") & (wide.protocol == "lofo")].iloc[0]
    rep = json.loads((tmp_path / "report_gbdt.json").read_text())
    first = rep["fold_results"][0]
    assert g[f"R2 {first['test_flight']}"] == pytest.approx(first["r2"])  # LOFO: a flight is a fold
    assert g[f"RMSE m {first['test_flight']}"] == pytest.approx(first["rmse_km"] * 1000)
