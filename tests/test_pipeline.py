"""Every notebook runs for real under papermill on a tiny campaign, through the pipeline."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from cbhlib.cli import main
from cbhlib.data.campaign import write_campaign
from cbhlib.store.checkpoints import load_checkpoint
from cbhlib.training.loops import read_jsonl
from tests.conftest import project_copy, small_data

TINY = [
    "threads=1",
    "seeds=[0,1]",
    "train.epochs=3",
    "train.patience=2",
    "pretrain.epochs=1",
    "encoder.embed_dim=16",
    "encoder.heads=2",
    "encoder.decoder_dim=8",
    "encoder.decoder_heads=2",
    "compare.bootstrap_reps=100",
    "compare.few_shot_repeats=2",
    "explore.images_per_flight=1",
    "pretrain.eval_frames=32",
]
STEPS = [
    "explore",
    "pretrain",
    "physical_only",
    "image_only",
    "concat",
    "attention",
    "random_init",
    "image_stats_mlp",
    "physical_only_fn",
    "image_only_fn",
    "concat_fn",
    "attention_fn",
    "compare",
]


def _sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def _notebook(path: Path, code: str) -> None:
    """A two-cell notebook: a parameters cell (``x: int = 1``), then ``code``."""
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("x: int = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(code),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def project(tiny_campaign: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's copy of the project: notebooks, params and a campaign file."""
    root = project_copy(tmp_path_factory.mktemp("project"))
    shutil.copy(tiny_campaign, root / "data" / "tiny.h5")
    return root


@pytest.fixture(scope="module")
def pipeline_run(project: Path) -> tuple[Path, str]:
    cwd = os.getcwd()
    os.chdir(project)
    try:
        code = main(
            ["run", "--run-name", "tiny", "--campaign", "data/tiny.h5", "--workers", "2", "--quiet", *_sets(*TINY)]
        )
    finally:
        os.chdir(cwd)
    assert code == 0
    return project, "tiny"


