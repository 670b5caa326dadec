"""Every encoder and fusion mode on a tiny batch; checkpoints load safely."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from cbhlib.checkpoints import load_checkpoint, save_checkpoint
from cbhlib.cli import main
from cbhlib.errors import CheckpointError
from cbhlib.models.fusion import MODES, BatchedAdamW, FusionConfig, FusionHeads
from cbhlib.models.mae import EncoderConfig, build_encoder, mae1d_seed, pool_tokens, random_masking
from cbhlib.pretrain import load_encoder

ENCODERS = {
    "mae1d-all": EncoderConfig("mae1d", in_chans=2, img_h=32, img_w=24, patch=8, embed_dim=48, depth=2, heads=3,
                               decoder_dim=24, column_stride=4),
    "mae1d-middle": EncoderConfig("mae1d", in_chans=1, img_h=36, img_w=20, patch=8, embed_dim=48, depth=1, heads=3,
                                  decoder_dim=24, columns="middle"),
    "mae2d": EncoderConfig("mae2d", in_chans=3, img_h=34, img_w=40, patch=8, embed_dim=48, depth=2, heads=3,
                           decoder_dim=24),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_variants(name: str) -> None:
    cfg = ENCODERS[name]
    model = build_encoder(cfg)
    img = torch.randn(2, cfg.in_chans, cfg.img_h, cfg.img_w)
    grid = model.image_tokens(img)
    if cfg.name == "mae1d":
        n_cols = 1 if cfg.columns == "middle" else len(range(cfg.column_stride // 2, cfg.img_w, cfg.column_stride))
        assert grid.shape == (2, cfg.img_h // cfg.patch, n_cols, cfg.embed_dim)
        x = model.image_to_columns(img)
    else:
        assert grid.shape == (2, cfg.img_h // cfg.patch, cfg.img_w // cfg.patch, cfg.embed_dim)
        x = img
    pooled, regions = pool_tokens(grid, (2, 2))
    assert pooled.shape == (2, cfg.embed_dim) and torch.isfinite(pooled).all()
    assert regions.shape[0] == 2 and regions.shape[2] == cfg.embed_dim
    loss, pred, mask = model(x, 0.75)
    assert torch.isfinite(loss) and pred.shape[:2] == mask.shape
    assert abs(float(mask.mean()) - 0.75) < 0.15
    torch.testing.assert_close(model.unpatchify(model.patchify(x)), model.crop(x))


def test_features_exclude_the_cls_token() -> None:
    model = build_encoder(ENCODERS["mae2d"]).eval()
    img = torch.randn(1, 3, 34, 40)
    tokens = model.forward_tokens(img)
    assert tokens.shape[1] == model.gh * model.gw  # CLS dropped
    torch.testing.assert_close(pool_tokens(model.image_tokens(img))[0], tokens.mean(1))


def test_seed_encoder_shapes() -> None:
    model = mae1d_seed()
    assert model.n_tokens == 27 and model.cfg.embed_dim == 192 and len(model.blocks) == 4
    assert model.column_indices(640) == [320]


def test_random_masking_keeps_a_quarter() -> None:
    x = torch.randn(3, 16, 8)
    kept, mask, restore = random_masking(x, 0.75)
    assert kept.shape == (3, 4, 8) and mask.sum(1).tolist() == [12, 12, 12]


@pytest.mark.parametrize("mode", MODES)
def test_fusion_modes(mode: str) -> None:
    M, B, D, K, R = 3, 7, 16, 5, 4
    heads = FusionHeads(FusionConfig(mode=mode), M, D, K, seeds=[1, 2, 3]).eval()
    img, reg, phys = torch.randn(M, B, D), torch.randn(M, B, R, D), torch.randn(M, B, K)
    pred, att = heads(img=img, regions=reg, phys=phys)
    assert pred.shape == (M, B) and torch.isfinite(pred).all()
    if mode == "attention":
        assert att.shape == (M, B, K + R)
        torch.testing.assert_close(att.sum(-1), torch.ones(M, B))
        assert att.std(dim=1).mean() > 1e-3, "attention weights must vary across samples"
    else:
        assert att is None


def test_models_in_a_batch_are_independent() -> None:
    """Model m's output depends only on its own slice: a batch of 1 reproduces it."""
    cfg = FusionConfig(mode="concat")
    many = FusionHeads(cfg, 3, 8, 4, seeds=[5, 6, 7]).eval()
    one = FusionHeads(cfg, 1, 8, 4, seeds=[6]).eval()
    for k, v in one.state_dict().items():
        torch.testing.assert_close(v, many.state_dict()[k][1:2])
    img, phys = torch.randn(3, 5, 8), torch.randn(3, 5, 4)
    torch.testing.assert_close(many(img=img, phys=phys)[0][1:2], one(img=img[1:2], phys=phys[1:2])[0])


