"""A killed run resumes to the same result; bad parameters stop before any output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cbhlib.cli import main
from cbhlib.errors import ParamsError
from cbhlib.params import parse_params
from cbhlib.runner import run_mode


def _params(campaign: Path, run_dir: Path) -> dict:
    return {"campaign": str(campaign), "run_dir": str(run_dir), "figures_dir": str(run_dir / "figs"),
            "mode": "physical_only", "protocols": ["lofo", "random"], "seeds": [0, 1], "epochs": 25, "patience": 25,
            "progress": False}


def _metrics(run_dir: Path) -> dict:
    out = {}
    for name in ("report_physical_only.json", "report_physical_only__random.json"):
        rep = json.loads((run_dir / name).read_text())
        out[name] = [(f["fold_id"], f["seed"], f["r2"], f["mae_km"], f["epoch_trained"]) for f in rep["fold_results"]]
    return out


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_result(tiny_campaign: Path, tmp_path: Path) -> None:
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    cfg = tmp_path / "params.yaml"
    cfg.write_text(yaml.safe_dump(_params(tiny_campaign, run_dir)))
    proc = subprocess.Popen([sys.executable, "-m", "cbhlib.cli", "train", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    log = run_dir / "training_physical_only.log"
    lofo_units = run_dir / "units" / "lofo" / "physical_only"
    deadline = time.time() + 120
    killed_mid_random = False
    while time.time() < deadline and proc.poll() is None:
        done = len(list(lofo_units.glob("*.json"))) if lofo_units.exists() else 0
        if done == 10 and log.exists() and '"protocol": "random"' in log.read_text():
            os.killpg(proc.pid, signal.SIGKILL)
            killed_mid_random = True
            break
        time.sleep(0.05)
    proc.wait()
    assert killed_mid_random, "the run finished before it could be killed mid-way"
    assert not (run_dir / "report_physical_only__random.json").exists()  # no report that looks complete
    for p in run_dir.glob("report_*.json"):
        json.loads(p.read_text())  # whatever exists is whole
    lines_before = log.read_text().count('"protocol": "lofo"')
    assert main(["train", str(cfg)]) == 0  # resume
    assert log.read_text().count('"protocol": "lofo"') == lines_before  # completed LOFO units reused, not retrained
    run_mode(parse_params(_params(tiny_campaign, ref_dir)))  # uninterrupted, same seeds
    assert _metrics(run_dir) == _metrics(ref_dir)


def test_batch_larger_than_the_data(tiny_campaign: Path, tmp_path: Path) -> None:
    p = parse_params({**_params(tiny_campaign, tmp_path), "batch_size": 5000, "protocols": ["lofo"]})
    with pytest.raises(ParamsError, match="batch_size.*at most the largest training set"):
        run_mode(p)
    assert not list(tmp_path.glob("report_*.json"))


def test_image_mode_on_a_campaign_without_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cbhlib.campaign import write_campaign
    from tests.conftest import small_data

    path = write_campaign(tmp_path / "noimg.h5", small_data((12, 12, 12)))
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({**_params(path, tmp_path / "run"), "mode": "concat"}))
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "needs images" in err and "physical_only" in err
    assert not list((tmp_path / "run").glob("report_*.json")) if (tmp_path / "run").exists() else True


@pytest.mark.parametrize("case", ["truncated", "nan_pixels"])
def test_cbh_run_on_a_broken_campaign_stops_before_any_notebook(case: str, small_file: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import h5py

    from tests.conftest import ROOT

    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.h5"
    if case == "truncated":
        bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
        phrase = "truncated"
    else:
        bad.write_bytes(small_file.read_bytes())
        with h5py.File(bad, "a") as f:
            f["images"][3, 0, 0, 0] = float("nan")
        phrase = "NaN or inf pixels in sample 3"
    code = main(["run", "--campaign", "bad.h5", "--pipeline", str(ROOT / "params" / "pipeline.yaml"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "bad.h5" in err and phrase in err
    assert not (tmp_path / "runs").exists()
