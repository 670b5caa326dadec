"""Metrics, baselines, paired intervals, few-shot adaptation and conformal intervals."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from cbhlib.config import load_config
from cbhlib.data.campaign import Campaign
from cbhlib.data.folds import lofo_folds
from cbhlib.evaluation import adapt, intervals
from cbhlib.evaluation.baselines import SKLEARN_BASELINES, BaselineData, espy_lcl_km, run_baseline
from cbhlib.evaluation.compare import (
    baseline_names,
    comparisons,
    findings,
    interval_findings,
    neural_verdict,
    run_baselines,
)
from cbhlib.evaluation.intervals import conformal_quantile, interval_coverage, online
from cbhlib.evaluation.metrics import aggregate, regression_metrics
from cbhlib.evaluation.results import headline_table, load_predictions, per_flight_table, pretty
from cbhlib.evaluation.stats import (
    block_indices,
    choose_block,
    paired_difference,
    paired_mae_difference,
    sign_flip_p,
)
from cbhlib.evaluation.verdicts import combine, evidence_text
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import UnitStore


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.normal(1, 0.3, 50), rng.normal(1, 0.3, 50)
    m = regression_metrics(y, p)
    assert m["r2"] == pytest.approx(r2_score(y, p))
    assert m["mae_km"] == pytest.approx(mean_absolute_error(y, p))
    assert m["rmse_km"] == pytest.approx(np.sqrt(mean_squared_error(y, p)))
    assert m["bias_km"] == pytest.approx(np.mean(p - y))


def test_r2_is_undefined_not_zero_for_constant_truth() -> None:
    m = regression_metrics(np.full(10, 0.27), np.full(10, 0.277))
    assert m["r2"] is None and m["mae_km"] == pytest.approx(0.007)
    agg = aggregate([m, regression_metrics(np.r_[0.2, 0.4], np.r_[0.25, 0.35])])
    assert agg["n_folds_r2_defined"] == 1 and agg["mean_r2"] == pytest.approx(0.75)


def test_pooled_differs_from_mean_of_folds() -> None:
    y1, y2 = np.array([0.2, 0.3, 0.4]), np.array([1.2, 1.3, 1.4])
    folds = [regression_metrics(y1, np.full(3, y1.mean())), regression_metrics(y2, np.full(3, y2.mean()))]
    agg = aggregate(folds, np.r_[y1, y2], np.r_[np.full(3, y1.mean()), np.full(3, y2.mean())])
    assert agg["mean_r2"] == pytest.approx(0.0)
    assert agg["pooled_r2"] > 0.9 and agg["n_predictions"] == 6


def test_espy_lcl_on_a_known_sounding() -> None:
    np.testing.assert_allclose(espy_lcl_km(np.array([293.15, 280.0]), np.array([285.15, 280.0])), [1.0, 0.0])


@pytest.fixture(scope="module")
def baseline_run(tiny_campaign: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Campaign, RunDir, object]:
    camp = Campaign(tiny_campaign)
    run = RunDir(tmp_path_factory.mktemp("base"))
    cfg = load_config(
        overrides={
            "campaign": str(tiny_campaign),
            "run_dir": str(run.root),
            "seeds": [0, 1],
            "protocols": ["lofo", "random"],
            "compare.bootstrap_reps": 200,
        }
    )
    run_baselines(cfg, camp, run)
    return camp, run, cfg


def test_baselines_write_reports_for_every_protocol(baseline_run) -> None:
    camp, run, cfg = baseline_run
    names = baseline_names(cfg)
    assert set(SKLEARN_BASELINES) < set(names) and "gbdt_all_fn" in names and "climatology_fn" not in names
    expected = {(m, p) for m in names for p in ("lofo", "random") if p == "lofo" or not m.endswith("_fn")}
    assert {(m, p) for m, p, _ in run.reports()} == expected
    pred = load_predictions(run, camp)
    head = headline_table(pred)
    assert (head["n_seeds"] == 2).all() and (head["pooled_mae_m_sd"] == 0).all()  # deterministic: sd 0 exactly
    assert list(head["model"][:3]) == ["climatology", "lcl", "gbdt"]  # baselines in their fixed order
    one = headline_table(pred[pred["seed"] == pred["seed"].min()])  # one seed: no spread, not a spread of 0
    assert one["pooled_mae_m_sd"].isna().all() and "±" not in pretty(one)["pooled_mae_m"].iloc[0]
    assert {"time_utc", "lat", "lon", "truth_km", "pred_km", "flight", "sample"} <= set(pred.columns)
    flights = per_flight_table(pred)
    assert set(flights[flights.protocol == "lofo"]["n"]) == set(np.bincount(camp.flight))


def test_climatology_is_the_training_mean(tiny_campaign: Path, tmp_path: Path) -> None:
    camp = Campaign(tiny_campaign)
    X, names = camp.feature_matrix()
    data = BaselineData(camp.cbh_km.astype(float), X, names, key="k")
    folds = lofo_folds(camp)
    units = run_baseline("climatology", data, folds, "lofo", [0], UnitStore(RunDir(tmp_path)))
    for f, u in zip(folds, units, strict=True):
        assert u.pred[0] == pytest.approx(float(camp.cbh_km[f.fit_idx].astype(float).mean()))
        assert len(u.val_pred) == len(f.val_idx)  # refit without validation rows, for conformal calibration


def test_block_bootstrap_stays_within_flights_and_keeps_sizes() -> None:
    groups = np.repeat(["A", "B"], [23, 7])
    idx = block_indices(groups, 5, np.random.default_rng(0), reps=50)
    assert idx.shape == (50, 30)
    assert (groups[idx[:, :23]] == "A").all() and (groups[idx[:, 23:]] == "B").all()


def test_paired_interval_resolves_a_real_difference_and_not_noise() -> None:
    rng = np.random.default_rng(3)
    n = 400
    y = np.cumsum(rng.normal(0, 0.05, n)) + 1
    groups = np.repeat(["A", "B", "C", "D"], n // 4)
    good = y + rng.normal(0, 0.05, (3, n))
    bad = y + rng.normal(0, 0.15, (3, n))
    same = y + rng.normal(0, 0.05, (3, n))
    d = paired_mae_difference(y, good, bad, groups, "good", "bad", reps=500)
    assert d.hi < 0 and d.verdict == "good beats bad"
    d2 = paired_mae_difference(y, good, same, groups, "good", "same", reps=500)
    assert d2.lo < 0 < d2.hi and d2.verdict == "not resolved"


def test_findings_state_rankings_only_when_resolved_under_both_metrics(baseline_run) -> None:
    camp, run, cfg = baseline_run
    pred = load_predictions(run, camp)
    comp = comparisons(pred, cfg, pairs=[("gbdt_all", "gbdt"), ("gbdt", "gbdt")])
    found = findings(headline_table(pred), comp, source=camp.source, n_flights=camp.n_flights)
    self_row = comp[(comp.model == "gbdt") & (comp.reference == "gbdt")].iloc[0]
    assert self_row["status"] == "not resolved" and self_row["pooled_diff_m"] == 0 and self_row["flight_diff_m"] == 0
    assert any("gbdt vs gbdt" in s and "not resolved" in s for s in found["does_not_show"])
    assert not any("gbdt beats gbdt" in s for s in found["shows"])
    m = cfg.compare.drift_margin_m
    for _, r in comp.iterrows():  # a ranking in "shows" only where both intervals clear 0 (by the margin), same side
        stated = any(s.startswith(r["verdict"] + ":") for s in found["shows"])
        both = (r["pooled_hi_m"] < -m and r["flight_hi_m"] < -m) or (r["pooled_lo_m"] > m and r["flight_lo_m"] > m)
        assert stated == both


def test_verdicts_carry_both_metrics_the_block_and_the_flight_level_evidence(baseline_run) -> None:
    camp, run, cfg = baseline_run
    pred = load_predictions(run, camp)
    comp = comparisons(pred, cfg, pairs=[("gbdt_all", "climatology")])
    r = comp.iloc[0]
    for metric in ("pooled", "flight"):
        assert r[f"{metric}_lo_m"] <= r[f"{metric}_diff_m"] <= r[f"{metric}_hi_m"]
    assert r["block"] >= 1 and isinstance(r["holds_at_2x_block"], (bool, np.bool_))
    assert r["n_flights"] == camp.n_flights and 0 <= r["flights_better"] <= camp.n_flights
    assert r["sign_flip_p_min"] == pytest.approx(2 / 2**camp.n_flights) and r["sign_flip_p"] >= r["sign_flip_p_min"]


def test_a_pair_is_stated_once_and_its_flight_count_names_the_model_it_counts(baseline_run) -> None:
    """The flight count belongs to the row's model ('concat better on 2 of 5' under 'gbdt_all_fn beats concat'
    read as the winner's), and a pair compared in two tables (A vs B, B vs A) was stated twice with two counts."""
    camp, run, cfg = baseline_run
    pred = load_predictions(run, camp)
    comp = comparisons(pred, cfg, pairs=[("gbdt", "gbdt_all"), ("gbdt_all", "gbdt")])
    assert len(comp) == 2
    found = findings(headline_table(pred), comp, source=camp.source, n_flights=camp.n_flights)
    said = [s for s in found["shows"] + found["does_not_show"] if "gbdt vs gbdt_all" in s or "gbdt_all vs gbdt" in s]
    assert len(said) == 1, said
    lowest = [s for s in found["shows"] if s.startswith("Lowest leave-one-flight-out")]
    assert len(lowest) == 2 and all("a point estimate: whether it beats the next model is for" in s for s in lowest)
    r = comp.iloc[0]
    assert f"); {r['model']} better on {int(r['flights_better'])} of {camp.n_flights} flights" in evidence_text(r)


