"""Every encoder and fusion mode on a tiny batch; checkpoints load safely."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch

from cbhlib.cli import main
from cbhlib.errors import CheckpointError
from cbhlib.models.fusion import MODES, BatchedAdamW, FusionHeads, HeadConfig
from cbhlib.models.mae import EncoderConfig, build_encoder, mae1d_seed, pool_tokens, random_masking
from cbhlib.store.checkpoints import load_checkpoint, save_checkpoint
from cbhlib.training.pretrain import load_encoder

SMALL = dict(embed_dim=48, depth=2, heads=3, decoder_dim=24, decoder_heads=3)
ENCODERS = {  # name: (config, geometry C, H, W)
    "mae1d-all": (EncoderConfig(name="mae1d", patch=8, column_stride=4, **SMALL), (2, 32, 24)),
    "mae1d-middle": (EncoderConfig(name="mae1d", patch=8, columns="middle", **{**SMALL, "depth": 1}), (1, 36, 20)),
    "mae2d": (EncoderConfig(name="mae2d", patch=8, **SMALL), (3, 34, 40)),
    "mae2d-normpix": (
        EncoderConfig(name="mae2d", patch=8, norm_pix_loss=True, pixel_norm="global", **SMALL),
        (1, 32, 32),
    ),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_variants(name: str) -> None:
    cfg, geom = ENCODERS[name]
    model = build_encoder(cfg, geom)
    img = 280 + torch.randn(2, *geom)  # raw kelvin: the encoder normalises its own input
    grid = model.forward_features(img)
    C, H, W = geom
    if cfg.name == "mae1d":
        n_cols = 1 if cfg.columns == "middle" else len(range(cfg.column_stride // 2, W, cfg.column_stride))
        assert grid.shape == (2, H // cfg.patch, n_cols, cfg.embed_dim)
    else:
        assert grid.shape == (2, H // cfg.patch, W // cfg.patch, cfg.embed_dim)
    assert grid.shape[1:3] == model.grid
    x = model.model_input(model.normalize(img))
    pooled, regions = pool_tokens(grid, (2, 2))
    assert pooled.shape == (2, cfg.embed_dim) and torch.isfinite(pooled).all()
    assert regions.shape[0] == 2 and regions.shape[2] == cfg.embed_dim
    loss, pred, mask = model(x, 0.75)
    assert torch.isfinite(loss) and pred.shape[:2] == mask.shape
    assert abs(float(mask.mean()) - 0.75) < 0.15
    torch.testing.assert_close(model.unpatchify(model.patchify(x)), model.crop(x))


def test_encoder_owns_its_normalisation() -> None:
    """Per-image centring makes features blind to a calibration offset; the fitted pixel
    statistics are buffers (saved in the checkpoint) applied in the forward pass."""
    cfg, geom = ENCODERS["mae2d"]
    model = build_encoder(cfg, geom).eval()
    img = 280 + 3 * torch.randn(2, *geom)
    torch.testing.assert_close(model.forward_features(img), model.forward_features(img + 7.5), atol=1e-4, rtol=1e-4)
    model.set_pixel_stats(torch.zeros(3), torch.full((3,), 2.0))
    assert {"pixel_mean", "pixel_std"} <= set(model.state_dict())
    torch.testing.assert_close(model.normalize(img), (img - img.mean(dim=(1, 2, 3), keepdim=True)) / 2.0)
    glob = build_encoder(EncoderConfig(**{**cfg.to_dict(), "pixel_norm": "global"}), geom).eval()
    assert not torch.allclose(glob.forward_features(img), glob.forward_features(img + 7.5))


def test_norm_pix_targets_are_normalised_per_patch() -> None:
    cfg, geom = ENCODERS["mae2d-normpix"]
    model = build_encoder(cfg, geom)
    t = model.target(torch.randn(4, *geom) * 5 + 3)
    torch.testing.assert_close(t.mean(-1), torch.zeros(t.shape[:2]), atol=1e-4, rtol=0)
    torch.testing.assert_close(t.std(-1), torch.ones(t.shape[:2]), atol=1e-2, rtol=0)


def test_absurd_encoder_configs_are_refused() -> None:
    huge = EncoderConfig(embed_dim=2048, depth=48, heads=8, decoder_dim=2048, decoder_heads=8)
    assert "parameters" in (huge.problem((1, 64, 64)) or "")
    assert "divide" in (EncoderConfig(embed_dim=50, heads=3).problem() or "")
    assert EncoderConfig().problem((1, 64, 64)) is None
    with pytest.raises(ValueError, match="smaller than patch"):
        build_encoder(EncoderConfig(patch=16), (1, 8, 8))


def test_features_exclude_the_cls_token() -> None:
    cfg, geom = ENCODERS["mae2d"]
    model = build_encoder(cfg, geom).eval()
    img = torch.randn(1, *geom)
    tokens = model.forward_tokens(model.normalize(img))
    assert tokens.shape[1] == model.gh * model.gw  # CLS dropped
    torch.testing.assert_close(pool_tokens(model.forward_features(img))[0], tokens.mean(1))


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
    heads = FusionHeads(mode, HeadConfig(), M, D, K, seeds=[1, 2, 3]).eval()
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
    cfg = HeadConfig()
    many = FusionHeads("concat", cfg, 3, 8, 4, seeds=[5, 6, 7]).eval()
    one = FusionHeads("concat", cfg, 1, 8, 4, seeds=[6]).eval()
    for k, v in one.state_dict().items():
        torch.testing.assert_close(v, many.state_dict()[k][1:2])
    img, phys = torch.randn(3, 5, 8), torch.randn(3, 5, 4)
    torch.testing.assert_close(many(img=img, phys=phys)[0][1:2], one(img=img[1:2], phys=phys[1:2])[0])


def test_batched_adamw_leaves_inactive_models_untouched() -> None:
    heads = FusionHeads("physical_only", HeadConfig(), 2, 0, 3, seeds=[0, 1])
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
    cfg, geom = ENCODERS["mae2d"]
    model = build_encoder(cfg, geom)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    path = tmp / f"enc{prefix.strip('.')}.pt"
    save_checkpoint(state, path)
    return path, cfg, model.state_dict()


@pytest.mark.parametrize("prefix", ["", "encoder."])
def test_bare_state_dict_loads_with_or_without_prefix(tmp_path: Path, prefix: str) -> None:
    path, cfg, state = _encoder_ckpt(tmp_path, prefix)
    model, _ = load_encoder(path, cfg, ENCODERS["mae2d"][1])
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_encoder_only_state_dict_without_decoder_loads(tmp_path: Path) -> None:
    cfg, geom = ENCODERS["mae2d"]
    full = build_encoder(cfg, geom).state_dict()
    enc_only = {f"encoder.{k}": v for k, v in full.items() if not k.startswith(("decoder", "mask_token"))}
    save_checkpoint(enc_only, tmp_path / "e.pt")
    model, _ = load_encoder(tmp_path / "e.pt", cfg, geom)
    torch.testing.assert_close(model.state_dict()["proj.weight"], full["proj.weight"])


def test_wrong_architecture_is_named(tmp_path: Path) -> None:
    path, cfg, _ = _encoder_ckpt(tmp_path)
    other = EncoderConfig(**{**cfg.to_dict(), "embed_dim": 96})
    with pytest.raises(CheckpointError, match="does not fit the model architecture.*shape"):
        load_encoder(path, other, ENCODERS["mae2d"][1])


def test_truncated_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, cfg, _ = _encoder_ckpt(tmp_path)
    assert main(["checkpoint", str(path)]) == 0 and "safe to load" in capsys.readouterr().out
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_encoder(path, cfg, ENCODERS["mae2d"][1])
    assert main(["checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "truncated or corrupt" in err and "Traceback" not in err


class _Exploit:
    def __reduce__(self):
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
    with pytest.raises(CheckpointError, match="found a plain pickle, not a torch.save file$"):
        load_checkpoint(raw)
    assert not marker.exists()


def test_checkpoint_refusals_say_what_was_found_in_one_line(tmp_path: Path, tiny_campaign: Path, capsys) -> None:
    """A campaign file given as a checkpoint, or a torch file holding another class, is named as such
    (torch's paragraph about weights_only and a UserWarning were printed with it)."""
    import fractions

    with pytest.raises(CheckpointError, match=r"expected a torch checkpoint \(\.pt\); found an HDF5 file"):
        load_checkpoint(tiny_campaign)
    other = tmp_path / "frac.pt"
    torch.save({"w": torch.zeros(1), "f": fractions.Fraction(1, 2)}, other)
    assert main(["checkpoint", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith("found fractions.Fraction"), err


def test_a_crafted_encoder_checkpoint_cannot_allocate_terabytes(tmp_path: Path) -> None:
    """A checkpoint whose config declares embed_dim 3 x 2^20 is refused before any tensor is built."""
    path = tmp_path / "huge.pt"
    save_checkpoint(
        {
            "kind": "mae-encoder",
            "config": {"name": "mae2d", "embed_dim": 3 * 2**20, "heads": 3},
            "geometry": [1, 64, 64],
            "state_dict": {},
        },
        path,
    )
    with pytest.raises(CheckpointError, match="refused"):
        load_encoder(path)
    save_checkpoint(
        {"kind": "mae-encoder", "config": {"name": "mae2d"}, "geometry": [1, 10**6, 10**6], "state_dict": {}}, path
    )
    with pytest.raises(CheckpointError, match="refused"):
        load_encoder(path)


def test_the_fused_adamw_step_is_the_elementwise_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's fused kernel over the active rows and the vector-operation fallback agree, and each
    keeps its own step count per model (bias corrections of a model that sat out stay its own)."""
    from cbhlib.models import fusion

    if not fusion.FUSED_ADAMW:
        pytest.skip("this torch has no fused AdamW kernel")
    states = []
    for fused in (True, False):
        monkeypatch.setattr(fusion, "FUSED_ADAMW", fused)
        heads = FusionHeads("physical_only", HeadConfig(), 3, 0, 3, seeds=[0, 1, 2])
        opt = BatchedAdamW(list(heads.parameters()), 3, lr=1e-2, weight_decay=1e-2)
        gen = torch.Generator().manual_seed(0)
        for active in ([True, True, False], [True, False, True], [False, True, True], [True, True, True]):
            opt.zero_grad()
            heads.eval()(phys=torch.randn(3, 4, 3, generator=gen))[0].pow(2).sum().backward()
            opt.step(torch.tensor(active), 1e-2)
        states.append((opt.flat.clone(), opt.t.clone()))
    torch.testing.assert_close(states[0][0], states[1][0], rtol=1e-4, atol=2e-5)  # float order; steps move 4e-2
    assert torch.equal(states[0][1], states[1][1]) and states[0][1].flatten().tolist() == [3, 3, 3]


def test_checkpoint_says_a_nested_heads_metrics_are_on_its_left_out_training_flight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A nested head (fold id = outer fold x NESTED_BASE + left-out training flight) is scored on that
    training flight: ``cbh checkpoint`` says so beside the outer held-out flight it names."""
    from cbhlib.constants import NESTED_BASE

    metrics = {"mae_km": 0.4, "n": 12}
    (tmp_path / "lofo_nested").mkdir()
    nested_of_fold0 = tmp_path / "lofo_nested" / "h1.pt"  # outer fold 0's nested heads: ids 1, 2, ... (by folder)
    for fold, nested, path in ((3 * NESTED_BASE + 1, True, None), (3, False, None), (1, True, nested_of_fold0)):
        path = path or tmp_path / f"h{fold}.pt"
        torch.save(
            {"model_state_dict": {"w": torch.zeros(2)}, "fold_id": fold, "test_flight": "12Feb25", "metrics": metrics},
            path,
        )
        assert main(["checkpoint", str(path)]) == 0
        out = capsys.readouterr().out
        assert ("also left out flight index 1 of its campaign" in out) is nested
        assert ("(on flight index 1 of its campaign, not on 12Feb25)" in out) is nested


def test_attention_is_textbook_multi_head_cross_attention() -> None:
    """The attention mode's shortcuts (key and value projections moved to the query and to the
    pooled sum, scores laid out heads x tokens) compute what per-token keys and values would."""
    M, B, D, K, R = 2, 5, 16, 3, 4
    heads = FusionHeads("attention", HeadConfig(attn_dim=8, attn_heads=2), M, D, K, seeds=[3, 4]).eval()
    img, reg, phys = torch.randn(M, B, D), torch.randn(M, B, R, D), torch.randn(M, B, K)
    pred, att = heads(img=img, regions=reg, phys=phys)
    with torch.no_grad():
        d, h = 8, 2
        tokens = phys.unsqueeze(-1) * heads.tok_w[:, None] + heads.tok_b[:, None]
        tokens = torch.cat([tokens, heads.region_proj(reg.reshape(M, B * R, D)).reshape(M, B, R, d)], dim=2)
        tokens = torch.nn.functional.layer_norm(tokens, (d,))  # [M, B, T, d]
        kv = heads.key_value(tokens.reshape(M, -1, d)).reshape(M, B, K + R, 2 * d)
        keys, values = kv[..., :d], kv[..., d:]
        q = heads.query(img)  # [M, B, d]
        outs, weights = [], []
        for j in range(h):
            cols = slice(j * d // h, (j + 1) * d // h)
            w = (torch.einsum("mbtc,mbc->mbt", keys[..., cols], q[..., cols]) / math.sqrt(d // h)).softmax(-1)
            outs.append(torch.einsum("mbt,mbtc->mbc", w, values[..., cols]))
            weights.append(w)
        fused = torch.cat([q, heads.out(torch.cat(outs, -1))], dim=-1)
        want = heads.head(fused).squeeze(-1)
    torch.testing.assert_close(pred, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(att, torch.stack(weights).mean(0), rtol=1e-5, atol=1e-6)