def test_every_notebook_executes(pipeline_run) -> None:
    root, name = pipeline_run
    run = root / "runs" / name
    summary = json.loads((run / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]["detail"]] == STEPS
    assert summary["steps"]["ok"] == len(STEPS) and summary["steps"]["failed"] == 0
    for step in STEPS:
        nb = nbformat.read(run / "notebooks" / f"{step}.ipynb", as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"]
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{step}: no inline figure"
        injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
        assert "campaign = 'data/tiny.h5'" in injected.source and str(root) not in injected.source  # relative paths
        assert "train_lr" not in injected.source  # only what this run changed


def test_reports_units_and_tidy_predictions(pipeline_run) -> None:
    root, name = pipeline_run
    run = root / "runs" / name
    for model in ("image_only", "physical_only", "concat", "attention", "random_init", "image_stats_mlp", "gbdt_all"):
        rep = json.loads((run / "reports" / f"{model}__lofo.json").read_text())
        assert {
            "model_variant",
            "description",
            "validation_protocol",
            "fold_results",
            "aggregate_metrics",
            "timestamp",
            "provenance",
            "seed_spread",
            "n_seeds",
        } <= set(rep)
        assert [f["test_flight"] for f in rep["fold_results"]][::2] == [
            "30Oct24",
            "10Feb25",
            "23Oct24",
            "12Feb25",
            "18Feb25",
        ]
        assert rep["n_seeds"] == 2 and rep["seed_spread"]["pooled_mae_km"]["n"] == 2
        assert len(list((run / "units" / "lofo" / model).glob("fold*_seed*.json"))) == 10
    import pandas as pd

    pred = pd.read_csv(run / "predictions.csv")
    assert {
        "model",
        "protocol",
        "seed",
        "fold",
        "flight",
        "sample",
        "time_utc",
        "lat",
        "lon",
        "truth_km",
        "pred_km",
    } <= set(pred.columns)
    assert pred["time_utc"].str.endswith("Z").all() and pred["lat"].notna().all()
    # held-out rows carry the label-free interval cbh predict writes; its coverage is the report's flight_t row
    conf = pd.read_csv(run / "tables" / "comparison_intervals.csv").query("method == 'flight_t'")
    held = pred[pred["interval"].fillna("").ne("")]
    assert len(conf) and set(held["protocol"]) == {"lofo"} and held[["lower_km", "upper_km"]].notna().all().all()
    for (model, seed, flight), d in held.groupby(["model", "seed", "flight"]):
        row = conf[(conf["model"] == model) & (conf["seed"] == seed) & (conf["flight"] == flight)]
        covered = ((d["truth_km"] >= d["lower_km"]) & (d["truth_km"] <= d["upper_km"])).mean()
        assert len(row) == 1 and covered == pytest.approx(float(row["coverage"].iloc[0]))
        assert 1000 * (d["upper_km"] - d["lower_km"]).mean() == pytest.approx(float(row["width_m"].iloc[0]))
    assert len(held.groupby(["model", "seed", "flight"])) == len(conf)


def test_summary_has_seed_spread_for_every_model_and_baseline(pipeline_run) -> None:
    root, name = pipeline_run
    summary = json.loads((root / "runs" / name / "summary.json").read_text())
    lofo = {r["model"]: r for r in summary["headline"] if r["protocol"] == "lofo"}
    for model in (
        "random_init",
        "image_stats_mlp",
        "image_stats_gbdt",
        "gbdt_all",
        "gbdt",
        "climatology",
        "image_only",
        "physical_only",
        "concat",
        "attention",
    ):
        r = lofo[model]
        assert r["n_seeds"] == 2 and r["pooled_mae_m_sd"] is not None and r["n"] == 233
    assert lofo["gbdt"]["pooled_mae_m_sd"] == 0  # deterministic
    pre = summary["pretraining"]
    assert (
        pre["n_encoders"] == 10
    )  # 5 held-out flights x 2 seeds (LOFO only) and pre["floor_predict_zero"] > 0 and pre["floor_interpolation"] > 0
    assert all(e["frames_of_held_out"] == 0 for e in pre["encoders"] if e["scope"].startswith("fold"))
    comp = summary["comparison"]
    assert any(c["model"] == "image_only" and c["reference"] == "random_init" for c in comp["verdicts"])
    vs_clim = [c for c in comp["verdicts"] if c["reference"] == "climatology"]
    assert {"gbdt_all_fn", "concat_fn"} <= {c["model"] for c in vs_clim}
    for c in vs_clim:  # both headline metrics, the block and the flight-level evidence travel together
        assert {"pooled_lo_m", "flight_lo_m", "block", "holds_at_2x_block", "flights_better", "sign_flip_p"} <= set(c)
    assert comp["bootstrap"]["block_min"] >= 1
    assert comp["findings"]["shows"] and comp["findings"]["does_not_show"]


def test_figures_are_written(pipeline_run) -> None:
    root, name = pipeline_run
    figs = {p.stem for p in (root / "runs" / name / "figures").glob("*.png")}
    expected = {
        "explore_cbh_per_flight",
        "explore_features_per_flight",
        "explore_feature_correlation",
        "explore_example_images",
        "explore_image_stats",
        "explore_shadow_vs_lidar",
        "explore_cbh_along_track",
        "explore_ks_heatmap",
        "pretrain_loss",
        "pretrain_reconstructions",
        "train_attention_attention_weights",
        "compare_protocol_inflation",
        "compare_per_flight_lofo",
        "compare_differences",
        "compare_few_shot",
        "compare_conformal_coverage",
        "compare_shift_ks",
        "compare_pca",
        "compare_best_pred_vs_true",
        "compare_error_by_regime",
    }
    expected |= {
        f"train_{m}_{kind}"
        for m in ("image_only", "physical_only", "concat", "attention", "random_init", "image_stats_mlp")
        for kind in ("loss", "pred_vs_true", "fold_bars")
    }
    assert expected <= figs, expected - figs


def test_index_links_everything_and_renders_offline(pipeline_run) -> None:
    root, name = pipeline_run
    run = root / "runs" / name
    page = (run / "index.html").read_text()
    links = re.findall(r"(?:href|src)='([^']+)'", page)
    for step in STEPS:
        assert f"html/{step}.html" in links and f"html/{step}.report.html" in links
    for link in links:
        assert (run / link).resolve().exists(), link
    data_files = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.suffix in (".csv", ".json")}
    assert data_files <= set(links), data_files - set(links)
    assert "<figcaption>" in page and "pooled MAE (m)" in page and "± " in page
    for html in (run / "html").glob("*.html"):
        text = html.read_text()
        assert not re.search(r"(?:src|href)=[\"']https?://", text), f"{html.name} loads from the network"
        assert '<script src="">' not in text
    report = (run / "html" / "compare.report.html").read_text()
    body = report.split("</style>")[-1]
    assert "Warning" not in body and str(root) not in body and "/home/" not in body and "site-packages" not in body


def test_monitor_reads_the_run(pipeline_run, capsys: pytest.CaptureFixture[str]) -> None:
    root, name = pipeline_run
    assert main(["monitor", str(root / "runs" / name)]) == 0
    out = capsys.readouterr().out
    for model in ("image_only", "physical_only", "concat", "attention"):
        assert model in out
    assert "best_val_loss" in out and "explore ok" in out and "pretraining:" in out
    assert " held out, epoch " in out and not re.search(r"fold \d{3,}", out)  # flights, not internal fold ids
    cwd = os.getcwd()
    os.chdir(root)
    try:  # a run's name, as cbh runs and cbh compare take it
        assert main(["monitor", name]) == 0 and f"runs/{name}" in capsys.readouterr().out
    finally:
        os.chdir(cwd)