def test_an_interval_within_the_drift_margin_says_so_in_the_verdict(baseline_run) -> None:
    camp, run, cfg = baseline_run
    pred = load_predictions(run, camp)
    r = comparisons(pred, cfg, pairs=[("lcl", "climatology")]).iloc[0]
    assert r["pooled_lo_m"] > 0, "the fixture's lcl must be worse than climatology for this test"
    assert "drift margin" not in r["verdict"]
    wide = copy.deepcopy(cfg)  # the fixture's config is shared
    wide.compare.drift_margin_m = r["pooled_lo_m"] + 1  # the interval still excludes 0, but not by the margin
    r = comparisons(pred, wide, pairs=[("lcl", "climatology")]).iloc[0]
    assert r["status"] != "resolved" and r["pooled_lo_m"] > 0
    verb = "clear" if "pooled MAE and per-flight MAE clear" in r["verdict"] else "clears"
    assert (
        "pooled MAE" in r["verdict"]
        and f"{verb} 0 by less than the {wide.compare.drift_margin_m:g} m drift margin" in r["verdict"]
    ), r["verdict"]


def test_metrics_that_disagree_are_never_a_ranking() -> None:
    assert combine(-1, -1, "a", "b") == ("resolved", "a beats b")
    assert combine(1, 1, "a", "b") == ("resolved", "b beats a")
    assert combine(-1, 1, "a", "b")[0] == "metrics disagree" and "beats" in combine(-1, 1, "a", "b")[1]
    assert combine(-1, 0, "a", "b") == ("one metric", "not resolved under both metrics (pooled MAE only: a beats b)")
    assert combine(0, 0, "a", "b") == ("not resolved", "not resolved")


def test_per_flight_statistic_weighs_every_flight_the_same() -> None:
    y = np.zeros(110)
    groups = np.repeat(["big", "small"], [100, 10])
    a = np.where(groups == "big", 0.1, 0.5)[None]  # a: better on the big flight, worse on the small one
    b = np.full((1, 110), 0.2)
    pooled = paired_difference(y, a, b, groups, metric="pooled", block=5, reps=200)
    flight = paired_difference(y, a, b, groups, metric="flight", block=5, reps=200)
    assert pooled.diff == pytest.approx((100 * -0.1 + 10 * 0.3) / 110) and pooled.sign == -1
    assert flight.diff == pytest.approx((-0.1 + 0.3) / 2) and flight.sign == 1


def test_block_length_follows_the_autocorrelation() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(["A", "B"], 400)
    white = rng.normal(size=800)
    smooth = np.concatenate([np.convolve(rng.normal(size=430), np.ones(30) / 30, "valid")[:400] for _ in range(2)])
    assert choose_block(white, groups) <= 3 < 10 <= choose_block(smooth, groups)


def test_sign_flip_test_is_exact_and_has_a_floor() -> None:
    p, pmin = sign_flip_p(np.array([-1.0, -2.0, -1.5, -0.5, -3.0]))
    assert p == pytest.approx(2 / 32) and pmin == pytest.approx(2 / 32)  # five flights: never below 0.0625
    p, _ = sign_flip_p(np.array([-1.0, 1.0, -1.0, 1.0]))
    assert p == 1.0


