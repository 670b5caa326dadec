"""Runs you can list and compare (issue 22 item 7): cbh runs, cbh compare, settings in index.html, MLflow."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cbhlib.cli import main
from cbhlib.config import load_config
from cbhlib.data.campaign import write_campaign
from cbhlib.data.tabular import campaign_from_dataframe
from cbhlib.pipeline.summary import write_index, write_summary
from cbhlib.store.rundir import RunDir
from tests.conftest import ROOT
from tests.test_inputs_only import _table


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with two finished physical_only runs on one campaign: 2 and 3 epochs."""
    import os

    root = tmp_path_factory.mktemp("runs_project")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        (root / "data").mkdir()
        feats = {"era5": ["t2m", "d2m"]}
        write_campaign("data/c.h5", campaign_from_dataframe(_table(("A", "B", "C"), 30), time="time", features=feats))
        for name, epochs in (("a", 2), ("b", 3)):
            sets = {"train.mode": "physical_only", "train.epochs": epochs, "seeds": [0, 1], "protocols": ["lofo"]}
            args = ["train", "--campaign", "data/c.h5", "--run-dir", f"runs/{name}", "--quiet"]
            assert main(args + [x for k, v in sets.items() for x in ("--set", f"{k}={json.dumps(v)}")]) == 0
            cfg = load_config(sets, ("paths", {"campaign": "data/c.h5", "run_dir": f"runs/{name}"}))
            run = RunDir(f"runs/{name}")
            (run.root / "config").mkdir()
            run.step_config("physical_only").write_text(yaml.safe_dump(cfg.to_nested()))
            write_summary(run.root, "data/c.h5")
    finally:
        os.chdir(cwd)
    return root


