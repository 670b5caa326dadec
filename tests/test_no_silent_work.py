"""No silently wrong work (issue 22 item 4): a changed rerun of a run folder and a papermill typo are refused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from cbhlib.cli import main
from cbhlib.config import load_config
from cbhlib.errors import CbhError
from cbhlib.pipeline.execute import plan_steps, settings_changes
from cbhlib.pipeline.spec import load_pipeline
from tests.conftest import ROOT


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "params", tmp_path / "params")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _ran(project: Path, name: str, **settings: object) -> None:
    """A run folder whose explore step ran with these settings (as config/<step>.yaml records them)."""
    cfg = load_config(settings, ("paths", {"campaign": "data/mine.h5", "run_dir": f"runs/{name}"}))
    path = project / "runs" / name / "config" / "explore.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(cfg.to_nested()))


def test_a_rerun_with_other_settings_is_refused_and_says_what_changed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _ran(project, "mine", seeds=[0], explore={"images_per_flight": 2})
    code = main(["run", "--run-name", "mine", "--campaign", "data/mine.h5", "--only", "explore", "--set", "seeds=[1]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "seeds ([0] -> [1])" in err and "explore.images_per_flight (2 -> 3)" in err and "--force" in err
    assert "another --run-name" in err


def test_same_settings_pass_and_force_replaces(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    _ran(project, "mine", seeds=[0], progress=True, threads=2)
    pipe = load_pipeline("params/pipeline.yaml")
    pipe.run_name, pipe.campaign = "mine", "data/mine.h5"
    assert plan_steps(pipe, ["explore"], {"seeds": [0]})  # progress and threads do not change results
    with pytest.raises(CbhError, match=r"seeds \(\[0\] -> \[0, 1\]\)"):
        plan_steps(pipe, ["explore"], {"seeds": [0, 1]})
    assert plan_steps(pipe, ["explore"], {"seeds": [0, 1]}, force=True)
    assert "--force: replacing results made with other settings: seeds ([0] -> [0, 1])" in caplog.text
    assert settings_changes(Path("runs/never-ran"), {}) == []


def test_the_same_command_again_passes_where_the_notebook_kept_defaults_it_does_not_take(project: Path) -> None:
    """explore's notebook does not take train.epochs: its record of the run (written by the notebook's
    setup) keeps the default there, and `cbh run --set train.epochs=10` again must not be refused."""
    _ran(project, "mine", seeds=[0])  # as the notebook records it: train.epochs at its default, 50
    pipe = load_pipeline("params/pipeline.yaml")
    pipe.run_name, pipe.campaign = "mine", "data/mine.h5"
    assert plan_steps(pipe, ["explore"], {"seeds": [0], "train.epochs": 10})
    with pytest.raises(CbhError, match=r"seeds \(\[0\] -> \[1\]\)"):  # a setting it takes is still held
        plan_steps(pipe, ["explore"], {"seeds": [1], "train.epochs": 10})
    path = project / "runs" / "mine" / "config" / "physical_only.yaml"
    path.write_text((project / "runs" / "mine" / "config" / "explore.yaml").read_text())
    with pytest.raises(CbhError, match=r"train\.epochs \(50 -> 10\)"):  # a training step takes it
        plan_steps(pipe, ["explore", "physical_only"], {"seeds": [0], "train.epochs": 10})


def test_a_rerun_on_a_campaign_file_changed_since_is_refused(
    project: Path, tiny_campaign: Path, tiny_easy_campaign: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rewriting data/mine.h5 with other data and rerunning the same command replaced the run's results
    without a word: the summary records the file's sha256, and a rerun on changed bytes is refused."""
    from cbhlib.pipeline.summary import write_summary

    _ran(project, "mine", seeds=[0])
    (project / "data").mkdir()
    shutil.copy(tiny_campaign, project / "data" / "mine.h5")
    write_summary(project / "runs" / "mine", project / "data" / "mine.h5")
    pipe = load_pipeline("params/pipeline.yaml")
    pipe.run_name, pipe.campaign, pipe.synthetic_preset = "mine", "data/mine.h5", None  # as --campaign sets
    assert plan_steps(pipe, ["explore"], {"seeds": [0]})
    shutil.copy(tiny_campaign, project / "data" / "mine.h5")  # the same bytes again, at another time: passes
    os.utime(project / "data" / "mine.h5", ns=(1, 1))
    assert plan_steps(pipe, ["explore"], {"seeds": [0]})
    shutil.copy(tiny_easy_campaign, project / "data" / "mine.h5")
    with pytest.raises(CbhError, match=r"found the campaign file data/mine.h5 changed since \(sha256 \w{12}\.\.\. -> "):
        plan_steps(pipe, ["explore"], {"seeds": [0]})
    assert plan_steps(pipe, ["explore"], {"seeds": [0]}, force=True)
    assert "--force: replacing results made with other settings: the campaign file data/mine.h5" in caplog.text
    pipe.synthetic_preset = "default"  # the pipeline's own synthetic campaign is refreshed by design
    assert plan_steps(pipe, ["explore"], {"seeds": [0]})
    pipe.synthetic_preset = None
    summary = project / "runs" / "mine" / "summary.json"
    summary.write_text(summary.read_text().replace('"campaign_file": {', '"campaign_file": "x", "was": {'))
    assert '"campaign_file": "x"' in summary.read_text()
    assert plan_steps(pipe, ["explore"], {"seeds": [0]})  # a damaged record: no check, no crash


