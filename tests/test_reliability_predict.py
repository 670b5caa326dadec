"""`cbh predict` trusts nothing it loads: checkpoints are verified against their unit files and
kept inside the run folder, head sizes are checked before allocation, absurd predictions are
refused, and a campaign unlike the training campaign (shape, dtype, channels, pixel scale,
feature units) is refused in one line or converted where safe. A read-only run can be applied."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cbhlib.cli import main
from cbhlib.config import load_config
from cbhlib.data.campaign import Campaign, CampaignData, FeatureGroup, write_campaign
from cbhlib.sources import synth
from cbhlib.store.units import _content_sha, file_sha256
from cbhlib.training.runner import run_mode

MODELS = ("physical_only", "concat", "image_stats_mlp")


@pytest.fixture(scope="module")
def trained(tiny_campaign: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished run (one seed, LOFO) of a physical, an image and an image-statistics model."""
    run = tmp_path_factory.mktemp("predict") / "run"
    for model in MODELS:
        cfg = load_config(
            overrides={
                "campaign": str(tiny_campaign),
                "run_dir": str(run),
                "train.mode": model,
                "train.epochs": 4,
                "train.patience": 4,
                "pretrain.epochs": 1,
                "encoder.embed_dim": 32,
                "encoder.heads": 2,
                "encoder.decoder_dim": 32,
                "encoder.decoder_heads": 2,
                "seeds": [0],
                "protocols": ["lofo"],
                "progress": False,
                "pretrain.missing": "pretrain",
            }
        )
        run_mode(cfg)
    return run


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run, free to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _predict(
    capsys: pytest.CaptureFixture[str], run: Path, camp: Path, model: str, out: Path, *extra: str
) -> tuple[int, str]:
    code = main(["predict", str(run), "--model", model, "--campaign", str(camp), "-o", str(out), *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected error" not in err, err
    return code, err


def _refused(capsys: pytest.CaptureFixture[str], run: Path, camp: Path, model: str, tmp_path: Path) -> str:
    out = tmp_path / "p.csv"
    code, err = _predict(capsys, run, camp, model, out)
    lines = [ln for ln in err.splitlines() if ln.startswith("cbh predict: error:")]
    assert code == 2 and len(lines) == 1 and not out.exists(), err
    return lines[0]


def _unit(run: Path, model: str, fold: int) -> Path:
    return run / "units" / "lofo" / model / f"fold{fold}_seed0.json"


def _tamper(
    run: Path,
    model: str,
    fold: int,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    unit: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Edit a unit's checkpoint and/or unit file the way a determined user would: hashes recomputed."""
    path = _unit(run, model, fold)
    d = json.loads(path.read_text())
    ck_path = run / d["checkpoint"]
    if checkpoint is not None:
        ck = torch.load(ck_path, weights_only=True)
        checkpoint(ck)
        torch.save(ck, ck_path)
        d["checkpoint_sha256"] = file_sha256(ck_path)
    if unit is not None:
        unit(d)
    d["content_sha256"] = _content_sha({k: v for k, v in d.items() if k != "content_sha256"})
    path.write_text(json.dumps(d))
    return ck_path


def _variant(src: Path, dst: Path, images: Any = "same", **features: tuple[Any, str]) -> Path:
    """The campaign ``src`` rewritten with other images and/or feature columns (``era5_t2m=(values, units)``)."""
    c = Campaign(src)
    groups = {}
    for g, fg in c.features.items():
        values, units = fg.values.copy(), list(fg.units)
        for j, name in enumerate(fg.names):
            if f"{g}_{name}" in features:
                new, unit = features[f"{g}_{name}"]
                values[:, j], units[j] = new(values[:, j]), unit
        groups[g] = FeatureGroup(values, list(fg.names), units)
    data = CampaignData(
        list(c.flight_names), c.flight, c.cbh_km, c.time_utc, c.sza_deg, c.saa_deg, "test", lat=c.lat, lon=c.lon,
        features=groups,
    )  # fmt: skip
    pixels = c.images(slice(None))
    imgs = pixels if isinstance(images, str) else images(pixels)
    dtype = "uint16" if imgs.dtype == np.uint16 else "float32"
    return write_campaign(dst, data, images=imgs, image_dtype=dtype)


def test_the_training_campaign_predicts_and_records_a_profile(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for model in MODELS:
        code, err = _predict(capsys, run, tiny_campaign, model, tmp_path / f"{model}.csv")
        warned = [line for line in err.splitlines() if "WARNING" in line.upper()]
        assert code == 0 and len(warned) == 1 and "in-sample" in warned[0], err  # no shift warning: only in-sample
    ck = torch.load(run / json.loads(_unit(run, "concat", 0).read_text())["checkpoint"], weights_only=True)
    prof = json.loads(ck["training_campaign"])
    assert prof["images"] == {"shape": [1, 32, 32], "dtype": "float32"}
    assert prof["features"]["era5/t2m"] == {"units": "K"} and len(ck["encoder_weights_sha256"]) == 64


def test_a_head_copied_over_another_is_refused(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck0 = run / json.loads(_unit(run, "physical_only", 0).read_text())["checkpoint"]
    ck1 = run / json.loads(_unit(run, "physical_only", 1).read_text())["checkpoint"]
    shutil.copyfile(ck0, ck1)
    line = _refused(capsys, run, tiny_campaign, "physical_only", tmp_path)
    assert str(ck1) in line and "expected sha256" in line and "replaced or altered" in line


def test_a_unit_file_copied_over_another_is_refused(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copyfile(_unit(run, "physical_only", 0), _unit(run, "physical_only", 1))
    line = _refused(capsys, run, tiny_campaign, "physical_only", tmp_path)
    assert "fold1_seed0.json" in line and "found physical_only/lofo fold 0 seed 0" in line


def test_a_checkpoint_that_is_not_the_units_is_refused(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unit file and checkpoint of fold 1 point at fold 0's head (hashes made consistent)."""
    src = run / json.loads(_unit(run, "physical_only", 0).read_text())["checkpoint"]
    _tamper(run, "physical_only", 1, checkpoint=lambda ck: ck.update(torch.load(src, weights_only=True)))
    line = _refused(capsys, run, tiny_campaign, "physical_only", tmp_path)
    assert "expected the head of physical_only fold 1 seed 0" in line and "found physical_only fold 0" in line


@pytest.mark.parametrize("where", ["../outside.pt", "/tmp/anywhere.pt", "link"])
def test_a_checkpoint_outside_the_run_folder_is_refused(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    ck = run / json.loads(_unit(run, "physical_only", 0).read_text())["checkpoint"]
    outside = tmp_path / "outside.pt"
    shutil.copyfile(ck, outside)
    if where == "link":
        ck.unlink()
        ck.symlink_to(outside)
        rel = json.loads(_unit(run, "physical_only", 0).read_text())["checkpoint"]
    else:
        rel = where if not where.startswith("/") else str(outside)
    _tamper(run, "physical_only", 0, unit=lambda d: d.update(checkpoint=rel))
    line = _refused(capsys, run, tiny_campaign, "physical_only", tmp_path)
    assert "expected a file inside the run folder" in line and "outside it" in line


def test_an_encoder_replaced_after_training_is_refused(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encs = sorted((run / "encoders").glob("*/*.pt"))
    shutil.copyfile(encs[1], encs[0])
    line = _refused(capsys, run, tiny_campaign, "concat", tmp_path)
    assert str(encs[0].name) in line and "expected encoder weights with sha256" in line


def _scale_last_layer(factor: float) -> Callable[[dict[str, Any]], None]:
    def edit(ck: dict[str, Any]) -> None:
        key = [k for k in ck["model_state_dict"] if k.startswith("head.")][-1]
        ck["model_state_dict"][key] = ck["model_state_dict"][key] * factor + (factor if factor != factor else 0)

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_scale_last_layer(float("nan")), "predicted a non-finite CBH for 233 of 233 samples"),
        (_scale_last_layer(1e6), "expected -1 to 25 km (a physical cloud base)"),
        (lambda ck: ck.update(y_mean=-27_000.0), "y_mean: expected a number in -100..100"),
    ],
)
def test_a_head_predicting_nan_or_absurd_heights_is_refused(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, expected: str
) -> None:
    ck = _tamper(run, "physical_only", 2, checkpoint=edit)
    line = _refused(capsys, run, tiny_campaign, "physical_only", tmp_path)
    assert str(ck) in line and expected in line


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda ck: ck.update(head_config=json.dumps({"hidden": [4096] * 8})), "about 1.2e+08 parameters per head"),
        (lambda ck: ck.update(head_config=json.dumps({"hidden": [4096] * 300})), "expected 1 to 8 layers"),
        (lambda ck: ck.update(n_phys=10**9), "n_phys: expected a number in 0..65536"),
        (lambda ck: ck.update(head_config=json.dumps({"hidden": [64]})), "expected the 8 tensors of its head_config"),
        (lambda ck: ck.update(head_config="[1, 2]"), "head_config: expected a mapping"),
    ],
)
def test_head_configs_are_size_checked_before_allocation(
    run: Path,
    tiny_campaign: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    edit: Any,
    expected: str,
) -> None:
    from cbhlib.models import fusion

    real = fusion.BLinear.__init__

    def guarded(self: Any, M: int, d_in: int, d_out: int, gens: Any) -> None:
        assert torch.get_default_device().type == "meta" or d_in * d_out <= 10**6, "allocated before the check"
        real(self, M, d_in, d_out, gens)

    monkeypatch.setattr(fusion.BLinear, "__init__", guarded)
    ck = _tamper(run, "physical_only", 0, checkpoint=edit)
    line = _refused(capsys, run, tiny_campaign, "physical_only", tmp_path)
    assert str(ck) in line and expected in line, line


def _resize(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(pixels, 2, axis=2), 2, axis=3)


@pytest.mark.parametrize(
    ("images", "model", "expected"),
    [
        (
            _resize,
            "concat",
            "images: expected 1x32x32 (channels x height x width, as concat was trained on); found 1x64x64: resample",
        ),
        (lambda p: np.ascontiguousarray(np.moveaxis(p, 1, -1)), "concat", "found 32x32x1: store them channels first"),
        (lambda p: np.ascontiguousarray(p.reshape(len(p), 32, 1, 32)), "concat", "found 32x1x32: the same sizes"),
        (lambda p: p[:, :, :31, :31].copy(), "concat", "found 1x31x31"),
        (lambda p: np.concatenate([p, p], axis=1), "concat", "found 2x32x32"),
        (_resize, "image_stats_mlp", "expected 1x32x32"),
        (lambda p: np.round(p).astype(np.uint16), "concat", "images: expected float32 pixels"),
        (lambda p: p * 1000, "concat", "images: channel 0: expected pixels like those concat was trained on"),
        (lambda p: p * 1000, "image_stats_mlp", "expected values like those image_stats_mlp was trained on"),
    ],
)
def test_images_unlike_the_training_campaigns_are_refused(
    run: Path,
    tiny_campaign: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    images: Any,
    model: str,
    expected: str,
) -> None:
    camp = _variant(tiny_campaign, tmp_path / "new.h5", images=images)
    line = _refused(capsys, run, camp, model, tmp_path)
    assert str(camp) in line and expected in line, line


def _celsius(x: np.ndarray) -> np.ndarray:
    return x - 273.15


def test_temperatures_in_celsius_are_converted_when_recorded_and_refused_when_not(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _predict(capsys, run, tiny_campaign, "physical_only", tmp_path / "ref.csv")
    assert code == 0
    degc = _variant(tiny_campaign, tmp_path / "degc.h5", era5_t2m=(_celsius, "degC"), era5_d2m=(_celsius, "°C"))
    code, err = _predict(capsys, run, degc, "physical_only", tmp_path / "c.csv")
    assert code == 0, err
    assert err.count("features/era5/t2m: converted from 'degC' to 'K'") == 1 and "era5/d2m" in err  # once, not per head
    ref, got = (np.loadtxt(tmp_path / f, delimiter=",", skiprows=1, usecols=5) for f in ("ref.csv", "c.csv"))
    np.testing.assert_allclose(got, ref, atol=1e-4)
    hidden = _variant(tiny_campaign, tmp_path / "hidden.h5", era5_t2m=(_celsius, "K"))
    line = _refused(capsys, run, hidden, "physical_only", tmp_path)
    assert "features/era5/t2m: expected values like those physical_only was trained on" in line
    assert "looks like degrees C where training had K" in line
    code, err = _predict(capsys, run, hidden, "physical_only", tmp_path / "forced.csv", "--allow-shift")
    assert code == 0 and err.count("predicting anyway (--allow-shift)") == 1
    other = _variant(tiny_campaign, tmp_path / "other.h5", era5_sp=(lambda x: x, "mmHg"))
    line = _refused(capsys, run, other, "physical_only", tmp_path)
    assert "features/era5/sp: expected units 'Pa' (as physical_only was trained on); found 'mmHg'" in line


def test_a_feature_mostly_missing_or_missing_on_a_flight_is_said_once(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Predictions were written without a word where a feature was NaN for all but one sample, or for
    every sample of a flight (the training median stood in)."""
    flight = Campaign(tiny_campaign).flight

    def mostly(x: np.ndarray) -> np.ndarray:
        return np.where(np.arange(len(x)) == 0, x, np.nan)

    def on_flight(x: np.ndarray) -> np.ndarray:
        return np.where(flight == 1, np.nan, x)

    gaps = _variant(tiny_campaign, tmp_path / "gaps.h5", era5_t2m=(mostly, "K"), era5_blh=(on_flight, "km"))
    code, err = _predict(capsys, run, gaps, "physical_only", tmp_path / "g.csv")
    n, name = len(flight), Campaign(tiny_campaign).flight_names[1]
    assert code == 0 and err.count(f"features/era5/t2m: {n - 1} of {n} samples missing") == 1, err  # once
    assert f"features/era5/blh: {(flight == 1).sum()} of {n} samples missing; every sample of flight(s) {name}" in err
    code, err = _predict(capsys, run, tiny_campaign, "physical_only", tmp_path / "ref.csv")
    assert code == 0 and "samples missing" not in err


def test_pressure_in_hpa_is_converted(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hpa = _variant(tiny_campaign, tmp_path / "hpa.h5", era5_sp=(lambda x: x / 100, "hPa"))
    code, err = _predict(capsys, run, hpa, "concat", tmp_path / "p.csv")
    assert code == 0 and "converted from 'hPa' to 'Pa'" in err


def test_another_synthetic_campaign_is_not_refused(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The statistical checks leave room for ordinary flight-to-flight differences."""
    other = synth.generate(synth.preset("tiny", seed=7), tmp_path / "seed7.h5")
    for model in MODELS:
        code, err = _predict(capsys, run, other, model, tmp_path / f"{model}.csv")
        assert code == 0 and "in-sample" not in err, err  # another campaign: nothing was seen in training


def test_runs_trained_before_profiles_still_predict_with_a_warning(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def old(ck: dict[str, Any]) -> None:
        del ck["training_campaign"]
        ck.pop("encoder_weights_sha256", None)

    for fold in range(5):
        _tamper(run, "concat", fold, checkpoint=old)
    code, err = _predict(capsys, run, tiny_campaign, "concat", tmp_path / "old.csv")
    assert code == 0 and "record no training-campaign profile" in err
    hidden = _variant(tiny_campaign, tmp_path / "hidden.h5", era5_t2m=(_celsius, ""))
    assert "looks like degrees C" in _refused(capsys, run, hidden, "concat", tmp_path)
    big = _variant(tiny_campaign, tmp_path / "big.h5", images=_resize)
    assert "found 1x64x64" in _refused(capsys, run, big, "concat", tmp_path)


def test_a_read_only_run_is_applied_without_writing_into_it(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(run / "cache")

    def snapshot() -> dict[str, int]:
        return {str(p): p.stat().st_mtime_ns for p in run.rglob("*")}

    before = snapshot()
    for p in sorted(run.rglob("*"), reverse=True):
        p.chmod(0o555 if p.is_dir() else 0o444)
    run.chmod(0o555)
    try:
        code, err = _predict(capsys, run, tiny_campaign, "concat", tmp_path / "p.csv")
    finally:
        for p in [run, *run.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert code == 0, err
    assert snapshot() == before


def test_predict_never_replaces_a_file_of_the_run(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = run / json.loads(_unit(run, "concat", 0).read_text())["checkpoint"]
    sha = file_sha256(ck)
    code, err = _predict(capsys, run, tiny_campaign, "concat", ck, "--force")
    assert code == 2 and "which predict reads and never replaces" in err and file_sha256(ck) == sha
    out = tmp_path / "same.csv"
    code, err = _predict(capsys, run, tiny_campaign, "concat", out, "--per-unit", str(out))
    assert code == 2 and "--per-unit: expected a file other than -o" in err


def test_a_baseline_or_unknown_model_is_one_line(
    run: Path, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "expected a model with saved heads" in _refused(capsys, run, tiny_campaign, "climatology", tmp_path)
    assert "expected finished units of model 'nope'" in _refused(capsys, run, tiny_campaign, "nope", tmp_path)
