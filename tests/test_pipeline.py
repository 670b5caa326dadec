"""Every notebook runs for real under papermill on a tiny campaign, through the pipeline."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from cbhlib.cli import main
from cbhlib.pipeline import load_pipeline, run_pipeline
from tests.conftest import ROOT

TINY = {
    "epochs": 3, "patience": 2, "pretrain_epochs": 1, "embed_dim": 48, "depth": 1, "heads": 3,
    "protocols": ["lofo", "random", "within_flight"], "few_shot_repeats": 2, "images_per_flight": 1,
    "progress": False,
}


@pytest.fixture(scope="module")
def project(tiny_campaign: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's copy of the project: notebooks, params and a campaign file."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copytree(ROOT / "params", root / "params")
    (root / "data").mkdir()
    shutil.copy(tiny_campaign, root / "data" / "tiny.h5")
    return root


@pytest.fixture(scope="module")
def pipeline_run(project: Path) -> tuple[Path, list]:
    import os

    cwd = os.getcwd()
    os.chdir(project)
    try:
        cfg = load_pipeline("params/pipeline.yaml")
        cfg.run_name, cfg.campaign, cfg.synthetic_preset = "tiny", "data/tiny.h5", None
        results = run_pipeline(cfg, overrides=TINY, progress=False)
    finally:
        os.chdir(cwd)
    return project, results


def test_every_notebook_executes(pipeline_run) -> None:  # noqa: ANN001
    root, results = pipeline_run
    assert [r.name for r in results] == ["explore", "pretrain", "image_only", "physical_only", "concat", "attention",
                                         "compare"]
    failed = {r.name: r.error for r in results if not r.ok}
    assert not failed, failed
    for r in results:
        nb = nbformat.read(root / r.output, as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"]
        if r.name != "pretrain" or True:
            assert any("image/png" in o.get("data", {}) for o in outputs), f"{r.name}: no inline figure"
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "data/tiny.h5" in injected[0].source
        assert "/tmp" not in injected[0].source  # relative paths only


def test_mode_reports_follow_the_seed_schema(pipeline_run) -> None:  # noqa: ANN001
    root, _ = pipeline_run
    run = root / "runs" / "tiny"
    for mode in ("image_only", "physical_only", "concat", "attention"):
        rep = json.loads((run / f"report_{mode}.json").read_text())
        assert {"model_variant", "description", "validation_protocol", "fold_results", "aggregate_metrics",
                "timestamp", "provenance"} <= set(rep)
        assert [f["test_flight"] for f in rep["fold_results"]] == ["30Oct24", "10Feb25", "23Oct24", "12Feb25", "18Feb25"]
        for f in rep["fold_results"]:
            assert {"fold_id", "test_flight", "n_train", "n_test", "r2", "mae_km", "rmse_km", "epoch_trained"} <= set(f)
        agg = rep["aggregate_metrics"]
        assert {"mean_r2", "std_r2", "mean_mae_km", "pooled_r2", "pooled_mae_km"} <= set(agg)
        prov = rep["provenance"]
        assert len(prov["campaign_sha256"]) == 64 and prov["parameters"]["mode"] == mode
        assert (run / f"predictions_{mode}.csv").read_text().startswith("sample,flight,fold,seed,true_km,pred_km")
        assert (run / f"report_{mode}__random.json").exists() and (run / f"training_{mode}.log").exists()
        for k in range(5):
            assert (run / "checkpoints" / f"model_{mode}_fold{k}_seed0.pt").exists()
    combined = json.loads((run / "report_all.json").read_text())
    assert {"image_only", "physical_only", "concat", "attention", "climatology", "lcl", "gbdt"} <= set(combined["lofo"])


def test_figures_are_written(pipeline_run) -> None:  # noqa: ANN001
    root, _ = pipeline_run
    figs = {p.name for p in (root / "figures" / "tiny").glob("*.png")}
    expected = {"explore_cbh_per_flight.png", "explore_features_per_flight.png", "explore_feature_correlation.png",
                "explore_example_images.png", "explore_shadow_vs_lidar.png", "explore_cbh_along_track.png",
                "explore_ks_heatmap.png", "pretrain_loss.png", "pretrain_reconstructions.png",
                "train_attention_weights.png", "compare_protocol_inflation.png", "compare_per_flight_lofo.png",
                "compare_few_shot.png", "compare_conformal_coverage.png", "compare_shift_ks.png", "compare_pca.png",
                "compare_best_pred_vs_true.png", "compare_error_by_regime.png"}
    expected |= {f"train_{m}_{kind}.png" for m in ("image_only", "physical_only", "concat", "attention")
                 for kind in ("loss", "pred_vs_true", "fold_bars")}
    assert expected <= figs, expected - figs


def test_index_links_every_notebook_and_every_link_works(pipeline_run) -> None:  # noqa: ANN001
    root, results = pipeline_run
    run = root / "runs" / "tiny"
    page = (run / "index.html").read_text()
    links = re.findall(r"(?:href|src)='([^']+)'", page)
    for r in results:
        assert f"html/{r.name}.html" in links and f"html/{r.name}.report.html" in links
    assert "summary.json" in links
    for link in links:
        assert (run / link).resolve().exists(), link
    summary = json.loads((run / "summary.json").read_text())
    assert {row["protocol"] for row in summary["rows"]} == {"lofo", "random", "within_flight"}
    assert "few_shot" in summary["comparison"] and "conformal" in summary["comparison"]
    hidden = (run / "html" / "compare.report.html").read_text()
    assert "few_shot_ks" not in hidden.split("</style>")[-1]  # code cells hidden for readers


def test_a_failing_notebook_is_reported_and_other_outputs_kept(project: Path, pipeline_run,  # noqa: ANN001
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(project)
    code = main(["run", "--run-name", "tiny", "--campaign", "data/tiny.h5", "--only", "physical_only", "--quiet",
                 "--set", "mode=bogus", "--set", "progress=false"])
    err = capsys.readouterr().err
    assert code == 2
    assert "physical_only" in err and "cell" in err and "mode" in err and "Traceback" not in err
    nb = nbformat.read(project / "runs" / "tiny" / "notebooks" / "physical_only.ipynb", as_version=4)
    assert any("papermill-error-cell-tag" in c.metadata.get("tags", []) for c in nb.cells)
    assert (project / "runs" / "tiny" / "report_concat.json").exists()  # earlier results kept
    assert (project / "runs" / "tiny" / "notebooks" / "concat.ipynb").exists()


def test_monitor_reads_the_run(pipeline_run, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    root, _ = pipeline_run
    assert main(["monitor", str(root / "runs" / "tiny")]) == 0
    out = capsys.readouterr().out
    for mode in ("image_only", "physical_only", "concat", "attention"):
        assert mode in out
    assert "best_val_loss" in out and "remaining_s_max" in out and "explore ok" in out and "pretraining:" in out


def test_a_campaign_without_images_runs_the_physical_steps(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import h5py

    monkeypatch.chdir(project)
    noimg = project / "data" / "noimg.h5"
    shutil.copy(project / "data" / "tiny.h5", noimg)
    with h5py.File(noimg, "a") as f:
        del f["images"]
    args = ["run", "--run-name", "noimg", "--campaign", "data/noimg.h5", "--quiet", "--set", "progress=false"]
    for key, value in (("epochs", 3), ("patience", 2), ("protocols", "[lofo,random]"), ("few_shot_repeats", 2)):
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for step in ("pretrain", "image_only", "concat", "attention"):
        assert f"[{step}] skipped" in out
    run = project / "runs" / "noimg"
    assert (run / "report_physical_only.json").exists() and (run / "report_gbdt.json").exists()
    assert not (run / "report_image_only.json").exists()
    assert "skipped (no images)" in (run / "index.html").read_text()