def test_a_misspelled_notebook_is_one_line_before_any_step(
    project: Path, tiny_campaign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pipeline naming notebooks/01_explore_campain.ipynb ended in 'unexpected error: FileNotFoundError'."""
    (project / "data").mkdir()
    shutil.copy(tiny_campaign, project / "data" / "mine.h5")
    (project / "params" / "p.yaml").write_text(
        "campaign: data/mine.h5\nsteps:\n  - {name: explore, notebook: notebooks/01_explore_campain.ipynb}\n"
    )
    code = main(["run", "--pipeline", "params/p.yaml", "--run-name", "typo"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "parameter 'steps (explore).notebook': expected an existing notebook" in err
    assert "no such file (did you mean 'notebooks/01_explore_campaign.ipynb'?)" in err
    assert not (project / "runs" / "typo").exists()
    # named before the campaign is read (its pixel scan takes minutes on a large file)
    (project / "data" / "mine.h5").write_bytes(b"not HDF5")
    assert main(["run", "--pipeline", "params/p.yaml", "--run-name", "typo"]) == 2
    assert "01_explore_campain.ipynb': no such file" in capsys.readouterr().err


def test_a_papermill_typo_is_refused_by_the_notebook_setup(tmp_path: Path, tiny_campaign: Path) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copytree(ROOT / "params", tmp_path / "params")
    (tmp_path / "data").mkdir()
    shutil.copy(tiny_campaign, tmp_path / "data" / "synthetic_default.h5")
    with pytest.raises(PapermillExecutionError, match=r"parameter 'train_epoch'.*did you mean 'train_epochs'\?"):
        papermill.execute_notebook(
            str(tmp_path / "notebooks" / "01_explore_campaign.ipynb"),
            str(tmp_path / "out.ipynb"),
            kernel_name="python3",
            progress_bar=False,
            cwd=str(tmp_path),
            parameters={"train_epoch": 3, "progress": False},
        )
    assert not (tmp_path / "runs" / "interactive" / "figures").exists()  # refused before any work


def test_a_finished_kernel_is_shut_down_without_an_interrupt() -> None:
    """Issue 22 item 9: no '[IPKernelApp] ERROR | KeyboardInterrupt' line after a successful notebook."""
    import signal

    from cbhlib.pipeline.execute import ipc_kernel_manager

    km = ipc_kernel_manager()(kernel_name="python3")
    km.start_kernel()
    sent: list[int] = []
    send = km.provisioner.send_signal

    async def record(signum: int) -> None:
        sent.append(signum)
        await send(signum)

    km.provisioner.send_signal = record
    km.interrupt_kernel()  # while running, an interrupt still reaches the kernel
    km.shutdown_kernel()
    assert sent == [signal.SIGINT]


def test_a_nested_group_given_to_a_notebook_is_told_the_flat_name() -> None:
    """`trian: {epochs: 3}` in a papermill -f YAML was answered 'did you mean train_lr?'."""
    from cbhlib.errors import ParamsError
    from cbhlib.pipeline.notebook import check_injected

    ns = {"In": ["# Parameters\ntrian = {'epochs': 3}\n"], "trian": {"epochs": 3}}
    with pytest.raises(ParamsError, match=r"notebook parameters are flat: did you mean 'train_epochs'\?"):
        check_injected(ns)
    ns = {"In": ["# Parameters\ntrain_epoch = 3\n"], "train_epoch": 3}
    with pytest.raises(ParamsError, match=r"did you mean 'train_epochs'\?"):
        check_injected(ns)


def test_a_setting_no_notebook_of_the_pipeline_takes_is_refused(project: Path) -> None:
    """--set train.epochs=3 on the shift sweep's pipeline was ignored without a word."""
    pipe = load_pipeline("params/pipeline_shift.yaml")
    with pytest.raises(CbhError, match=r"'train.epochs'.*found one none of them takes, so it would be ignored"):
        plan_steps(pipe, None, {"train.epochs": 3})
    assert plan_steps(pipe, None, {"seeds": [0, 1]})  # the sweep notebook takes it (and passes it to its points)
    default = load_pipeline("params/pipeline.yaml")
    assert plan_steps(default, ["explore"], {"train.epochs": 3})  # a training step of the pipeline takes it