def test_predict_reproduces_the_held_out_predictions(
    pipeline_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cbhlib.data.campaign import Campaign
    from cbhlib.store.rundir import RunDir
    from cbhlib.store.units import UnitStore
    from cbhlib.training.predict import predict

    root, name = pipeline_run
    run = RunDir(root / "runs" / name)
    camp = Campaign(root / "data" / "tiny.h5")
    for model in ("concat", "attention", "image_stats_mlp", "concat_fn", "physical_only_fn"):
        per_unit, ens = predict(run.root, model, camp, intervals="flight")
        for u in UnitStore(run).read_all(model, "lofo"):
            got = per_unit[(per_unit.fold == u.fold_id) & (per_unit.seed == u.seed)].set_index("sample").loc[u.test_idx]
            np.testing.assert_allclose(got["pred_km"], u.pred, atol=1e-5)  # flight-normalised heads too
        assert len(ens) == camp.n_samples and (ens["n_units"] == 10).all()
        lo, hi, pr = ens["lower_km"], ens["upper_km"], ens["pred_km"]
        assert (hi > pr).all()
        np.testing.assert_allclose(lo, np.maximum(pr - (hi - pr), 0.0), atol=1e-12)  # symmetric, floored at 0 km
        assert {"lower_km", "upper_km"} <= set(per_unit.columns)
    out = tmp_path / "p.csv"
    assert (
        main(
            [
                "predict",
                str(run.root),
                "--model",
                "physical_only",
                "--campaign",
                str(root / "data" / "tiny.h5"),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_text().startswith("sample,flight,time_utc,lat,lon,pred_km,pred_sd_km,n_units")
    out_i = tmp_path / "pi.csv"
    args = ["predict", str(run.root), "--model", "concat_fn", "--campaign", str(root / "data" / "tiny.h5")]
    assert main([*args, "-o", str(out_i), "--intervals", "--level", "0.8"]) == 0
    header = out_i.read_text().splitlines()[0].split(",")
    assert header[-3:] == ["lower_km", "upper_km", "interval"] and "flight_t 80%" in out_i.read_text()  # the default
    assert "the campaign the heads of concat_fn were trained on" in capsys.readouterr().err  # in-sample, and said
    for extra, said in (
        (["--intervals", "--level", "0.5"], "--level: expected a nominal coverage above 0.5 and below 1 (0.9 for 90"),
        (["--level", "0.8"], "--level 0.8: expected with --intervals"),
    ):
        assert main([*args, "-o", str(tmp_path / "no.csv"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert said in err and len(err.splitlines()) == 1 and not (tmp_path / "no.csv").exists()
    gone = ["predict", str(tmp_path / "nowhere"), *args[2:]]
    assert main([*gone, "-o", str(tmp_path / "no.csv")]) == 2
    assert (
        "nowhere: expected a run folder (made by cbh run or cbh train); found no such folder" in capsys.readouterr().err
    )
    misplaced = ["predict", *args[2:], "-o", str(tmp_path / "no.csv"), "--intervals", str(run.root)]  # folder last
    for argv, said in (
        ([*args, "-o", str(tmp_path / "no.csv"), "--level", "abc"], "argument --level: invalid float value: 'abc'"),
        (misplaced, "put the run folder before --intervals, or write --intervals=flight_t"),
        (
            [*args, "-o", str(tmp_path / "no.csv"), "--intervals", "aci"],
            "expected flight_t, flight, flight_max, online; found 'aci'",
        ),
        (
            [*args, "-o", str(tmp_path / "no.csv"), "--protocol", "blocks"],
            "argument --protocol: invalid choice: 'blocks'",
        ),
    ):  # argparse's own errors: one line too, no usage block
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert (
            stop.value.code == 2
            and said in err
            and len(err.splitlines()) == 1
            and err.startswith("cbh predict: error:")
        )
    wrong = ["predict", str(run.root), "--model", "concatfn", "--campaign", str(root / "data" / "tiny.h5")]
    assert main([*wrong, "-o", str(tmp_path / "no.csv")]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'concat_fn'?" in err and "model folders under units/lofo: attention," in err
    (run.root / "units" / "lofo" / "empty").mkdir()
    assert main([*wrong[:3], "empty", *wrong[4:], "-o", str(tmp_path / "no.csv")]) == 2
    err = capsys.readouterr().err
    assert "its folder holds no finished unit" in err and "did you mean" not in err
    (run.root / "units" / "lofo" / "empty").rmdir()
    assert main([*args, "-o", str(tmp_path / "p995.csv"), "--intervals", "--level", "0.995"]) == 0
    assert "flight_t 99.5%" in (tmp_path / "p995.csv").read_text()
    out_t = tmp_path / "pt.csv"
    assert main([*args, "-o", str(out_t), "--intervals", "flight_t"]) == 0  # random effects over flights
    t = pd.read_csv(out_t)
    assert (t["interval"] == "flight_t 90%").all() and (t["lower_km"] <= t["pred_km"]).all()
    assert (t["lower_km"] >= 0).all()  # no interval reaches below the sea surface
    assert np.isfinite(t["upper_km"]).all() and (t["upper_km"] > t["pred_km"]).all()
    assert (
        main(
            [
                "predict",
                str(run.root),
                "--model",
                "physical_only",
                "--campaign",
                str(root / "data" / "tiny.h5"),
                "-o",
                str(root / "data" / "tiny.h5"),
            ]
        )
        == 2
    )  # never over its input


def test_online_intervals_learn_from_the_labels_that_arrived_and_never_from_their_own(
    pipeline_run, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """``cbh predict --intervals online --labels`` as lidar labels arrive: each sample's interval
    learns from its flight's labels before it only (ensemble and every head, on its own outer
    fold's residuals), a flight or a start without labels gets the label-free flight_t interval, a
    table of some samples' labels stands for the campaign's, and the bad table or the wrong method
    is one line naming what was expected."""
    from cbhlib.data.campaign import Campaign
    from cbhlib.evaluation.intervals.newflight import Intervals, calibration_residuals
    from cbhlib.store.rundir import RunDir
    from cbhlib.training.predict import predict

    root, name = pipeline_run
    run, data = root / "runs" / name, root / "data" / "tiny.h5"
    camp = Campaign(data)
    y, fl = camp.cbh_km.astype(float), np.asarray(camp.flight)
    some = np.where(np.arange(camp.n_samples) % 3 == 1, y, np.nan)  # a third of the labels have arrived
    some[fl == fl.max()] = np.nan  # none yet for the last flight
    per_unit, ens = predict(run, "concat_fn", camp, intervals="online", labels=some)
    assert f"no label has arrived before any sample of {camp.flight_names[fl.max()]}:" in caplog.text
    learnt = ens["labels_before"] > 0  # the others say they are the label-free interval
    assert (ens.loc[learnt, "interval"] == "online 90%").all() and {"lower_km", "upper_km"} <= set(per_unit.columns)
    assert (ens.loc[~learnt, "interval"] == "flight_t 90% (no label before it)").all() and (~learnt).any()
    assert (ens["lower_km"] <= ens["upper_km"]).all() and (ens["lower_km"] >= 0).all()
    for k in np.unique(fl):
        own, at = np.isfinite(some[fl == k]), np.arange((fl == k).sum())
        d = ens[fl == k]
        np.testing.assert_array_equal(d["labels_before"], np.cumsum(own) - own)
        latest = [max([j for j in range(i) if own[j]], default=None) for i in at]
        want = [pd.NA if j is None else i - j for i, j in zip(at, latest, strict=True)]
        assert d["samples_since_label"].tolist() == want
    _, free = predict(run, "concat_fn", camp, intervals="flight_t")
    none = ens["labels_before"] == 0  # the start of each flight, and the whole of the last one
    assert none.sum() > (fl == fl.max()).sum()
    for col in ("lower_km", "upper_km"):
        np.testing.assert_allclose(ens.loc[none, col], free.loc[none, col], rtol=1e-12)
        assert not np.allclose(ens.loc[~none, col], free.loc[~none, col])  # learnt from the labels
    res = calibration_residuals(RunDir(run), "concat_fn")
    for (fold, _), u in per_unit.groupby(["fold", "seed"]):  # each head: its own outer fold's residuals
        lo, hi = Intervals(res, 0.1, "online", some).bounds(u["pred_km"].to_numpy(), fl, (fold,))
        np.testing.assert_allclose(u["lower_km"], lo, rtol=1e-12)
        np.testing.assert_allclose(u["upper_km"], hi, rtol=1e-12)
    f0 = fl == fl[0]
    later = some.copy()  # one more label arrives, in a gap: nothing at or before it moves
    j = int(np.flatnonzero(~np.isfinite(some) & f0)[-3])
    later[j] = y[j]
    _, ens_j = predict(run, "concat_fn", camp, intervals="online", labels=later)
    np.testing.assert_array_equal(ens_j.loc[:j, "upper_km"], ens.loc[:j, "upper_km"])
    assert not np.array_equal(ens_j.loc[j + 1 :, "upper_km"], ens.loc[j + 1 :, "upper_km"])
    t = int(np.flatnonzero(np.isfinite(some) & f0)[2])  # a labelled sample of the first flight
    moved = some.copy()
    moved[t] += 0.7
    per_unit2, ens2 = predict(run, "concat_fn", camp, intervals="online", labels=moved)
    same = (np.arange(camp.n_samples) <= t) | ~f0  # its own interval, earlier ones and other flights: untouched
    for col in ("lower_km", "upper_km"):
        np.testing.assert_array_equal(ens2.loc[same, col], ens.loc[same, col])
        assert not np.array_equal(ens2.loc[~same, col], ens.loc[~same, col])  # later ones learn from it
        heads = per_unit["sample"].isin(np.flatnonzero(same))
        np.testing.assert_array_equal(per_unit2.loc[heads, col], per_unit.loc[heads, col])
        assert not np.array_equal(per_unit2.loc[~heads, col], per_unit.loc[~heads, col])
    capsys.readouterr()
    table = tmp_path / "arrived.csv"
    arrived = np.flatnonzero(np.isfinite(some))
    pd.DataFrame({"sample": arrived, "cbh_km": some[arrived]}).to_csv(table, index=False)
    args = ["predict", str(run), "--model", "concat_fn", "--campaign", str(data)]
    assert main([*args, "-o", str(tmp_path / "on.csv"), "--intervals", "online", "--labels", str(table)]) == 0
    said = capsys.readouterr()
    assert f"learnt from {int(np.isfinite(some).sum())} labels" in said.out
    assert "held-out record of single heads (" in said.out and "later halves" in said.out  # as the comparison scored it
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "on.csv")[["lower_km", "upper_km"]], ens[["lower_km", "upper_km"]], rtol=1e-12
    )
    _, whole = predict(run, "concat_fn", camp, intervals="online")  # no table: the campaign's own labels
    assert (whole.groupby("flight")["labels_before"].max() + 1 == whole.groupby("flight").size()).all()
    capsys.readouterr()  # its in-sample warning
    bad = tmp_path / "bad.csv"
    for text, expect in (
        ("sample,cbh\n0,1.0\n", "bad.csv: expected columns sample, cbh_km; found ['sample', 'cbh']"),
        (f"sample,cbh_km\n{camp.n_samples},1.0\n", "column 'sample': expected row numbers of the campaign, 0 to"),
        ("sample,cbh_km\n0,1.0\n0,1.1\n", "column 'sample': expected each sample once; found 0 twice"),
        ("sample,cbh_km\n0,-1\n", "column 'cbh_km': expected a cloud base in km, 0 to 20"),
        ("sample,cbh_km\n0,1.0,\n", "found a row with more fields than the header (a trailing comma?)"),
        ("sample,cbh_km\n0.5,1.0\n", "column 'sample': expected row numbers of the campaign, 0 to"),
        ("", "bad.csv: expected a CSV table with columns sample, cbh_km; found EmptyDataError"),
    ):
        bad.write_text(text)
        assert main([*args, "-o", str(tmp_path / "no.csv"), "--intervals", "online", "--labels", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert expect in err and len(err.splitlines()) == 1 and not (tmp_path / "no.csv").exists()
    assert main([*args, "-o", str(tmp_path / "no.csv"), "--intervals", "flight_t", "--labels", str(table)]) == 2
    err = capsys.readouterr().err
    assert "expected with --intervals online (it learns from them); found --intervals flight_t" in err


def test_a_failing_notebook_is_reported_and_its_dependants_skipped(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project)
    _notebook(project / "notebooks" / "99_broken.ipynb", "raise RuntimeError('boom in a cell')")
    (project / "params" / "broken.yaml").write_text(
        "run_name: broken\ncampaign: data/tiny.h5\nsynthetic_preset: null\nsteps:\n"
        "  - {name: first, notebook: notebooks/99_broken.ipynb}\n"
        "  - {name: second, notebook: notebooks/99_broken.ipynb, needs: [first]}\n"
    )
    code = main(["run", "--pipeline", "params/broken.yaml", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "first" in err and "cell" in err and "boom in a cell" in err and "Traceback" not in err
    summary = json.loads((project / "runs" / "broken" / "summary.json").read_text())
    assert summary["steps"]["failed"] == 1 and summary["steps"]["skipped"] == 1
    out = nbformat.read(project / "runs" / "broken" / "notebooks" / "first.ipynb", as_version=4)
    assert any("papermill-error-cell-tag" in c.metadata.get("tags", []) for c in out.cells)


def test_a_small_features_only_campaign_runs_with_default_settings(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """3 flights, 120 samples, no images: image steps are skipped (and counted as skipped),
    the batch size adapts to the small splits, the physical steps and the comparison run."""
    monkeypatch.chdir(project)
    write_campaign(project / "data" / "small.h5", small_data((50, 40, 30), k_features=6, seed=2))
    code = main(
        [
            "run",
            "--run-name",
            "small",
            "--campaign",
            "data/small.h5",
            "--quiet",
            "--no-html",
            *_sets("compare.bootstrap_reps=100", "train.epochs=5"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "4 ok, 9 skipped, 0 failed" in capsys.readouterr().out
    run = project / "runs" / "small"
    assert (run / "reports" / "physical_only__lofo.json").exists() and (run / "reports" / "gbdt__lofo.json").exists()
    assert not (run / "reports" / "image_only__lofo.json").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"]["skipped"] == 9 and summary["steps"]["ok"] == 4 and summary["steps"]["failed"] == 0
    for model in ("gbdt_fn", "ridge_fn", "physical_only_fn"):  # features-only campaigns get the features-only variants
        assert (run / "reports" / f"{model}__lofo.json").exists()
    assert not (run / "reports" / "gbdt_all_fn__lofo.json").exists()
    verdicts = summary["comparison"]["verdicts"]
    assert {"gbdt_fn", "ridge_fn", "physical_only_fn"} <= {
        v["model"] for v in verdicts if v["reference"] == "climatology"
    }


def test_parameters_never_become_code(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project)
    payload = base64.b64encode(b'"+str(__import__("os").system("touch pwned.txt"))+"').decode()
    assert (
        main(
            [
                "run",
                "--run-name",
                "evil",
                "--campaign",
                "data/tiny.h5",
                "--only",
                "explore",
                "--set",
                f"seeds=!!binary {payload}",
            ]
        )
        == 2
    )
    assert "plain value" in capsys.readouterr().err
    (project / "params" / "evil.yaml").write_text(f"explore:\n  images_per_flight: !!binary {payload}\n")
    (project / "params" / "evil_pipeline.yaml").write_text(
        "run_name: evil\ncampaign: data/tiny.h5\nsynthetic_preset: null\nsteps:\n"
        "  - {name: explore, notebook: notebooks/01_explore_campaign.ipynb, params: [params/evil.yaml]}\n"
    )
    assert main(["run", "--pipeline", "params/evil_pipeline.yaml"]) == 2
    assert "explore.images_per_flight" in capsys.readouterr().err
    assert not (project / "pwned.txt").exists() and not (project / "runs" / "evil").exists()


@pytest.mark.parametrize("name", ["..", ".", "../escape", "/tmp/abs", "a/b", ""])
def test_run_names_stay_inside_runs(
    project: Path, monkeypatch: pytest.MonkeyPatch, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project)
    before = sorted(p.name for p in project.iterdir())
    assert main(["run", "--run-name", name, "--campaign", "data/tiny.h5", "--only", "explore"]) == 2
    assert "run_name" in capsys.readouterr().err
    assert sorted(p.name for p in project.iterdir()) == before


def test_unknown_set_key_stops_before_any_notebook(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project)
    assert main(["run", "--run-name", "typo", "--campaign", "data/tiny.h5", "--set", "seeed=3"]) == 2
    err = capsys.readouterr().err
    assert "'seeed'" in err and "did you mean 'seeds'" in err
    assert not (project / "runs" / "typo" / "notebooks").exists()


def test_a_live_lock_refuses_and_a_stale_one_is_taken_over(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    monkeypatch.chdir(project)
    lock = project / "runs" / "locked" / ".lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "started": 0}))
    assert main(["run", "--run-name", "locked", "--campaign", "data/tiny.h5", "--only", "explore", "--quiet"]) == 2
    assert "in use by pid" in capsys.readouterr().err
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "started": 0}))  # no such process
    _notebook(project / "notebooks" / "98_quick.ipynb", "x")  # the lock is the pipeline's: any notebook will do
    (project / "params" / "locked.yaml").write_text(
        "run_name: locked\ncampaign: data/tiny.h5\nsynthetic_preset: null\n"
        "steps:\n  - {name: quick, notebook: notebooks/98_quick.ipynb}\n"
    )
    assert main(["run", "--pipeline", "params/locked.yaml", "--quiet", "--no-html"]) == 0
    assert not lock.exists() and (project / "runs" / "locked" / "notebooks" / "quick.ipynb").exists()


def test_run_outside_the_project_says_where_to_run_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run"]) == 2
    assert "project root" in capsys.readouterr().err


def _browser():
    import shutil as sh

    chromium = sh.which("chromium") or sh.which("chromium-browser") or sh.which("google-chrome")
    driver = sh.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium is not installed (.ci/run installs Debian's chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,900",
        "--allow-file-access-from-files",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_index_and_a_report_in_a_real_browser(pipeline_run) -> None:
    """No broken link, no missing image, no console error; screenshots saved in the run folder."""
    root, name = pipeline_run
    run = root / "runs" / name
    shots = run / "screenshots"
    shots.mkdir(exist_ok=True)
    browser = _browser()
    try:
        for page in (run / "index.html", run / "html" / "compare.report.html"):
            browser.get(page.as_uri())
            broken = browser.execute_script(
                "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
            )
            assert not broken, f"{page.name}: images that did not load: {broken[:3]}"
            for href in browser.execute_script("return Array.from(document.links).map(a => a.href)"):
                if href.startswith("file://"):
                    target = Path(href[7:].split("#")[0])
                    assert target.exists(), f"{page.name}: broken link {href}"
            errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
            assert not errors, f"{page.name}: console errors {errors[:3]}"
            browser.save_screenshot(str(shots / f"{page.stem}.png"))
        assert (shots / "index.png").stat().st_size > 10_000
    finally:
        browser.quit()


VOLATILE = {"timestamp", "generated", "seconds", "time"}


def _json_diffs(a: object, b: object, path: str = "") -> list[str]:
    """Where two JSON values differ, ignoring wall-clock fields."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in one" for k in set(a) ^ set(b)]
        return out + [d for k in a if k in b and k not in VOLATILE for d in _json_diffs(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _json_diffs(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _copy_project(root: Path, to: Path) -> Path:
    for d in ("notebooks", "params"):
        shutil.copytree(root / d, to / d)
    (to / "data").mkdir()
    shutil.copy(root / "data" / "tiny.h5", to / "data" / "tiny.h5")
    return to


def test_a_serial_run_reproduces_the_two_dask_workers_reports(
    pipeline_run,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The shared run is made by two Dask workers (steps side by side); a serial run of the
    same steps gives every report, unit, checkpoint hash and the pretraining summary the
    same, except wall-clock fields (same units, same seeds, one torch thread per process)."""
    root, name = pipeline_run
    steps = read_jsonl(root / "runs" / name / "logs" / "pipeline.log")
    running: set[str] = set()
    overlapped = False
    for s in steps:  # some step started while another was still running: the workers ran side by side
        if s["status"] == "running":
            overlapped |= bool(running)
            running.add(s["name"])
        else:
            running.discard(s["name"])
    assert overlapped, "the shared run did not run steps side by side"
    other = _copy_project(root, tmp_path_factory.mktemp("serial"))
    monkeypatch.chdir(other)
    code = main(
        [
            "run",
            "--run-name",
            name,
            "--campaign",
            "data/tiny.h5",
            "--no-html",
            "--only",
            "pretrain,physical_only,image_only",
            *_sets(*TINY),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "Dask" not in out and "3 ok, 0 skipped, 0 failed" in out
    dask, serial = root / "runs" / name, other / "runs" / name
    files = sorted(
        p.relative_to(serial) for p in serial.rglob("*.json") if p.parts[-2] != "config" and p.name != "summary.json"
    )
    assert {"reports", "units", "pretrain_summary.json"} <= {f.parts[0] for f in files}
    assert any("image_only" in f.parts for f in files) and len(files) > 30

    def made(run: Path, steps: tuple[str, ...] = ("physical_only", "image_only")) -> list[Path]:
        return sorted(
            p.relative_to(run)
            for p in run.rglob("*.json")
            if any(s in p.parts or p.name.startswith(f"{s}__") for s in steps)
        )

    assert made(dask) == made(serial)  # the same units and reports on both sides, none extra
    for rel in files:
        diffs = _json_diffs(json.loads((serial / rel).read_text()), json.loads((dask / rel).read_text()))
        assert not diffs, f"{rel}: {diffs[:3]}"
    encoders = sorted(p.relative_to(serial) for p in (serial / "encoders").rglob("*.pt"))
    assert len(encoders) >= 10 and set(encoders) <= {p.relative_to(dask) for p in (dask / "encoders").rglob("*.pt")}
    for rel in encoders:  # same weights, same metadata; only the seconds it took differ
        a, b = load_checkpoint(serial / rel), load_checkpoint(dask / rel)
        assert set(a) == set(b), rel
        for k in set(a) - VOLATILE:
            same = (
                torch.equal(a[k], b[k])
                if isinstance(a[k], torch.Tensor)
                else (all(torch.equal(a[k][j], b[k][j]) for j in a[k]) if k == "state_dict" else a[k] == b[k])
            )
            assert same, f"{rel}: {k}"


def test_a_killed_worker_is_survived_and_its_unit_recomputed(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL the process pretraining an encoder mid-way: Dask reruns the task, the run
    finishes, the encoder is trained again from its first epoch and every encoder loads."""
    import signal
    import threading
    import time

    other = _copy_project(project, tmp_path_factory.mktemp("kill"))
    monkeypatch.chdir(other)
    run = other / "runs" / "kill"
    log = run / "logs" / "pretrain.log"
    result: dict[str, int] = {}
    argv = [
        "run",
        "--run-name",
        "kill",
        "--workers",
        "2",
        "--campaign",
        "data/tiny.h5",
        "--no-html",
        "--quiet",
        "--only",
        "pretrain",
        *_sets(*TINY, "seeds=[0]", "pretrain.epochs=40"),
    ]
    worker = threading.Thread(target=lambda: result.setdefault("code", main(argv)))
    worker.start()
    victim = ""
    deadline = time.time() + 240
    while not victim and worker.is_alive() and time.time() < deadline:
        time.sleep(0.2)
        rows = read_jsonl(log) if log.exists() else []
        live = [r for r in rows if 3 <= r["epoch"] < 30]
        if live:
            victim = live[-1]["worker"]
            killed = (live[-1]["key"], live[-1]["seed"])
            os.kill(int(victim.split(":")[1]), signal.SIGKILL)
    worker.join(timeout=300)
    assert victim, "no encoder was seen mid-training"
    assert result.get("code") == 0
    rows = read_jsonl(log)
    firsts = [r for r in rows if (r["key"], r["seed"]) == killed and r["epoch"] == 1]
    assert len(firsts) >= 2 and firsts[-1]["worker"] != victim  # started again, elsewhere
    encoders = sorted((run / "encoders").rglob("*.pt"))
    assert len(encoders) == 5  # one per fold
    for path in encoders:
        load_checkpoint(path)


def test_readme_sections_are_generated_from_the_run_and_the_benchmarks(
    pipeline_run,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cbhlib.pipeline.readme import main as readme_main

    root, name = pipeline_run
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n<!-- results:start -->\nold\n<!-- results:end -->\n\n<!-- performance:start -->\nold\n"
        "<!-- performance:end -->\ntail\n"
    )
    bench = tmp_path / "bench-1.json"
    bench.write_text(
        json.dumps(
            {
                "machine": {"cpus": 2, "torch": "2.13.0", "gpu": None},
                "date": "2026-11-27 10:00",
                "command": "python benchmarks/run.py --pipeline",
                "presets": [
                    {
                        "preset": "default",
                        "device": "cpu",
                        "pretrain_default_recipe_images_per_s": 1234.5,
                        "heads_all_modes_5folds_50ep_s": 6.25,
                    }
                ],
                "scaling": {"pipeline_default_w2_s": 300.0, "heads_physical_only_5000_samples_20ep_s": 2.5},
            }
        )
    )
    with caplog.at_level("WARNING", logger="cbhlib.pipeline.readme"):
        args = [str(root / "runs" / name), str(readme), "--benchmarks", str(bench)]
        assert readme_main([*args, "--calibration", str(tmp_path / "none.json")]) == 0
    left = "left out: the calibration table (needs benchmarks/calibrate_synth.py --json); the thread drift (needs "
    assert left in caplog.text and "the intervals across campaigns (needs make campaigns)" in caplog.text
    text = readme.read_text()
    summary = json.loads((root / "runs" / name / "summary.json").read_text())
    gbdt = next(r for r in summary["headline"] if r["model"] == "gbdt" and r["protocol"] == "lofo")
    assert f"{gbdt['pooled_mae_m']:.0f} ± {gbdt['pooled_mae_m_sd']:.0f}" in text  # numbers from the run
    assert "Leave-one-flight-out" in text and "\nold\n" not in text and text.endswith("tail\n")
    v = next(c for c in summary["comparison"]["verdicts"] if c["reference"] == "climatology")
    assert f"| {v['model']} | climatology | {v['pooled_diff_m']:+.0f} [" in text  # both metrics' intervals
    assert "sign-flip" in text and "Politis-White" in text
    assert "| pretraining throughput (images/s) | 1,234.5 |" in text and "`--workers 2`" in text
    assert "heads: 4 modes x 5 folds x 50 epochs (s) | 6.2" in text and "5000 samples" in text
    assert readme_main([str(tmp_path / "nowhere"), str(readme)]) == 2
    assert "run `make run` first" in capsys.readouterr().err


def test_the_readme_states_the_drift_measured_between_two_thread_counts(pipeline_run, tmp_path: Path) -> None:
    """The drift sentence is computed from two runs: moves of rows and interval ends, verdicts changed."""
    from cbhlib.errors import CbhError
    from cbhlib.pipeline.readme import drift_line

    root, name = pipeline_run
    summary = json.loads((root / "runs" / name / "summary.json").read_text())
    other = json.loads(json.dumps(summary))
    other["run"], other["settings"] = "threads1", {**summary["settings"], "threads": 1}
    row = next(r for r in other["headline"] if r["protocol"] == "lofo")
    row["pooled_mae_m"] += 2.5
    v = other["comparison"]["verdicts"][0]
    v["flight_lo_m"] -= 4.0
    v["verdict"] = "something else"
    line = drift_line(summary, other)
    assert "row is 2.5 m" in line and "interval end 4 m" in line
    assert f"1 of {len(summary['comparison']['verdicts'])} verdicts change" in line and "threads 1" in line
    other["settings"]["seeds"] = [9]  # another result-changing setting: not a drift measurement
    with pytest.raises(CbhError, match="expected the settings of run"):
        drift_line(summary, other)


def test_a_run_with_only_some_steps_keeps_the_other_steps_in_its_index(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from cbhlib.pipeline.execute import StepResult, with_earlier_steps
    from cbhlib.store.rundir import RunDir

    run = RunDir(Path("runs") / "r")
    (tmp_path / run.pipeline_log).parent.mkdir(parents=True)
    (tmp_path / run.root / "notebooks").mkdir()
    for name in ("explore", "pretrain"):  # their notebooks are still there; image_only's is gone
        (tmp_path / run.notebook(name)).write_text("{}")
    log = [
        ("explore", "running", 0.0, "explore"),
        ("explore", "ok", 12.0, "explore"),
        ("pretrain", "failed", 3.0, "pretrain"),
        ("image_only", "ok", 9.0, "image_only"),
        ("compare", "ok", 40.0, "compare"),
    ]
    (tmp_path / run.pipeline_log).write_text(
        "".join(
            json.dumps({"name": n, "status": s, "seconds": t, "notebook": str(run.notebook(nb)), "error": ""}) + "\n"
            for n, s, t, nb in log
        )
    )
    pipe = SimpleNamespace(steps=[SimpleNamespace(name=n) for n in ("explore", "pretrain", "image_only", "compare")])
    now = StepResult("compare", "ok", 41.0, str(run.notebook("compare")))
    shown = with_earlier_steps(tmp_path, run, pipe, {"compare": now})
    assert [(s.name, s.status, s.seconds) for s in shown] == [
        ("explore", "ok", 12.0),
        ("pretrain", "failed", 3.0),
        ("compare", "ok", 41.0),  # this call's result, not the log's older one
    ]