def test_runs_lists_name_date_campaign_models_and_headline(
    two_runs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(two_runs)
    capsys.readouterr()
    assert main(["runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "date", "campaign", "headline", "models"]
    assert out[1].index("data/c.h5") == out[0].index("campaign")  # every column starts under its header
    assert "physical_only" in out[1].split("pooled MAE)")[1]  # the models come last
    assert len(out) == 3 and out[1].split()[0] == "a" and "data/c.h5" in out[1] and "physical_only" in out[1]
    assert "m (lofo pooled MAE)" in out[1]


def test_compare_shows_the_settings_diff_and_paired_intervals(
    two_runs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(two_runs)
    capsys.readouterr()
    assert main(["compare", "a", "b", "--reps", "200"]) == 0
    out = capsys.readouterr().out
    assert "train.epochs: 2 -> 3" in out and "  seeds:" not in out
    row = next(line for line in out.splitlines() if line.lstrip().startswith("physical_only"))
    assert "lofo" in row and "[" in row and "]" in row, out
    assert "paired 95 % intervals" in out
    assert main(["compare", "a", "nope"]) == 2
    assert "summary.json" in capsys.readouterr().err
    path = two_runs / "runs" / "b" / "summary.json"
    text = path.read_text()
    summary = json.loads(text)
    summary["headline"].append({**summary["headline"][0], "model": "concat"})  # scored by b alone
    path.write_text(json.dumps(summary))
    try:
        assert main(["compare", "a", "b", "--reps", "50"]) == 0
        assert "scored by b only (not compared): concat (lofo)" in capsys.readouterr().out  # was dropped unsaid
    finally:
        path.write_text(text)


def test_index_html_shows_the_run_settings(two_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(two_runs)
    summary = json.loads(Path("runs/b/summary.json").read_text())
    assert summary["settings"]["train.epochs"] == 3 and summary["settings"]["seeds"] == [0, 1]
    index = write_index("runs/b", SimpleNamespace(campaign="data/c.h5"), [])
    text = index.read_text()
    assert "<h2>Settings</h2>" in text and "<code>train.epochs</code></td><td class='l'>3</td>" in text


def test_mlflow_is_optional_and_logs_settings_metrics_and_files(
    two_runs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(two_runs)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # not installed
    capsys.readouterr()
    assert main(["runs", "a", "--mlflow", "mlruns"]) == 2
    assert "expected MLflow to be installed (optional)" in capsys.readouterr().err
    calls: dict[str, object] = {}
    fake = types.ModuleType("mlflow")
    fake.set_tracking_uri = lambda uri: calls.__setitem__("uri", uri)
    fake.set_experiment = lambda name: calls.__setitem__("experiment", name)
    fake.log_params = lambda p: calls.__setitem__("params", p)
    fake.log_metrics = lambda m: calls.__setitem__("metrics", m)
    fake.log_artifact = lambda f: calls.__setitem__("artifact", f)
    fake.log_artifacts = lambda d, artifact_path=None: calls.__setitem__("artifacts", d)

    class Active:
        info = SimpleNamespace(run_id="r1")

        def __enter__(self) -> Active:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    fake.start_run = lambda run_name=None: Active()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    assert main(["runs", "a", "--mlflow", "mlruns"]) == 0
    assert "a: logged to MLflow in mlruns (run id r1)" in capsys.readouterr().out
    assert main(["runs", "aa", "--mlflow", "mlruns"]) == 2  # said 'no such runs' and exited 0
    assert "expected names of finished runs; found aa (did you mean 'a'?)" in capsys.readouterr().err
    assert str(calls["uri"]).startswith("file://") and calls["params"]["train.epochs"] == "2"
    assert "physical_only.lofo.pooled_mae_m" in calls["metrics"] and str(calls["artifact"]).endswith("summary.json")


def test_thread_count_and_device_are_settings_of_the_run(tmp_path: Path) -> None:
    """A run with --set threads=1 moves the encoder rows by float drift: `cbh compare` must name it."""
    from cbhlib.pipeline.runlist import run_settings

    run = RunDir(tmp_path / "runs" / "t")
    (run.root / "config").mkdir(parents=True)
    cfg = load_config({"threads": 1, "device": "cpu"})
    run.step_config("compare").write_text(yaml.safe_dump(cfg.to_nested()))
    settings = run_settings(run)
    assert settings["threads"] == 1 and settings["device"] == "cpu"


def test_a_setting_that_differs_between_steps_leads_with_the_value_set(tmp_path: Path) -> None:
    """--set pretrain.epochs=2 reaches every step, but a notebook that does not take it keeps the
    default in its config: the run's setting is 2, and the steps that kept 8 are named (or counted)."""
    from cbhlib.pipeline.runlist import run_settings

    run = RunDir(tmp_path / "runs" / "q")
    (run.root / "config").mkdir(parents=True)
    for step, epochs in {"explore": 8, "pretrain": 2, "concat": 2, "attention": 2}.items():
        mode = {"train.mode": step} if step in ("concat", "attention") else {}
        cfg = load_config({"pretrain.epochs": epochs, **mode})
        run.step_config(step).write_text(yaml.safe_dump(cfg.to_nested()))
    settings = run_settings(run)
    assert settings["pretrain.epochs"] == "2 (explore: 8)" and "train.mode" not in settings
    for step in ("a", "b", "c", "d"):
        run.step_config(step).write_text(yaml.safe_dump(load_config({}).to_nested()))
    assert run_settings(run)["pretrain.epochs"] == "2 (5 steps: 8)"  # the value set leads, even outnumbered


def test_a_training_notebook_s_second_config_is_not_counted_as_a_step(tmp_path: Path) -> None:
    """A training notebook records its settings again as train_<model>.yaml: with the pipeline's steps
    known (summary.json), the run's settings count each step once (the index said 15 steps for 9)."""
    import json

    from cbhlib.pipeline.runlist import run_settings

    run = RunDir(tmp_path / "runs" / "n")
    (run.root / "config").mkdir(parents=True)
    steps = {"explore": {}, "concat": {"train.mode": "concat"}, "concat_fn": {"train.flight_norm": "flight"}}
    for step, values in steps.items():
        text = yaml.safe_dump(load_config(values).to_nested())
        run.step_config(step).write_text(text)
        if step != "explore":
            run.step_config(f"train_{step}").write_text(text)
    assert run_settings(run)["train.flight_norm"] == "'flight' (concat, explore, train_concat: 'none')"  # every file
    detail = [{"name": s, "status": "ok", "seconds": 1.0, "error": None} for s in steps]
    run.summary.write_text(json.dumps({"steps": {"detail": detail}}))
    assert run_settings(run)["train.flight_norm"] == "'flight' (explore, concat: 'none')"
    assert run_settings(run, steps=["concat_fn", "train_concat_fn"])["train.flight_norm"] == "flight"


def test_the_summary_counts_a_setting_only_where_the_step_s_notebook_takes_it(tmp_path: Path) -> None:
    """--set train.epochs=10 read as '10 (compare, explore, pretrain: 50)' in the index, as if the
    override missed three steps: those notebooks do not take it and keep the default in their record."""
    import shutil

    from cbhlib.pipeline.summary import _settings

    run = RunDir(tmp_path / "runs" / "e")
    (run.root / "config").mkdir(parents=True)
    run.notebooks.mkdir()
    for step, notebook, epochs in (("explore", "01_explore_campaign", 50), ("concat", "02_train_fusion", 10)):
        run.step_config(step).write_text(yaml.safe_dump(load_config({"train.epochs": epochs}).to_nested()))
        shutil.copy(ROOT / "notebooks" / f"{notebook}.ipynb", run.notebook(step))
    assert _settings(run, ["explore", "concat"])["train.epochs"] == 10
    run.notebook("explore").unlink()  # a notebook that cannot be read: its record counts again
    assert _settings(run, ["explore", "concat"])["train.epochs"] == "10 (explore: 50)"
