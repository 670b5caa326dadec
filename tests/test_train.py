"""The trainer: no leakage, learns, reproduces, resumes, and stops on divergence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cbhlib.data
import cbhlib.train as train_mod
from cbhlib.campaign import Campaign
from cbhlib.checkpoints import load_checkpoint
from cbhlib.data import lofo_folds, random_folds
from cbhlib.embed import embed_campaign
from cbhlib.errors import TrainingDivergedError
from cbhlib.models.fusion import MODES
from cbhlib.models.mae import EncoderConfig
from cbhlib.pretrain import PretrainConfig, pretrain
from cbhlib.train import TrainConfig, TrainInputs, Unit, train_units

SMALL_ENC = EncoderConfig("mae2d", patch=8, embed_dim=48, depth=2, heads=3, decoder_dim=24)


@pytest.fixture(scope="module")
def encoded(tiny_campaign: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Campaign, TrainInputs, dict]:
    camp = Campaign(tiny_campaign)
    out = tmp_path_factory.mktemp("enc")
    ckpt = pretrain(camp, np.arange(camp.n_samples), PretrainConfig(encoder=SMALL_ENC, epochs=6, batch_size=32, lr=2e-3),
                    out / "enc.pt", progress=False)
    emb = embed_campaign(camp, out / "enc.pt", out / "cache", progress=False)
    X, names = camp.feature_matrix()
    inputs = TrainInputs(camp.cbh_km.astype(float), X, names, [emb.pooled], [emb.regions], key="tiny")
    return camp, inputs, ckpt


def test_pretraining_lowers_the_reconstruction_loss(tmp_path: Path) -> None:
    """On images with learnable structure (smooth ramps), the masked-patch loss falls well below
    the mean predictor's (1.0 in normalised units)."""
    from cbhlib.campaign import write_campaign
    from tests.conftest import small_data

    data = small_data((80, 80, 80), seed=3)
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), indexing="ij")
    a, b = rng.normal(size=(2, 240, 1, 1))
    images = (280 + 3 * (a * yy + b * xx))[:, None].astype(np.float32)
    camp = Campaign(write_campaign(tmp_path / "ramps.h5", data, images=images))
    cfg = PretrainConfig(encoder=SMALL_ENC, epochs=25, batch_size=16, lr=1e-3)
    history = pretrain(camp, np.arange(240), cfg, tmp_path / "enc.pt", progress=False)["history"]
    assert history[-1] < 0.3 < history[0]


