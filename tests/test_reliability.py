"""A killed run resumes to the same result; damaged caches and unit files are recomputed, never
trusted; writers never replace their inputs; every failure is one line."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cbhlib.cli import main
from cbhlib.config import load_config
from cbhlib.data.campaign import Campaign, write_campaign
from cbhlib.data.frames import ALL
from cbhlib.training.embed import embed_campaign
from cbhlib.training.pretrain import pretrain_encoder
from cbhlib.training.runner import run_mode
from tests.conftest import small_data


def _settings(campaign: Path, run_dir: Path, **kw: object) -> dict:
    return {
        "campaign": str(campaign),
        "run_dir": str(run_dir),
        "train": {"mode": "physical_only", "epochs": 25, "patience": 25},
        "protocols": ["lofo", "random"],
        "seeds": [0, 1],
        "progress": False,
        **kw,
    }


def _metrics(run_dir: Path) -> dict:
    out = {}
    for proto in ("lofo", "random"):
        rep = json.loads((run_dir / "reports" / f"physical_only__{proto}.json").read_text())
        out[proto] = [(f["fold_id"], f["seed"], f["r2"], f["mae_km"], f["epoch_trained"]) for f in rep["fold_results"]]
    return out


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_result(tiny_campaign: Path, tmp_path: Path) -> None:
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    cfg = tmp_path / "params.yaml"
    # one pinned thread: the load governor would otherwise adapt the in-process runs to the killed
    # subprocess's load, and another thread count moves float sums (the rerun must match bit for bit)
    cfg.write_text(yaml.safe_dump(_settings(tiny_campaign, run_dir, threads=1)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cbhlib.cli", "train", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    log = run_dir / "logs" / "training_physical_only.log"
    lofo_units = run_dir / "units" / "lofo" / "physical_only"
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and proc.poll() is None:
        done = len(list(lofo_units.glob("*.json"))) if lofo_units.exists() else 0
        if done == 10 and log.exists() and '"protocol": "random"' in log.read_text():
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    proc.wait()
    assert killed, "the run finished before it could be killed mid-way"
    assert not (run_dir / "reports" / "physical_only__random.json").exists()  # nothing that looks complete
    lines_before = log.read_text().count('"protocol": "lofo"')
    assert main(["train", str(cfg)]) == 0  # resume
    assert log.read_text().count('"protocol": "lofo"') == lines_before  # finished LOFO units reused, not retrained
    run_mode(load_config(("ref", _settings(tiny_campaign, ref_dir, threads=1))))  # uninterrupted, same seeds
    assert _metrics(run_dir) == _metrics(ref_dir)


def _damage(path: Path, how: str) -> None:
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "edit_r2":
        d = json.loads(path.read_text())
        d["r2"], d["mae_km"] = 0.99, 0.001
        path.write_text(json.dumps(d))
    elif how == "drop_key":
        d = json.loads(path.read_text())
        del d["pred"]
        path.write_text(json.dumps(d))


@pytest.mark.parametrize("how", ["truncate", "edit_r2", "drop_key", "truncate_checkpoint", "delete_checkpoint"])
def test_a_damaged_unit_is_recomputed_never_trusted(
    how: str, tiny_campaign: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(
        (
            "t",
            _settings(
                tiny_campaign, tmp_path, protocols=["lofo"], seeds=[0], train={"mode": "physical_only", "epochs": 4}
            ),
        )
    )
    first = run_mode(cfg).units["lofo"]
    unit = tmp_path / "units" / "lofo" / "physical_only" / "fold2_seed0.json"
    ck = tmp_path / "checkpoints" / "lofo" / "physical_only" / "fold2_seed0.pt"
    if how == "truncate_checkpoint":
        _damage(ck, "truncate")
    elif how == "delete_checkpoint":
        ck.unlink()
    else:
        _damage(unit, how)
    with caplog.at_level("WARNING", logger="cbhlib"):
        again = run_mode(cfg).units["lofo"]
    assert f"not trusting {unit}" in caplog.text and "recomputing unit" in caplog.text
    assert [u.mae_km for u in again] == pytest.approx([u.mae_km for u in first], abs=1e-6)  # same result
    assert json.loads((tmp_path / "reports" / "physical_only__lofo.json").read_text())["fold_results"][2]["r2"] != 0.99


@pytest.fixture(scope="module")
def encoder(tiny_campaign: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("enc") / "e.pt"
    cfg = load_config(overrides={"encoder.embed_dim": 16, "encoder.heads": 2, "pretrain.epochs": 1})
    pretrain_encoder(Campaign(tiny_campaign), cfg.encoder, cfg.pretrain, ALL, 0, out, progress=False)
    return out


@pytest.mark.parametrize("how", ["garbage_same_shape", "truncated", "not_a_zip"])
def test_a_damaged_embedding_cache_is_recomputed(
    how: str, tiny_campaign: Path, encoder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    camp = Campaign(tiny_campaign)
    ref = embed_campaign(camp, encoder, tmp_path, progress=False)
    cache = next(tmp_path.glob("emb_*.npz"))
    if how == "garbage_same_shape":
        with np.load(cache) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["pooled"] = np.random.default_rng(0).normal(size=arrays["pooled"].shape).astype(np.float32)
        np.savez(cache, **arrays)  # the recorded hash no longer matches
    elif how == "truncated":
        cache.write_bytes(cache.read_bytes()[:200])
    else:
        cache.write_text("not a zip")
    with caplog.at_level("WARNING", logger="cbhlib"):
        again = embed_campaign(camp, encoder, tmp_path, progress=False)
    assert str(cache) in caplog.text and "recomputing" in caplog.text
    assert not again.cached
    np.testing.assert_array_equal(again.pooled, ref.pooled)
    assert embed_campaign(camp, encoder, tmp_path, progress=False).cached  # and the cache is whole again


def _embed(args: tuple[str, str, str]) -> float:
    camp_path, enc, cache = args
    return float(embed_campaign(Campaign(camp_path), enc, cache, progress=False).pooled.sum())


def test_two_processes_embedding_at_once_both_succeed(tiny_campaign: Path, encoder: Path, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        sums = pool.map(_embed, [(str(tiny_campaign), str(encoder), str(tmp_path))] * 4)
    assert len(set(sums)) == 1 and len(list(tmp_path.glob("emb_*.npz"))) == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_generate_replaces_neither_a_real_campaign_nor_other_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = write_campaign(tmp_path / "real.h5", small_data())
    before = real.read_bytes()
    assert main(["generate", "--preset", "tiny", "-o", str(real)]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and str(real) in err and real.read_bytes() == before
    ours = tmp_path / "ours.h5"
    assert main(["generate", "--preset", "tiny", "-o", str(ours)]) == 0
    made = ours.stat().st_mtime_ns
    assert main(["generate", "--preset", "tiny", "-o", str(ours)]) == 0  # the same parameters: reused
    assert ours.stat().st_mtime_ns == made
    capsys.readouterr()
    # another seed would replace a campaign that finished runs may rest on: refused without --force
    assert main(["generate", "--preset", "tiny", "-o", str(ours), "--set", "seed=4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(ours) in err and "other parameters (seed 0 -> 4)" in err and "-o FILE" in err
    assert ours.stat().st_mtime_ns == made
    assert main(["generate", "--preset", "tiny", "-o", str(ours), "--set", "seed=4", "--force"]) == 0
    assert ours.stat().st_mtime_ns != made
    # the same parameters made by an older generator (another code hash): refreshed, not refused
    from cbhlib.sources.synth_config import SynthConfig

    made = ours.stat().st_mtime_ns
    monkeypatch.setattr(SynthConfig, "sha", lambda self: "a-newer-generator")
    assert main(["generate", "--preset", "tiny", "-o", str(ours), "--set", "seed=4"]) == 0
    assert ours.stat().st_mtime_ns != made
    # a pipeline refreshes its own campaign when a setting changes, but does not replace another draw
    from cbhlib.cli.common import ensure_synthetic
    from cbhlib.errors import CbhError

    monkeypatch.undo()  # the generator's own hash again
    made = ours.stat().st_mtime_ns
    with pytest.raises(CbhError, match=r"ours.h5: expected this pipeline's own synthetic campaign .*seed 4 -> 0"):
        ensure_synthetic("tiny", ours, {})
    assert ours.stat().st_mtime_ns == made
    assert ensure_synthetic("tiny", ours, {"seed": 4, "shift_strength": 2.0})  # the same draw, another setting


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["generate", "--preset", "nope"], "unknown synthetic preset"),
        (["generate", "--preset", "tiny", "--set", "n_scale=[1"], "YAML value"),
        (["generate", "--preset", "tiny", "--set", "no_such_field=1"], "no_such_field"),
        (["generate", "--preset", "tiny", "--seed", "-5"], "--seed: expected an integer >= 0; found -5"),
        (["generate", "--preset", "tiny", "-o", "."], ".: expected a campaign file name; found a folder"),
        (["generate", "--preset", "tiny", "-o", "/dev/null", "--force"], "found a character device"),
        (["train", "--set", "train.epochs=fifty"], "train.epochs"),
        (["train", "--set", "val_fraction=0.999"], "val_fraction"),
        (["monitor", "nowhere"], "no such folder"),
        (["params", "intervals"], "section 'intervals': expected one of encoder, pretrain, train, head"),
        (["checkpoint", "nowhere.pt"], "nowhere.pt: expected a torch checkpoint file; found no such file"),
        (["checkpoint", "."], ".: expected a torch checkpoint file; found a folder"),
    ],
)
def test_bad_commands_fail_in_one_line(
    args: list[str], phrase: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert phrase in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_full_disk_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import cbhlib.atomic

    def full(*a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cbhlib.atomic.tempfile, "mkstemp", full)
    assert main(["generate", "--preset", "tiny", "-o", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert "no space left" in err and err.count("\n") == 1


def test_image_model_on_a_campaign_without_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_campaign(tmp_path / "noimg.h5", small_data((12, 12, 12)))
    assert (
        main(["train", "--campaign", str(path), "--run-dir", str(tmp_path / "run"), "--set", "train.mode=concat"]) == 2
    )
    err = capsys.readouterr().err
    assert "needs images" in err and "physical_only" in err


def test_a_flight_name_that_looks_like_mathtext_plots(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from cbhlib import plots

    data = small_data()
    data.flight_names = ["$\\foo$", "a_b", "F2"]
    camp = Campaign(write_campaign(tmp_path / "m.h5", data))
    plots.cbh_distributions(camp, save_to=tmp_path / "a.png")
    plots.cbh_along_track(camp, save_to=tmp_path / "b.png")
    assert (tmp_path / "a.png").stat().st_size > 0


@pytest.mark.parametrize("case", ["truncated", "nan_pixels"])
def test_cbh_run_on_a_broken_campaign_stops_before_any_notebook(
    case: str, small_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    import h5py

    from tests.conftest import ROOT

    shutil.copytree(ROOT / "params", tmp_path / "params")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")  # a missing notebook would be named first
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
    code = main(["run", "--campaign", "bad.h5", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "bad.h5" in err and phrase in err
    assert not (tmp_path / "runs").exists()