def _lofo_pred(n_per: tuple[int, ...] = (60, 40, 12), seed: int = 0, slope: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k, n in enumerate(n_per):
        walk = np.cumsum(rng.normal(0, 1, n))
        y = 0.8 + 0.3 * (walk - walk.mean()) / (walk.std() + 1e-9)
        p = 0.8 + slope * (y - 0.8) + 0.2 * k + rng.normal(0, 0.03, n)
        rows.append(
            pd.DataFrame(
                {
                    "model": "m",
                    "seed": 0,
                    "flight": f"F{k}",
                    "time_utc": np.arange(n, dtype=float),
                    "truth_km": y,
                    "pred_km": p,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_few_shot_draws_first_in_time_and_never_scores_the_shots() -> None:
    rng = np.random.default_rng(0)
    ((cal, scored),) = adapt.draws(40, 10, "first", 5, rng)
    np.testing.assert_array_equal(cal, np.arange(10))
    np.testing.assert_array_equal(scored, np.arange(10, 40))
    rand = adapt.draws(40, 10, "random", 5, rng)
    assert len(rand) == 5 and all(len(np.intersect1d(c, s)) == 0 and len(c) + len(s) == 40 for c, s in rand)
    assert len(adapt.draws(12, 50, "first", 5, rng)[0][0]) == 7  # capped: 5 left to score
    fs = adapt.few_shot(_lofo_pred(), [0, 10], "first", 3, 10.0)
    assert (fs[fs.k == 10]["n_scored"] == fs[fs.k == 10]["flight"].map({"F0": 50, "F1": 30, "F2": 5})).all()
    curve = adapt.few_shot_curve(fs)
    off = curve[curve.method == "offset"].set_index("k")["mae_m"]
    assert off[10] < off[0]  # recalibration removes the flight offsets


def test_linear_recalibration_fixes_a_slope_the_offset_cannot() -> None:
    pred = _lofo_pred((200,), slope=0.4)
    fs = adapt.few_shot(pred, [50], "random", 5, shrinkage=1.0)
    mae = fs.groupby("method")["mae_m"].mean()
    assert mae["linear"] < 0.8 * mae["offset"]
    # shrinkage pulls the slope to 1: with a huge weight, linear equals offset
    p = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(
        adapt.recalibrate(p * 2, p, p, "linear", 1e9), adapt.recalibrate(p * 2, p, p, "offset", 0)
    )


def test_conformal_coverage_on_exchangeable_data() -> None:
    rng = np.random.default_rng(1)
    covs = [
        interval_coverage(rng.normal(1, 0.2, 500), np.ones(500), conformal_quantile(rng.normal(0, 0.2, 200), 0.1))[0]
        for _ in range(200)
    ]
    assert abs(np.mean(covs) - 0.9) < 0.05
    assert conformal_quantile(np.ones(5), 0.1) == float("inf")  # too few residuals for 90 %


def test_an_interval_stops_at_the_sea_surface_and_covers_the_same_samples() -> None:
    y, pred = np.array([0.1, 0.3, 1.0, 2.0]), np.array([0.2, 0.9, 1.1, 1.0])
    cov, width = interval_coverage(y, pred, 0.5)
    assert cov == 0.5  # 0.1 (|e| 0.1) and 1.0 (0.1) in; 0.3 (0.6) and 2.0 (1.0) out
    assert width == pytest.approx(np.mean([0.7, 1.0, 1.0, 1.0]))  # [0, 0.7] for the first, not [-0.3, 0.7]


def test_interval_table_reports_every_method_and_the_worst_flight() -> None:
    pred = _lofo_pred((120, 120, 60))
    val = {("m", 0, f"F{k}"): np.random.default_rng(k).normal(0, 0.03, 100) for k in range(3)}
    cal = {  # out-of-flight residuals: carry the flights' offsets (0.2 per flight index)
        ("m", 0, f"F{k}"): (
            np.concatenate([np.random.default_rng(k + j).normal(0.2 * j, 0.03, 80) for j in range(3) if j != k]),
            np.repeat([j for j in range(3) if j != k], 80),
        )
        for k in range(3)
    }
    table = intervals.interval_table(pred, val, cal, 0.1, 20)
    summ = intervals.interval_summary(table, 0.9).set_index("method")
    assert set(summ.index) == set(intervals.METHODS)
    assert summ.loc["validation", "worst_coverage"] < 0.3 and summ.loc["validation", "worst_flight"] in ("F1", "F2")
    sizes = {"F0": 120, "F1": 120, "F2": 60}  # the worst flight's scored samples come with it
    label_free = summ.loc[["validation", "flight_max", "flight_t"]]
    assert (label_free["worst_n"] == label_free["worst_flight"].map(sizes)).all()
    assert (summ["worst_n"] <= summ["worst_flight"].map(sizes)).all()  # methods that use k labels score fewer
    first = interval_findings(summ.reset_index().assign(model="m"))[0]
    assert f"(lowest: m on {summ.iloc[0]['worst_flight']}" in first and ", n " in first
    cov = table.groupby(["method", "flight"])["coverage"].mean()
    # flight F1's offset (0.2) lies within the other flights' (0 and 0.4): out-of-flight residuals cover it ...
    assert cov["flight_max", "F1"] > 0.8 > cov["validation", "F1"]
    # ... the most extreme flight (F2, offset 0.4 beyond both others) cannot be anticipated label-free
    assert cov["flight_max", "F2"] < 0.5
    assert summ.loc["flight_max", "width_vs_validation"] > 1  # wider: it carries the between-flight shift
    assert summ.loc["aci", "worst_later_half"] >= 0.8  # online: adapts to the new flight's offset
    assert {"coverage", "width_m", "n_calibration", "n_scored", "coverage_later_half"} <= set(table.columns)
    live = table["method"].str.startswith("aci")  # the online methods
    assert table.loc[live, "widest_share"].between(0, 1).all() and table.loc[~live, "widest_share"].isna().all()
    assert table.loc[live, "gamma"].notna().all() and table.loc[~live, "gamma"].isna().all()
    assert set(table.loc[table["method"] == "aci_centred", "gamma"]) <= set(online.GAMMAS)
    assert table.groupby("flight")["n_later_half"].first().to_dict() == {"F0": 60, "F1": 60, "F2": 30}
    late = table.groupby(["method", "flight"])["coverage_later_half"].mean()
    for method in ("aci", "validation"):  # the online check: lowest, highest, every flight within 5 points
        assert summ.loc[method, "worst_later_half"] == pytest.approx(late[method].min())
        assert summ.loc[method, "best_later_half"] == pytest.approx(late[method].max())
        assert summ.loc[method, "later_half_in_band"] == float((late[method] - 0.9).abs().le(0.05 + 1e-9).all())
    assert summ.loc["validation", "later_half_in_band"] == 0.0
    assert summ.loc["aci", "in_band_chance"] == pytest.approx(intervals.band_chance([60, 60, 30], 0.9))
    firstk = table[table["method"].isin(["first_k", "aci", "aci_budget"])]
    assert firstk.groupby("flight")["n_scored"].nunique().eq(1).all()  # the same scored samples at the same budget


def test_the_tidy_predictions_carry_the_label_free_interval_the_report_scores() -> None:
    """predictions.csv's lower/upper on leave-one-flight-out rows: the ``flight_t`` interval from
    each unit's (model, seed, flight) out-of-flight residuals (its coverage and width are the
    report's), never from the held-out labels; random-split rows and units without nested
    residuals get none; rows keep their order whatever the index."""
    lofo = pd.concat([_lofo_pred((120, 120, 60)), _lofo_pred((120, 120, 60), seed=1).assign(seed=1)])
    lofo = lofo.assign(protocol="lofo")
    pred = pd.concat([lofo.assign(protocol="random"), lofo]).sample(frac=1.0, random_state=0)  # shuffled index
    cal = {
        ("m", s, f"F{k}"): (
            np.concatenate(
                [np.random.default_rng(k + j + 7 * s).normal(0.2 * j, 0.03 + 0.1 * s, 80) for j in range(3) if j != k]
            ),
            np.repeat([j for j in range(3) if j != k], 80),
        )
        for k in (0, 1)  # F2 has no nested residuals
        for s in (0, 1)  # seed 1's residuals are wider: each unit uses its own
    }
    out = intervals.with_bounds(pred, cal, 0.1)
    assert list(out.index) == list(pred.index) and out["pred_km"].equals(pred["pred_km"])
    held = (out["protocol"] == "lofo") & (out["flight"] != "F2")
    assert (
        out.loc[held, ["lower_km", "upper_km"]].notna().all().all()
        and (out.loc[held, "interval"] == "flight_t 90%").all()
    )
    assert out.loc[~held, ["lower_km", "upper_km", "interval"]].isna().all().all()
    assert (out.loc[held, "lower_km"] <= out.loc[held, "pred_km"]).all() and (out["lower_km"].dropna() >= 0).all()
    table = intervals.interval_table(lofo, {}, cal, 0.1, 20).query("method == 'flight_t'").set_index(["seed", "flight"])
    widths = []
    for (s, fl), d in out[held].groupby(["seed", "flight"]):
        covered = ((d["truth_km"] >= d["lower_km"]) & (d["truth_km"] <= d["upper_km"])).mean()
        assert covered == pytest.approx(table.loc[(s, fl), "coverage"])
        widths.append(1000 * (d["upper_km"] - d["lower_km"]).mean())
        assert widths[-1] == pytest.approx(table.loc[(s, fl), "width_m"])
    assert len(widths) == 4 and len({round(w) for w in widths}) == 4
    assert intervals.with_bounds(pred, cal, 0.125).loc[held, "interval"].eq("flight_t 87.5%").all()
    moved = intervals.with_bounds(pred.assign(truth_km=pred["truth_km"] + 5.0), cal, 0.1)  # other held-out labels
    np.testing.assert_array_equal(moved["lower_km"], out["lower_km"])
    np.testing.assert_array_equal(moved["upper_km"], out["upper_km"])


def test_the_online_check_counts_single_runs_and_lines_up_with_its_model() -> None:
    """Two models with different flight sizes, two seeds each: the in-band share is over seeds (a
    seed-averaged coverage would hide a seed's miss), each model gets its own flights' chance,
    an empty later half passes, and the findings sentence states share and chance."""
    rows = []
    late = {  # (model, seed) -> later-half coverage per flight; n_later per (model, flight)
        ("a", 0): (0.9, 0.9), ("a", 1): (1.0, 0.9), ("b", 0): (0.88, 0.92), ("b", 1): (0.86, 0.94),
    }  # fmt: skip
    sizes = {"a": (10, 20), "b": (40, 50)}
    for (model, seed), covs in late.items():
        for k, (cov, n) in enumerate(zip(covs, sizes[model], strict=True)):
            for method in ("validation", "aci"):
                c = cov if method == "aci" else 0.5
                rows.append({"model": model, "seed": seed, "flight": f"F{k}", "method": method, "coverage": c,
                             "width_m": 500.0, "coverage_later_half": c, "n_scored": n, "n_later_half": n,
                             "n_calibration": 100, "gamma": 0.05 if method == "aci" else np.nan})  # fmt: skip
    rows.append({"model": "c", "seed": 0, "flight": "F0", "method": "aci", "coverage": 0.9, "width_m": 1.0,
                 "coverage_later_half": np.nan, "n_scored": 1, "n_later_half": 0, "n_calibration": 1})  # fmt: skip
    summ = intervals.interval_summary(pd.DataFrame(rows), 0.9).set_index(["model", "method"])
    assert summ.loc[("a", "aci"), "later_half_in_band"] == 0.5  # seed 1 covers all of F0's later half
    assert summ.loc[("b", "aci"), "later_half_in_band"] == 1.0
    assert summ.loc[("b", "aci"), "worst_later_half"] == pytest.approx(0.87)  # seed means
    assert summ.loc[("b", "aci"), "best_later_half"] == pytest.approx(0.93)
    assert summ.loc[("a", "aci"), "in_band_chance"] == pytest.approx(intervals.band_chance([10, 20], 0.9))
    assert summ.loc[("b", "aci"), "in_band_chance"] == pytest.approx(intervals.band_chance([40, 50], 0.9))
    assert summ.loc[("c", "aci"), "later_half_in_band"] == 1.0 and summ.loc[("c", "aci"), "in_band_chance"] == 1.0
    assert summ.loc[("a", "validation"), "later_half_in_band"] == 0.0
    two = summ.drop(index="c", level="model").reset_index()
    line = next(s for s in interval_findings(two) if "online ACI (every label" in s)
    chance = np.median([intervals.band_chance([10, 20], 0.9), intervals.band_chance([40, 50], 0.9)])
    assert "in single runs (model x seed; a deterministic baseline repeats over seeds)" in line
    assert f"every flight's later half within 5 points of nominal in 75%, against {chance:.0%} expected" in line
    # a: F0 (0.9 + 1.0) / 2 = 95 % and F1 90 %; b: 87 % and 93 %: both within 5 points on seed means
    assert "later-half coverage averaged over seeds 87% to 95% across models and flights" in line
    assert "within 5 points of nominal on every flight for 2 of 2 models" in line
    assert "; ACI step 0.05; " in line and "chosen per fold" not in line  # plain ACI: one fixed step
    assert ("below that bar" in line) == (0.75 < chance)
    low = two.assign(later_half_in_band=0.0)
    assert "in 0%, against" in next(s for s in interval_findings(low) if "online ACI (every label" in s)
    off = two.assign(best_later_half=two["best_later_half"].where(two["model"] != "b", 0.96))
    assert "for 1 of 2 models" in next(s for s in interval_findings(off) if "online ACI (every label" in s)
    assert "below that bar" in next(s for s in interval_findings(low) if "online ACI (every label" in s)


def test_the_online_check_names_the_flights_out_of_band_and_those_too_short_for_a_band() -> None:
    """Seed means out of the band are named with their coverage, the farthest first; a 10-sample later half has one
    in-band count (9 covered) and a 5-sample one none, and the findings sentence says so."""
    rows = []
    for model, covs in {"a": (0.9, 0.9, 0.83), "b": (0.9, 0.95, 1.0)}.items():
        for seed in (0, 1):
            for flight, cov, n in zip(("F0", "F1", "F2"), covs, (40, 10, 5), strict=True):
                c = cov + (0.05 if model == "a" and flight == "F0" and seed else 0.0)  # a: F0 92.5 % on seed means
                rows.append({"model": model, "seed": seed, "flight": flight, "method": "aci", "coverage": c,
                             "width_m": 1.0, "coverage_later_half": c, "n_scored": n, "n_later_half": n,
                             "n_calibration": 10, "gamma": 0.05})  # fmt: skip
    summ = intervals.interval_summary(pd.DataFrame(rows), 0.9).set_index("model")
    assert summ.loc["a", "later_half_out"] == "F2 83.0%"
    assert summ.loc["b", "later_half_out"] == "F2 100.0%"
    assert summ.loc["a", "narrow_band"] == (
        "F1 (later half of 10 samples: only 9 covered), F2 (later half of 5 samples: no count)"
    )
    line = interval_findings(summ.reset_index())[0]
    assert "for 0 of 2 models (out of the band on seed means: b F2 100.0%; a F2 83.0%; where at most one" in line
    assert "covered count of the later half lies in the band: F1 (later half of 10 samples: only 9 covered)" in line
    calm = intervals.interval_summary(pd.DataFrame(rows).query("flight == 'F0'"), 0.9)
    assert calm["later_half_out"].eq("").all() and calm["narrow_band"].eq("").all()
    assert "for 2 of 2 models;" in interval_findings(calm)[0]


def _campaign_summary(run: str, seed: int, label_free: dict[str, float], online: dict[str, tuple]) -> dict:
    rows = [{"model": m, "method": "flight_t", "worst_coverage": c, "worst_flight": "F0", "nominal": 0.9}
            for m, c in label_free.items()]  # fmt: skip
    rows += [{"model": m, "method": "aci_centred", "worst_later_half": lo, "best_later_half": hi, "nominal": 0.9}
             for m, (lo, hi) in online.items()]  # fmt: skip
    return {"run": run, "campaign_info": {"source": f"synthetic(seed={seed})"}, "comparison": {"conformal": rows}}


def test_intervals_across_campaigns_name_the_models_that_hold_in_every_run() -> None:
    """The label-free worst flight per model and run, the online check per run, and the models at
    80 % or more in every run; a model missing from a run is a dash and does not hold."""
    from cbhlib.evaluation.intervals.campaigns import campaigns_table

    a = _campaign_summary("default", 0, {"concat": 0.85, "concat_fn": 0.9, "gbdt": 0.5}, {"concat": (0.86, 0.93)})
    b = _campaign_summary("seed7", 7, {"concat": 0.6, "concat_fn": 0.82}, {"concat": (0.86, 0.96)})
    text = campaigns_table([a, b])
    assert "| model | synthetic(seed=0) (run `default`) | synthetic(seed=7) (run `seed7`) |" in text
    assert "| concat | 85.0% (F0); online held | 60.0% (F0); online not held |" in text  # 96 % is out of band
    assert "| gbdt | 50.0% (F0); online not held | - |" in text
    assert "in every run: concat_fn (1 of 3 models); below it in at least one run: concat, gbdt." in text
    assert campaigns_table([{"run": "x"}]) == ""
    a["comparison"]["conformal"][0]["worst_n"] = 24  # summaries that keep the worst flight's n show it
    assert "| concat | 85.0% (F0, n 24); online held | 60.0% (F0); online not held |" in campaigns_table([a, b])


def test_the_online_check_is_measured_against_what_a_calibrated_interval_would_score() -> None:
    """12 samples at 90 %: only 11 covered lands within 5 points (12 * 0.9^11 * 0.1); flights multiply."""
    one = 12 * 0.9**11 * 0.1
    assert intervals.band_chance([12], 0.9) == pytest.approx(one)
    assert intervals.band_chance([12, 12], 0.9) == pytest.approx(one**2)
    assert intervals.band_chance([], 0.9) == 1.0 and intervals.band_chance([0], 0.9) == 1.0
    many = [intervals.band_chance([m], 0.9) for m in (20, 100, 1000)]
    assert many == sorted(many) and many[-1] > 0.99  # more samples, a sharper check
    assert intervals.band_chance([100], 0.9, band=0.0) == pytest.approx(stats.binom.pmf(90, 100, 0.9))


def test_aci_never_uses_a_label_before_its_time() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.normal(0, 1, 60), np.zeros(60)
    scores = rng.normal(0, 0.5, 50)
    base, used = online.aci(y, p, scores, 0.1, 0.05)
    assert used[0] == 0.1 and not np.all(used == 0.1)  # it adapts, starting at the nominal level
    assert base[0] == intervals.conformal_quantile(scores, 0.1)
    assert base[1] == intervals.conformal_quantile(np.append(scores, abs(y[0])), used[1])  # the first label joined
    for t in (5, 20, 40):
        y2 = y.copy()
        y2[t:] = 99.0  # later labels change: the intervals up to t must not
        np.testing.assert_array_equal(online.aci(y2, p, scores, 0.1, 0.05)[0][: t + 1], base[: t + 1])


def _training_flights(
    rng: np.random.Generator, spreads: tuple[float, ...], n: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-flight residuals of training flights with small biases and the given spreads, flight by flight."""
    res = np.concatenate([rng.normal(0.02 * (-1) ** k, s, n) for k, s in enumerate(spreads)])
    return res, np.repeat(np.arange(len(spreads)), n)


def test_recentred_aci_learns_a_shifted_flights_bias_from_earlier_labels_only() -> None:
    """A flight 0.6 km above what the model predicts, calibration residuals without that shift:
    plain ACI widens until it covers; recentred ACI moves its centre and stays narrow."""
    rng = np.random.default_rng(3)
    n = 120
    y = 0.6 + rng.normal(0, 0.05, n)
    p = np.zeros(n)
    res, grp = _training_flights(rng, (0.05, 0.05, 0.05, 0.05))
    shift = online.running_bias(y, p)
    assert shift[0] == 0.0 and shift[-1] == pytest.approx(0.6, abs=0.05)
    hw_c, sh, gamma, _ = online.aci_centred(y, p, res, grp, 0.1)
    assert gamma in online.GAMMAS
    for t in (1, 10, 60):  # centre and width at t come from labels before t
        y2 = y.copy()
        y2[t:] = 99.0
        np.testing.assert_array_equal(online.running_bias(y2, p)[: t + 1], shift[: t + 1])
        hw2, sh2, _, _ = online.aci_centred(y2, p, res, grp, 0.1)
        np.testing.assert_array_equal(hw2[: t + 1], hw_c[: t + 1])
        np.testing.assert_array_equal(sh2[: t + 1], sh[: t + 1])
    hw, _ = online.aci(y, p, res, 0.1, 0.05)
    late = np.arange(n) >= n // 2
    cov_c = np.mean(np.abs(y - p - sh)[late] <= hw_c[late])
    cov = np.mean(np.abs(y - p)[late] <= hw[late])
    assert 0.8 <= cov_c <= 1.0 and np.mean(hw_c[late]) < 0.5 * np.mean(hw[late])
    assert cov >= 0.5  # plain ACI covers too, but only by widening to the whole shift


def test_recentred_aci_narrows_on_a_calm_flight_and_holds_its_later_half_near_nominal() -> None:
    """Training flights spread 0.3 km, the new flight 0.03 km: the pool's quantile would over-cover
    it at ~100 %; rescaled to its own spread, its later half is covered near 90 % and narrowly."""
    rng = np.random.default_rng(5)
    res, grp = _training_flights(rng, (0.3, 0.25, 0.35, 0.3), 150)
    covs, widths = [], []
    for k in range(20):
        y = np.random.default_rng(100 + k).normal(0.1, 0.03, 200)
        p = np.zeros(200)
        hw, sh, _, _ = online.aci_centred(y, p, res, grp, 0.1)
        late = np.arange(200) >= 100
        covs.append(np.mean(np.abs(y - p - sh)[late] <= hw[late]))
        widths.append(np.median(hw[late]))  # typical width (after a miss, ACI widens for a while)
    assert 0.85 <= np.mean(covs) <= 0.95
    assert np.mean(widths) < 0.25 * intervals.conformal_quantile(res, 0.1)
    fixed = intervals.flight_halfwidth(res, grp, 0.1)
    assert np.mean(np.abs(y - p)[late] <= fixed) == 1.0  # the training flights' width: over-covers


def test_recentred_aci_calibrates_on_recentred_training_flights() -> None:
    """Training flights 0.4-0.5 km off the model, each steady (0.05 km): recentred, their scores
    are small, so a new shifted flight gets narrow intervals that still cover its later half. A
    pool of raw residuals would hold the flights' biases and give intervals ~0.5 km wide."""
    rng = np.random.default_rng(11)
    res = np.concatenate([b + rng.normal(0, 0.05, 100) for b in (0.5, -0.5, 0.4, -0.4)])
    grp = np.repeat(np.arange(4), 100)
    y, p = 0.45 + rng.normal(0, 0.05, 150), np.zeros(150)
    hw, sh, _, level = online.aci_centred(y, p, res, grp, 0.1)
    late = np.arange(150) >= 75
    assert np.median(hw[late]) < 0.2 < intervals.flight_halfwidth(res, grp, 0.1)
    rc = online.recentring(online.by_flight(res, grp))
    z, _, scale = rc.standardise(y - p)
    wide = np.flatnonzero(level <= 0)  # after misses: the largest score known then, at the flight's scale
    assert len(wide) and all(hw[t] == pytest.approx(max(rc.pool.max(), *np.abs(z[:t])) * scale[t]) for t in wide)
    assert 0.8 <= np.mean(np.abs(y - p - sh)[late] <= hw[late]) <= 1.0


def test_the_table_fits_the_recentred_method_once_per_set_of_training_residuals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two seeds calibrated by the same residuals (a head's nested ones) share one fit, a third
    with other residuals gets its own; the rows equal those of a fit made afresh every time."""
    pred = pd.concat([_lofo_pred((40, 40, 30)).assign(seed=s) for s in (0, 1, 2)], ignore_index=True)
    rng = np.random.default_rng(5)
    shared = {f"F{k}": (rng.normal(0.1, 0.1, 60), np.repeat([j for j in range(3) if j != k], 30)) for k in range(3)}
    cal = {("m", s, fl): (r + (0.05 if s == 2 else 0.0), g) for s in (0, 1, 2) for fl, (r, g) in shared.items()}
    calls = []
    real = online.fit_centred
    monkeypatch.setattr(intervals, "fit_centred", lambda *a, **k: calls.append(1) or real(*a, **k))
    table = intervals.interval_table(pred, {}, cal, 0.1, 5)
    assert len(calls) == 6  # 3 flights x (seeds 0 and 1 together, seed 2 alone)
    monkeypatch.setattr(intervals, "fit_centred", lambda *a, **k: None)  # aci_centred fits afresh itself
    pd.testing.assert_frame_equal(table, intervals.interval_table(pred, {}, cal, 0.1, 5), check_exact=True)


def test_each_replayed_training_flight_is_calibrated_without_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    flights = [rng.normal(b, 0.1, 30) for b in (0.2, -0.1, 0.0, 0.3)]
    calls: list[list[np.ndarray]] = []
    real = online.recentring
    monkeypatch.setattr(online, "recentring", lambda fl: calls.append(list(fl)) or real(fl))
    online.replay_gamma(flights, 0.1)
    assert len(calls) == len(flights)
    for i, used in enumerate(calls):
        assert len(used) == len(flights) - 1 and not any(f is flights[i] for f in used)


def test_the_recentred_methods_settings_come_from_the_training_flights_alone() -> None:
    """The shrinkage is the random-effects one (s_w^2 / s_b^2, the squared biases less the noise of
    each flight's mean), and the step is chosen by replaying the training flights: changing only
    the new flight's labels never changes the step."""
    flights = [np.array([0.1, 0.3]), np.array([-0.3, -0.1])]  # biases +-0.2, within-flight variance 0.02
    assert online.bias_prior(flights) == pytest.approx(0.02 / (0.04 - 0.02 / 2))
    assert online.bias_prior([np.array([0.1, -0.1]), np.array([0.2, -0.2])]) == float("inf")
    assert online.running_bias(np.ones(3), np.zeros(3), float("inf")).tolist() == [0.0, 0.0, 0.0]
    rng = np.random.default_rng(8)
    res, grp = _training_flights(rng, (0.1, 0.2, 0.15, 0.1), 60)
    steps = {online.aci_centred(rng.normal(m, s, 80), np.zeros(80), res, grp)[2] for m, s in ((0, 0.1), (2, 1))}
    assert len(steps) == 1
    assert steps == {online.replay_gamma(online.by_flight(res, grp), 0.1)}
    scale = online.running_scale(np.array([0.3, -0.3, 0.3]), 0.1, prior=2)
    assert scale[0] == pytest.approx(0.1) and scale[2] == pytest.approx(np.sqrt((2 * 0.01 + 2 * 0.09) / 4))


def test_flight_aware_half_widths_weigh_flights_and_the_maximum_is_per_flight() -> None:
    r = np.concatenate([np.full(90, 0.1), np.full(10, 1.0)])
    g = np.repeat([0, 1], [90, 10])
    assert intervals.flight_halfwidth(r, g, 0.1, "pooled") == pytest.approx(1.0)  # rank 91 of 100: a 1.0
    r2 = np.concatenate([np.full(95, 0.1), np.full(5, 1.0)])
    g2 = np.repeat([0, 1], [95, 5])
    assert intervals.flight_halfwidth(r2, g2, 0.1, "pooled") == pytest.approx(0.1)  # the big flight dominates
    assert intervals.flight_halfwidth(r2, g2, 0.1, "flight") == pytest.approx(1.0)  # each flight weighs half
    assert intervals.flight_halfwidth(r2, g2, 0.1, "flight_max") == pytest.approx(1.0)
    assert intervals.weighted_quantile(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 2.0]), 0.5) == 2.0


def test_an_interval_must_clear_the_drift_margin_to_be_a_ranking() -> None:
    from cbhlib.evaluation.stats import PairedDifference

    d = PairedDifference("a", "b", 0.3, 0.31, -0.012, -0.025, -0.004, 100, 5)
    assert d.sign == -1 and d.verdict == "a beats b"  # excludes 0 ...
    d.margin = 0.020
    assert d.sign == 0 and d.verdict == "not resolved"  # ... but not by the 20 m a thread count can move it
    d.lo, d.hi = -0.060, -0.021
    assert d.sign == -1


def test_random_effects_interval_follows_its_formula_and_widens_with_fewer_flights() -> None:
    from scipy import stats

    # two flights, biases +0.3 and -0.1, within-flight values +-0.1 around them
    r = np.array([0.2, 0.4, -0.2, 0.0])
    g = np.array([0, 0, 1, 1])
    s_b2, s_w2 = (0.3**2 + 0.1**2) / 2, 0.01
    want = stats.t.ppf(0.95, 1) * np.sqrt(s_b2 * 1.5 + s_w2)
    assert intervals.random_effects_halfwidth(r, g, 0.1) == pytest.approx(want)
    assert intervals.flight_halfwidth(r, g, 0.1, "flight_t") == pytest.approx(want)
    assert intervals.random_effects_halfwidth(r[:2], g[:2], 0.1) == float("inf")  # one flight: no spread of biases
    rng = np.random.default_rng(0)
    biases = np.tile([0.2, -0.2], 6)  # the same spread of biases among 4 flights as among 12
    res = np.concatenate([b + np.linspace(-0.05, 0.05, 30) for b in biases])
    grp = np.repeat(np.arange(12), 30)
    few = intervals.random_effects_halfwidth(res[grp < 4], grp[grp < 4], 0.1)
    many = intervals.random_effects_halfwidth(res, grp, 0.1)
    assert few > many  # Student t on G-1 degrees of freedom pays for knowing few flights
    # a new flight drawn from a random-effects model like the twelve is covered near the nominal level
    new = rng.normal(0, 0.2, 4000)[:, None] + rng.normal(0, 0.03, (4000, 10))
    assert 0.85 <= float(np.mean(np.abs(new) <= many)) <= 0.97


def test_the_first_finding_counts_the_neural_models_won_lost_and_open() -> None:
    head = pd.DataFrame(
        {
            "protocol": "lofo",
            "model": ["climatology", "gbdt", "a", "b", "c"],
            "kind": ["baseline", "baseline", "model", "model", "model"],
            "pooled_mae_m": [300.0, 250.0, 240.0, 260.0, 280.0],
        }
    )

    def row(model: str, ref: str, status: str, diff: float) -> dict:
        return {"protocol": "lofo", "model": model, "reference": ref, "status": status, "pooled_diff_m": diff}

    table = pd.DataFrame(
        [
            row("a", "climatology", "resolved", -60.0),
            row("b", "climatology", "one metric", -40.0),
            row("c", "climatology", "resolved", 30.0),
            row("gbdt", "climatology", "resolved", -50.0),  # a baseline: not counted
            row("a", "gbdt", "not resolved", -10.0),
            row("b", "gbdt", "metrics disagree", 10.0),
            row("c", "gbdt", "not resolved", 30.0),
        ]
    )
    line = neural_verdict(head, table)
    assert "Against climatology: 1 of 3 better (a), 1 worse (c), 1 not resolved. " in line, line
    assert "Against the strongest simple baseline (gbdt): 0 of 3 better, 0 worse, 3 not resolved." in line, line
    evidence = dict.fromkeys(  # what the other findings read; values do not matter here
        "pooled_lo_m pooled_hi_m flight_lo_m flight_hi_m flight_diff_m pooled_mae_m flight_mae_m pooled_reference_m "
        "flight_reference_m sign_flip_p sign_flip_p_min".split(),
        0.5,
    )
    assert (
        findings(
            head.assign(n_seeds=1, n=10, flight_mae_m=1.0, r2_pooled=0.0, pooled_mae_m_sd=0.0, flight_mae_m_sd=0.0),
            table.assign(verdict="v", n_flights=3, holds_at_2x_block=True, flights_better=1, block=3, **evidence),
        )["shows"][0]
        == line
    )  # the answer comes first
    assert neural_verdict(head[head["kind"] == "baseline"], table) is None  # no neural model: no sentence
    assert "(leave-one-flight-out; n = 40 held-out samples x 3 seeds;" in neural_verdict(
        head, table.assign(n_samples=40, n_seeds=3)
    )


def test_online_intervals_learn_only_from_the_labels_that_have_arrived() -> None:
    """Labels arrive for some samples only: a sample without one is never read (NaN or any value
    gives the same intervals), a label moves only the samples after it, every label present is the
    method as scored in the report, and the centre still learns a shifted flight's bias."""
    rng = np.random.default_rng(4)
    res, grp = _training_flights(rng, (0.2, 0.25, 0.3, 0.2), 100)
    n = 150
    y, p = 0.4 + rng.normal(0, 0.1, n), np.zeros(n)
    known = rng.random(n) < 0.4
    base = online.aci_centred(y, p, res, grp, 0.1, labelled=known)
    for filler in (np.nan, 100.0):
        other = online.aci_centred(np.where(known, y, filler), p, res, grp, 0.1, labelled=known)
        for a, b in zip(base[:2] + base[3:], other[:2] + other[3:], strict=True):
            np.testing.assert_array_equal(a, b)
    t = int(np.flatnonzero(known)[10])
    moved = online.aci_centred(np.where(np.arange(n) == t, y + 1.0, y), p, res, grp, 0.1, labelled=known)
    np.testing.assert_array_equal(moved.shift[: t + 1], base.shift[: t + 1])
    np.testing.assert_array_equal(moved.half_width[: t + 1], base.half_width[: t + 1])
    assert not np.array_equal(moved.shift[t + 1 :], base.shift[t + 1 :])
    full = online.aci_centred(y, p, res, grp, 0.1)
    every = online.aci_centred(y, p, res, grp, 0.1, labelled=np.ones(n, bool))
    for a, b in zip(full, every, strict=True):
        np.testing.assert_array_equal(a, b)
    prior = online.fit_centred(res, grp).recentring.prior  # the centre: shrunk mean of the labels before
    r = np.where(known, y - p, 0.0)
    want = np.concatenate([[0], np.cumsum(r)[:-1]]) / (np.concatenate([[0], np.cumsum(known)[:-1]]) + prior)
    np.testing.assert_allclose(base.shift, want, rtol=1e-12)
    assert 0 < base.shift[20] < base.shift[-1] < 0.4  # towards the flight's bias as labels arrive
    none = online.aci_centred(np.full(n, np.nan), p, res, grp, 0.1, labelled=np.zeros(n, bool))
    assert (none.shift == 0).all() and np.unique(none.half_width).size == 1 and np.isfinite(none.half_width).all()


def test_predict_states_the_intervals_held_out_record_from_the_comparison(tmp_path: Path) -> None:
    """The line beside cbh predict's intervals: the comparison's worst flight, coverage and width
    for that model and method (the online one as aci_centred, scored after the first k labels, and
    its later halves), the flight-level promise, the level it was scored at, and what to run where
    nothing is scored yet."""
    from cbhlib.evaluation.intervals.newflight import held_out_record
    from cbhlib.store.rundir import RunDir

    run = RunDir(tmp_path / "run")
    assert "no held-out record of these intervals (the compare step scores them" in held_out_record(
        run, "concat", "flight_t", 0.9
    )
    run.tables.mkdir(parents=True)
    cov = {"A": 0.95, "B": 0.75, "C": 0.9}
    rows = [
        {"model": "concat", "method": m, "seed": s, "flight": f, "coverage": c - d, "coverage_later_half": c - 2 * d}
        for m, d in (("flight_t", 0.0), ("aci_centred", 0.05), ("first_k", 0.1))
        for s in (0, 1)
        for f, c in cov.items()
    ]
    rows = [dict(r, width_m=800.0 + 100 * r["seed"], n_scored=30, n_later_half=25, n_calibration=20) for r in rows]
    pd.DataFrame(rows).to_csv(run.table("comparison_intervals"), index=False)
    summary = intervals.interval_summary(pd.DataFrame(rows), 0.9)
    summary.to_csv(run.table("comparison_intervals_summary"), index=False)
    text = held_out_record(run, "concat", "flight_t", 0.9)
    assert "3 flights x 2 seeds, nominal 90%): worst flight B covered 75.0%, mean width 850 m" in text
    assert "promises at most 2/3 of new flights" in text and "asked" not in text
    text = held_out_record(run, "concat", "online", 0.9)
    assert "arriving, nominal 90%): worst flight B covered 70.0% of its 30 samples after the first 20" in text
    assert "later halves 65.0% to 85.0%" in text and "promises" not in text
    assert "(scored at 90%, not the 80% asked)" in held_out_record(run, "concat", "flight_t", 0.8)
    assert "no held-out record of attention's flight_t" in held_out_record(run, "attention", "flight_t", 0.9)


def test_between_labels_the_online_level_is_nominal_and_only_earlier_arrivals_count() -> None:
    """With ``reset``, a sample whose previous sample brought no label gets the nominal level (the
    conformal quantile of every score known by then) instead of holding ACI's last swing; while
    labels come one after another ACI runs as published, a label arriving never changes an
    earlier interval, and with every label present nothing changes."""
    rng = np.random.default_rng(6)
    scores = np.abs(rng.normal(0, 0.3, 200))
    y, p = rng.normal(0.2, 0.4, 60), np.zeros(60)
    every = online.aci(y, p, scores, 0.1, 0.2)
    for a, b in zip(every, online.aci(y, p, scores, 0.1, 0.2, reset=True), strict=True):
        np.testing.assert_array_equal(a, b)
    lab = (np.arange(60) < 25) | (np.arange(60) % 7 == 0)
    hw, used = online.aci(y, p, scores, 0.1, 0.2, lab, reset=True)
    _, held = online.aci(y, p, scores, 0.1, 0.2, lab)
    after_gap = np.flatnonzero(~np.concatenate([[True], lab[:-1]]))  # the previous sample brought no label
    assert (used[after_gap] == 0.1).all() and not np.allclose(held[after_gap], 0.1)
    np.testing.assert_array_equal(used[:26], every[1][:26])  # labels one after another: published ACI
    known = np.concatenate([scores, np.abs(y - p)[:25]])
    assert hw[30] == intervals.conformal_quantile(known, 0.1)
    for j in (40, 45, 50):  # one more label arrives at j: nothing at or before j moves
        more = lab.copy()
        more[j] = True
        hw2, used2 = online.aci(y, p, scores, 0.1, 0.2, more, reset=True)
        np.testing.assert_array_equal(hw2[: j + 1], hw[: j + 1])
        np.testing.assert_array_equal(used2[: j + 1], used[: j + 1])


def test_neural_baselines_the_run_did_not_train_are_named_not_dropped() -> None:
    """`--only physical_only,compare` left random_init and image_stats_mlp out of every table without a word."""
    from cbhlib.evaluation.compare import absent_baselines

    cfg = load_config({})
    text = absent_baselines(cfg, ["climatology", "physical_only", "random_init"])
    assert text is not None and "image_stats_mlp" in text and "random_init" not in text.split("(")[0]
    assert "cbh run --only image_stats_mlp,compare" in text
    assert absent_baselines(cfg, ["random_init", "image_stats_mlp"]) is None
    assert absent_baselines(load_config({"compare.baselines": ["climatology"]}), []) is None
