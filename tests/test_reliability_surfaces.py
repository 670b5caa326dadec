"""Reliability round 3 (issue 21) on the newer surfaces: sweeps run on the data they name and check
every point first; cluster files cannot inject job-script lines; schedulers and worker counts are
checked; full disks and size limits are one line; sizes and YAML aliases are bounded."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cbhlib.cli import main
from cbhlib.data.campaign import write_campaign
from tests.conftest import small_data


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and "unexpected error" not in cap.err, cap.err
    return code, cap.out, cap.err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- item 2: sweeps


@pytest.fixture
def sweep_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with a small features-only campaign ``mine.h5`` (100 samples, 3 flights)."""
    write_campaign(tmp_path / "mine.h5", small_data((40, 30, 30), k_features=3, seed=3))
    (tmp_path / "params").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _sweep(project: Path, text: str) -> Path:
    path = project / "params" / "sweep.yaml"
    path.write_text(text)
    return path


def test_a_sweep_runs_on_the_campaign_its_set_names_with_a_dotted_first_key(
    sweep_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`set: {campaign: mine.h5}` is used at every point (no synthetic campaign is generated), and a
    dotted first grid key (`train.epochs`) is the table's column and the figure's x axis."""
    _sweep(
        sweep_project,
        "name: mine\npreset: tiny\nset: {campaign: mine.h5, seeds: [0], protocols: [lofo]}\n"
        "models: [climatology, physical_only]\ngrid:\n  train.epochs: [1, 2]\n",
    )
    code, out, err = _cli(capsys, "sweep", "params/sweep.yaml")
    assert code == 0, err
    folder = sweep_project / "runs" / "sweep-mine"
    table = pd.read_csv(folder / "sweep.csv")
    assert set(table["train.epochs"]) == {1, 2} and (folder / "sweep.png").exists() and "sweep.png" in out
    for point in (0, 1):
        assert not (folder / f"point{point}" / "campaign.h5").exists()
        units = list((folder / f"point{point}" / "units" / "lofo" / "climatology").glob("*.json"))
        assert sum(json.loads(u.read_text())["n_test"] for u in units) == 100  # mine.h5's samples


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        ("train.epochs: [1, x]", "grid point 1 (train.epochs='x'): parameter 'train.epochs': expected an integer"),
        ("synthetic.seed: [0, abc]", "parameter 'synthetic.seed': expected an integer; found 'abc'"),
        ("synthetic.n_scale: [1, 1000]", "parameter 'synthetic.n_scale': expected a number <= 20"),
    ],
)
def test_every_sweep_point_is_checked_before_the_first_trains(
    sweep_project: Path, capsys: pytest.CaptureFixture[str], grid: str, expected: str
) -> None:
    _sweep(sweep_project, f"name: bad\npreset: tiny\nmodels: [climatology]\ngrid:\n  {grid}\n")
    code, _, err = _cli(capsys, "sweep", "params/sweep.yaml")
    assert code == 2 and expected in _one_line(err), err
    assert not (sweep_project / "runs" / "sweep-bad" / "point0").exists()  # nothing ran


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: [climatology, gbdtt]\ngrid: {train.epochs: [1]}\nset: {campaign: mine.h5}", "parameter 'models'"),
        ("models: [climatology]\nset: {campaign: mine.h5}\ngrid: {synthetic.shift_strength: [0, 1]}", "set.campaign"),
        ("models: [climatology]\nset: {campaign: nope.h5}\ngrid: {train.epochs: [1]}", "nope.h5'"),
        ("models: [image_only]\nset: {campaign: mine.h5}\ngrid: {train.epochs: [1]}", "has none"),
    ],
)
def test_unknown_models_and_campaign_conflicts_are_refused(
    sweep_project: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    _sweep(sweep_project, f"name: bad\npreset: tiny\n{text}\n")
    code, _, err = _cli(capsys, "sweep", "params/sweep.yaml")
    assert code == 2 and expected in _one_line(err), err


def test_a_sweep_says_when_it_writes_no_figure(sweep_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sweep(
        sweep_project,
        "name: words\nset: {campaign: mine.h5, seeds: [0]}\nmodels: [climatology]\n"
        "grid:\n  protocols: [[lofo], [random]]\n",
    )
    code, out, err = _cli(capsys, "sweep", "params/sweep.yaml")
    assert code == 0, err
    assert not (sweep_project / "runs" / "sweep-words" / "sweep.png").exists()
    assert "sweep.png" not in out and "no figure" in out


def test_sweep_workers_must_be_zero_or_more(sweep_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sweep(sweep_project, "name: w\nset: {campaign: mine.h5}\nmodels: [climatology]\ngrid: {seeds: [[0]]}\n")
    code, _, err = _cli(capsys, "sweep", "params/sweep.yaml", "--workers", "-1")
    assert code == 2 and "--workers" in _one_line(err) and "found -1" in err