def test_embeddings_are_cached_not_recomputed(encoded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    camp = encoded[0]
    ckpt = pretrain(camp, np.arange(20), PretrainConfig(encoder=SMALL_ENC, epochs=1), tmp_path / "e.pt", progress=False)
    assert ckpt["history"]
    first = embed_campaign(camp, tmp_path / "e.pt", tmp_path / "cache", progress=False)
    calls = []
    monkeypatch.setattr("cbhlib.embed.encode_images", lambda *a, **k: calls.append(1))
    second = embed_campaign(camp, tmp_path / "e.pt", tmp_path / "cache", progress=False)
    assert second.cached and not calls
    np.testing.assert_array_equal(first.pooled, second.pooled)


def test_no_held_out_sample_reaches_training_validation_or_fitting(encoded, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    camp, inputs, _ = encoded
    folds = lofo_folds(camp)
    units = [Unit(f, 0) for f in folds]
    fitted_rows: list[np.ndarray] = []
    real_fit = cbhlib.data.FeatureScaler.fit

    def spy_fit(self, X):  # noqa: ANN001, ANN202
        fitted_rows.append(X.copy())
        return real_fit(self, X)

    trained: list[np.ndarray] = []
    real_gather = train_mod._gather

    def spy_gather(t, idx):  # noqa: ANN001, ANN202
        trained.append(idx.numpy().copy())
        return real_gather(t, idx)

    monkeypatch.setattr(cbhlib.data.FeatureScaler, "fit", spy_fit)
    monkeypatch.setattr(train_mod, "_gather", spy_gather)
    res = train_units(inputs, units, TrainConfig(mode="concat", epochs=3, patience=3), tmp_path, progress=False)
    X = inputs.phys
    for m, (f, r) in enumerate(zip(folds, res)):
        held = set(f.test_idx.tolist())
        # scaler / imputer statistics: fitted on exactly the fold's training rows
        np.testing.assert_array_equal(np.isnan(fitted_rows[m]), np.isnan(X[f.train_idx]))
        # every training-step index of model m (the first gathers of each step are training batches)
        steps = [g[m] for g in trained if g.shape[1] == 32]
        used = set(np.concatenate(steps).tolist())
        assert used <= set(f.train_idx.tolist()) | {0}  # 0 pads partial batches with weight 0
        assert not (held & (used - {0})) and not (held & set(f.val_idx.tolist()))
        assert r["test_idx"] == f.test_idx.tolist() and set(r["val_idx"]).isdisjoint(held)
        ck = load_checkpoint(tmp_path / "checkpoints" / f"model_concat_fold{f.fold_id}_seed0.pt")
        np.testing.assert_allclose(ck["scalers"]["phys_median"].numpy(), np.nanmedian(X[f.train_idx], axis=0), rtol=1e-5)
        assert ck["fold_id"] == f.fold_id and ck["test_flight"] == f.test_flight
        assert ck["y_mean"] == pytest.approx(float(np.mean(inputs.y[f.train_idx])))


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_learns_under_a_random_split(encoded, tmp_path: Path, mode: str) -> None:  # noqa: ANN001
    camp, inputs, _ = encoded
    folds = random_folds(camp)
    res = train_units(inputs, [Unit(f, 0) for f in folds], TrainConfig(mode=mode, epochs=40, patience=10), tmp_path,
                      "random", progress=False)
    y = np.concatenate([r["true"] for r in res])
    pred = np.concatenate([r["pred"] for r in res])
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2 > 0.4, f"{mode}: pooled R2 {r2:.2f} does not clearly beat climatology (~0)"


def test_same_seed_same_metrics_and_resume_gives_the_same_report(encoded, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    camp, inputs, _ = encoded
    units = [Unit(f, 0) for f in lofo_folds(camp)]
    cfg = TrainConfig(mode="attention", epochs=6, patience=4)
    a = train_units(inputs, units, cfg, tmp_path / "a", progress=False)
    b = train_units(inputs, units, cfg, tmp_path / "b", progress=False)
    assert [r["r2"] for r in a] == [r["r2"] for r in b]
    # interrupt: drop two units' results, then rerun; only those two train again
    for fold in (1, 3):
        (tmp_path / "b" / "units" / "lofo" / "attention" / f"fold{fold}_seed0.json").unlink()
    sizes = []
    real_fit = train_mod._fit
    monkeypatch.setattr(train_mod, "_fit", lambda units, *args: sizes.append(len(units)) or real_fit(units, *args))
    c = train_units(inputs, units, cfg, tmp_path / "b", progress=False)
    assert sizes == [2]
    for ra, rc in zip(a, c):
        assert ra["r2"] == pytest.approx(rc["r2"], abs=1e-6) and ra["epoch_trained"] == rc["epoch_trained"]
    # nothing left to do: no training at all
    train_units(inputs, units, cfg, tmp_path / "b", progress=False)
    assert sizes == [2]


def test_divergence_stops_with_mode_fold_and_epoch(encoded, tmp_path: Path) -> None:  # noqa: ANN001
    camp, inputs, _ = encoded
    units = [Unit(f, 0) for f in lofo_folds(camp)]
    with pytest.raises(TrainingDivergedError, match=r"mode physical_only, fold \d .*epoch \d"):
        train_units(inputs, units, TrainConfig(mode="physical_only", epochs=5, lr=1e15), tmp_path, progress=False)
    assert not list((tmp_path / "units").rglob("*.json")) if (tmp_path / "units").exists() else True


def test_training_log_is_json_lines(encoded, tmp_path: Path) -> None:  # noqa: ANN001
    camp, inputs, _ = encoded
    log = tmp_path / "training.log"
    train_units(inputs, [Unit(f, 0) for f in lofo_folds(camp)], TrainConfig(mode="physical_only", epochs=2), tmp_path,
                log_path=log, progress=False)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"epoch", "train_loss", "val_loss", "lr", "seconds", "fold", "mode"} <= set(rows[0])
    assert len(rows) == 2 * 5
    assert torch.get_num_threads() >= 1


def test_pretraining_streams_images_beyond_the_memory_budget(tiny_campaign: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    camp = Campaign(tiny_campaign)
    sizes: list[int] = []
    real = Campaign.images

    def spy(self, indices):  # noqa: ANN001, ANN202
        out = real(self, indices)
        sizes.append(len(out))
        return out

    monkeypatch.setattr(Campaign, "images", spy)
    cfg = PretrainConfig(encoder=SMALL_ENC, epochs=1, batch_size=16, memory_limit_mb=0)  # forces streaming
    ckpt = pretrain(camp, np.arange(camp.n_samples), cfg, tmp_path / "s.pt", progress=False)
    assert np.isfinite(ckpt["history"]).all()
    assert max(sizes) <= 64  # never the whole image set at once


def test_optional_encoder_fine_tuning_runs_the_same_protocol(tiny_campaign: Path, tmp_path: Path) -> None:
    from cbhlib.params import parse_params
    from cbhlib.runner import run_mode

    p = parse_params({"campaign": str(tiny_campaign), "run_dir": str(tmp_path), "mode": "attention", "finetune": True,
                      "epochs": 2, "patience": 2, "pretrain_epochs": 1, "embed_dim": 48, "depth": 1, "heads": 3,
                      "progress": False})
    run = run_mode(p)
    rep = run.reports["lofo"]
    assert rep["model_variant"] == "attention_finetuned" and len(rep["fold_results"]) == 5
    assert (tmp_path / "report_attention_finetuned.json").exists()
    ck = load_checkpoint(tmp_path / "checkpoints" / "model_attention_finetuned_fold0_seed0.pt")
    assert any(k.startswith("encoder.") for k in ck["model_state_dict"])
    assert all(np.isfinite(f["r2"]) for f in rep["fold_results"])
    assert len(rep["attention_tokens"]) == len(run.phys_names) + 16  # variables, then 4 x 4 image regions
    assert len(run.units["lofo"][0]["attention_mean"]) == len(rep["attention_tokens"])
