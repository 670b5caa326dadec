"""The trainer: no leakage, learns, reproduces, resumes, and stops on divergence."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import cbhlib.data.folds
import cbhlib.training.heads as train_mod
from cbhlib.config import HeadConfig, TrainConfig, load_config
from cbhlib.data.campaign import Campaign
from cbhlib.data.folds import lofo_folds, random_folds
from cbhlib.data.frames import ALL
from cbhlib.errors import TrainingDivergedError
from cbhlib.models.fusion import MODES
from cbhlib.models.mae import EncoderConfig
from cbhlib.store.checkpoints import load_checkpoint
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import Unit, UnitStore
from cbhlib.training.embed import embed_campaign
from cbhlib.training.heads import TrainInputs, train_units
from cbhlib.training.pretrain import pretrain_encoder

SMALL_ENC = EncoderConfig(name="mae2d", patch=8, embed_dim=48, depth=2, heads=3, decoder_dim=24, decoder_heads=3)


def _pre(**kw: object) -> object:
    return load_config(
        overrides={f"pretrain.{k}": v for k, v in {"epochs": 6, "batch_size": 32, "lr": 2e-3, **kw}.items()}
    ).pretrain


@pytest.fixture(scope="module")
def encoded(tiny_easy_campaign: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Campaign, TrainInputs]:
    camp = Campaign(tiny_easy_campaign)
    out = tmp_path_factory.mktemp("enc")
    pretrain_encoder(camp, SMALL_ENC, _pre(), ALL, 0, out / "enc.pt", progress=False)
    emb = embed_campaign(camp, out / "enc.pt", out / "cache", progress=False)
    X, names = camp.feature_matrix()
    return camp, TrainInputs(camp.cbh_km.astype(float), X, names, [emb.pooled], [emb.regions], key="tiny")


def _units(model: str, folds: list, seeds: tuple[int, ...] = (0,), protocol: str = "lofo") -> list[Unit]:
    return [Unit(model, protocol, f, s) for f in folds for s in seeds]


def test_no_held_out_sample_reaches_training_validation_or_fitting(
    encoded,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    camp, inputs = encoded
    folds = lofo_folds(camp)
    fitted_rows: list[np.ndarray] = []
    real_fit = cbhlib.data.folds.FeatureScaler.fit

    def spy_fit(self, X):
        fitted_rows.append(X.copy())
        return real_fit(self, X)

    trained: list[np.ndarray] = []
    real_gather = train_mod._gather

    def spy_gather(t, idx):
        trained.append(idx.numpy().copy())
        return real_gather(t, idx)

    monkeypatch.setattr(cbhlib.data.folds.FeatureScaler, "fit", spy_fit)
    monkeypatch.setattr(train_mod, "_gather", spy_gather)
    run = RunDir(tmp_path)
    res = train_units(
        inputs,
        _units("concat", folds),
        "concat",
        TrainConfig(epochs=3, patience=3),
        HeadConfig(),
        UnitStore(run),
        progress=False,
    )
    X = inputs.phys
    for m, (f, r) in enumerate(zip(folds, res, strict=True)):
        held = set(f.test_idx.tolist())
        np.testing.assert_array_equal(np.isnan(fitted_rows[m]), np.isnan(X[f.train_idx]))  # scaler on training rows
        steps = [g[:, m] for g in trained if g.ndim == 3]  # training batches [steps, M, B] (evaluation: [M, E])
        used = set(np.concatenate(steps).ravel().tolist())
        assert used <= set(f.train_idx.tolist()) | {0}  # 0 pads partial batches with weight 0
        assert not (held & (used - {0})) and not (held & set(f.val_idx.tolist()))
        assert r.test_idx == f.test_idx.tolist() and set(r.val_idx).isdisjoint(held)
        ck = load_checkpoint(run.root / r.checkpoint)
        np.testing.assert_allclose(
            ck["scalers"]["phys_median"].numpy(), np.nanmedian(X[f.train_idx], axis=0), rtol=1e-5
        )
        assert ck["fold_id"] == f.fold_id and ck["test_flight"] == f.test_flight
        assert ck["y_mean"] == pytest.approx(float(np.mean(inputs.y[f.train_idx])))


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_learns_under_a_random_split(encoded, tmp_path: Path, mode: str) -> None:
    camp, inputs = encoded
    res = train_units(
        inputs,
        _units(mode, random_folds(camp), protocol="random"),
        mode,
        TrainConfig(epochs=40, patience=10),
        HeadConfig(),
        UnitStore(RunDir(tmp_path)),
        progress=False,
    )
    y = np.concatenate([r.true for r in res])
    pred = np.concatenate([r.pred for r in res])
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2 > 0.4, f"{mode}: pooled R2 {r2:.2f} does not clearly beat climatology (~0)"


def test_same_seed_same_metrics_and_resume_gives_the_same_result(
    encoded,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    camp, inputs = encoded
    units = _units("attention", lofo_folds(camp), seeds=(0, 1))
    cfg = TrainConfig(epochs=6, patience=4)
    a = train_units(inputs, units, "attention", cfg, HeadConfig(), UnitStore(RunDir(tmp_path / "a")), progress=False)
    store_b = UnitStore(RunDir(tmp_path / "b"))
    b = train_units(inputs, units, "attention", cfg, HeadConfig(), store_b, progress=False)
    assert [r.r2 for r in a] == [r.r2 for r in b]
    assert [r.r2 for r in a[0::2]] != [r.r2 for r in a[1::2]]  # the seed matters
    for fold in (1, 3):  # interrupt: drop two units' results, then rerun; only those two train again
        (tmp_path / "b" / "units" / "lofo" / "attention" / f"fold{fold}_seed0.json").unlink()
    sizes = []
    real_fit = train_mod._fit
    monkeypatch.setattr(train_mod, "_fit", lambda us, *args: sizes.append(len(us)) or real_fit(us, *args))
    c = train_units(inputs, units, "attention", cfg, HeadConfig(), store_b, progress=False)
    assert sizes == [2]
    for ra, rc in zip(a, c, strict=True):
        assert ra.r2 == pytest.approx(rc.r2, abs=1e-6) and ra.epoch_trained == rc.epoch_trained
    train_units(inputs, units, "attention", cfg, HeadConfig(), store_b, progress=False)
    assert sizes == [2]  # nothing left to do


@pytest.mark.parametrize("mode", ["attention", "physical_only"])
def test_inputs_gathered_per_chunk_of_steps_give_the_same_heads(
    encoded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    camp, inputs = encoded
    units = _units(mode, lofo_folds(camp), seeds=(0, 1))
    cfg = TrainConfig(epochs=8, patience=1)  # units stop at different epochs: the batch is compacted mid-run
    shapes: list[tuple[int, ...]] = []
    real_gather = train_mod._gather
    monkeypatch.setattr(train_mod, "_gather", lambda t, idx: shapes.append(tuple(idx.shape)) or real_gather(t, idx))

    def train(name: str) -> tuple[list, list[tuple[int, ...]]]:
        shapes.clear()
        res = train_units(inputs, units, mode, cfg, HeadConfig(), UnitStore(RunDir(tmp_path / name)), progress=False)
        return res, [s for s in shapes if len(s) == 3]  # training gathers [steps, M, B] (evaluation: [M, E])

    whole, chunks = train("whole")
    S = chunks[0][0]  # the first epoch's steps, in one call (every epoch: one call)
    assert S > 2 and len(chunks) > 2 and min(c[1] for c in chunks) < len(units)  # every epoch in one call; compacted
    monkeypatch.setattr(train_mod, "_chunk_steps", lambda t, M, B: S - 1)  # a chunk, then a remainder of one step
    uneven, chunks = train("uneven")
    assert {S - 1, 1} <= {c[0] for c in chunks}
    monkeypatch.setattr(train_mod, "_chunk_steps", lambda t, M, B: 1)
    single, chunks = train("single")
    assert {c[0] for c in chunks} == {1}
    for a, b, c in zip(whole, uneven, single, strict=True):
        assert a.pred == b.pred == c.pred and a.val_pred == b.val_pred == c.val_pred
        assert a.epoch_trained == b.epoch_trained == c.epoch_trained


def test_divergence_stops_with_mode_fold_and_epoch(encoded, tmp_path: Path) -> None:
    camp, inputs = encoded
    with pytest.raises(TrainingDivergedError, match=r"mode physical_only .*fold \d .*epoch \d"):
        train_units(
            inputs,
            _units("physical_only", lofo_folds(camp)),
            "physical_only",
            TrainConfig(epochs=5, lr=1e15),
            HeadConfig(),
            UnitStore(RunDir(tmp_path)),
            progress=False,
        )
    assert not list(tmp_path.rglob("fold*_seed*.json"))  # nothing that looks finished


def test_training_log_is_json_lines(encoded, tmp_path: Path) -> None:
    camp, inputs = encoded
    log = tmp_path / "training.log"
    train_units(
        inputs,
        _units("physical_only", lofo_folds(camp)),
        "physical_only",
        TrainConfig(epochs=2),
        HeadConfig(),
        UnitStore(RunDir(tmp_path)),
        log_path=str(log),
        progress=False,
    )
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"epoch", "train_loss", "val_loss", "lr", "seconds", "fold", "model", "mode", "protocol"} <= set(rows[0])
    assert len(rows) == 2 * 5


def test_batch_size_is_capped_by_the_smallest_training_split(
    encoded,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    camp, inputs = encoded
    folds = lofo_folds(camp)
    with caplog.at_level(logging.INFO, logger="cbhlib"):
        res = train_units(
            inputs,
            _units("physical_only", folds),
            "physical_only",
            TrainConfig(epochs=2, batch_size=10_000),
            HeadConfig(),
            UnitStore(RunDir(tmp_path)),
            progress=False,
        )
    assert len(res) == 5 and "capped" in caplog.text


def test_optional_encoder_fine_tuning_runs_the_same_protocol(tiny_campaign: Path, tmp_path: Path) -> None:
    from cbhlib.training.runner import run_mode

    cfg = load_config(
        overrides={
            "campaign": str(tiny_campaign),
            "run_dir": str(tmp_path),
            "train.mode": "attention",
            "train.finetune": True,
            "train.epochs": 2,
            "train.patience": 2,
            "pretrain.epochs": 1,
            "encoder.embed_dim": 48,
            "encoder.depth": 1,
            "encoder.heads": 3,
            "seeds": [0],
            "protocols": ["lofo"],
            "progress": False,
            "pretrain.missing": "pretrain",
        }
    )
    run = run_mode(cfg)
    rep = run.reports["lofo"]
    assert rep["model_variant"] == "attention_finetuned" and len(rep["fold_results"]) == 5
    assert (tmp_path / "reports" / "attention_finetuned__lofo.json").exists()
    unit = run.units["lofo"][0]
    ck = load_checkpoint(tmp_path / unit.checkpoint)
    assert any(k.startswith("encoder.") for k in ck["model_state_dict"])
    assert all(f["mae_km"] > 0 for f in rep["fold_results"])
    assert len(rep["attention_tokens"]) == len(run.phys_names) + 16  # variables, then 4 x 4 image regions
    assert len(unit.attention_mean) == len(rep["attention_tokens"])
    assert torch.get_num_threads() >= 1


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a GPU machine)")


@CUDA
@pytest.mark.parametrize("mode", MODES)
def test_heads_on_cuda_match_the_cpu(encoded, tmp_path: Path, mode: str) -> None:
    """The same units on the GPU: the same epochs and predictions to float32 tolerance."""
    camp, inputs = encoded
    units = _units(mode, lofo_folds(camp)[:2], seeds=(0, 1))
    tc = TrainConfig(epochs=6, patience=3)
    cpu = train_units(inputs, units, mode, tc, HeadConfig(), UnitStore(RunDir(tmp_path / "cpu")), progress=False)
    gpu = train_units(
        inputs, units, mode, tc, HeadConfig(), UnitStore(RunDir(tmp_path / "gpu")), progress=False, device="cuda"
    )
    for a, b in zip(cpu, gpu, strict=True):
        assert a.epoch_trained == b.epoch_trained
        np.testing.assert_allclose(a.pred, b.pred, atol=2e-3)


@CUDA
def test_pretraining_and_embedding_on_cuda_in_bf16(tiny_campaign: Path, tmp_path: Path) -> None:
    camp = Campaign(tiny_campaign)
    ck = pretrain_encoder(camp, SMALL_ENC, _pre(epochs=3), ALL, 0, tmp_path / "enc.pt", device="cuda", progress=False)
    assert ck["loss_final"] < ck["loss_before"] and all(v.device.type == "cpu" for v in ck["state_dict"].values())
    gpu = embed_campaign(camp, tmp_path / "enc.pt", None, device="cuda", progress=False)
    cpu = embed_campaign(camp, tmp_path / "enc.pt", None, device="cpu", progress=False)
    assert np.corrcoef(gpu.pooled.ravel(), cpu.pooled.ravel())[0, 1] > 0.99  # bf16 matmuls, fp32 out


def test_cuda_asked_for_without_a_gpu_is_one_clear_error(encoded, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from cbhlib.errors import CbhError

    camp, inputs = encoded
    with pytest.raises(CbhError, match="expected a CUDA GPU; found none"):
        train_units(
            inputs,
            _units("physical_only", lofo_folds(camp)[:1]),
            "physical_only",
            TrainConfig(epochs=1),
            HeadConfig(),
            UnitStore(RunDir(tmp_path)),
            progress=False,
            device="cuda",
        )