def test_batched_adamw_leaves_inactive_models_untouched() -> None:
    heads = FusionHeads(FusionConfig(mode="physical_only"), 2, 0, 3, seeds=[0, 1])
    opt = BatchedAdamW(list(heads.parameters()), 2, lr=1e-2, weight_decay=1e-4)
    before = {k: v.clone() for k, v in heads.state_dict().items()}
    heads.begin_epoch([1, 0], 4)
    heads.set_step(0)
    pred, _ = heads(phys=torch.randn(2, 4, 3))
    pred.pow(2).sum().backward()
    opt.step(torch.tensor([True, False]), 1e-2)
    after = heads.state_dict()
    assert all(torch.equal(after[k][1], before[k][1]) for k in before)
    assert any(not torch.equal(after[k][0], before[k][0]) for k in before)


# ---------------------------------------------------------------- checkpoints


def _encoder_ckpt(tmp: Path, prefix: str = "") -> tuple[Path, EncoderConfig, dict]:
    cfg = ENCODERS["mae2d"]
    model = build_encoder(cfg)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    path = tmp / f"enc{prefix.strip('.')}.pt"
    save_checkpoint(state, path)
    return path, cfg, model.state_dict()


@pytest.mark.parametrize("prefix", ["", "encoder."])
def test_bare_state_dict_loads_with_or_without_prefix(tmp_path: Path, prefix: str) -> None:
    path, cfg, state = _encoder_ckpt(tmp_path, prefix)
    model, _ = load_encoder(path, cfg)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_encoder_only_state_dict_without_decoder_loads(tmp_path: Path) -> None:
    cfg = ENCODERS["mae2d"]
    full = build_encoder(cfg).state_dict()
    enc_only = {f"encoder.{k}": v for k, v in full.items() if not k.startswith(("decoder", "mask_token"))}
    save_checkpoint(enc_only, tmp_path / "e.pt")
    model, _ = load_encoder(tmp_path / "e.pt", cfg)
    torch.testing.assert_close(model.state_dict()["proj.weight"], full["proj.weight"])


def test_wrong_architecture_is_named(tmp_path: Path) -> None:
    path, cfg, _ = _encoder_ckpt(tmp_path)
    other = EncoderConfig(**{**cfg.to_dict(), "embed_dim": 96})
    with pytest.raises(CheckpointError, match="does not fit the model architecture.*shape"):
        load_encoder(path, other)


def test_truncated_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, cfg, _ = _encoder_ckpt(tmp_path)
    assert main(["checkpoint", str(path)]) == 0 and "safe to load" in capsys.readouterr().out
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_encoder(path, cfg)
    assert main(["checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "truncated or corrupt" in err and "Traceback" not in err


class _Exploit:
    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (Path(__file__).parent / "PWNED_BY_PICKLE",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_never_runs(tmp_path: Path) -> None:
    marker = Path(__file__).parent / "PWNED_BY_PICKLE"
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)
    assert not marker.exists()
    assert main(["checkpoint", str(path)]) == 2  # the command refuses it too, without running it
    raw = tmp_path / "evil.pkl"  # a plain pickle renamed .pt
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()
