"""Self-supervised MAE pretraining on campaign images (no labels used).

Images that fit the memory budget are read once into memory; larger image sets stream
from HDF5 in batches through a DataLoader, so memory stays bounded.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cbhlib.campaign import Campaign
from cbhlib.checkpoints import load_checkpoint, load_state, save_checkpoint
from cbhlib.data import image_loader
from cbhlib.errors import CheckpointError
from cbhlib.models.mae import EncoderConfig, MaskedAutoencoder, build_encoder


@dataclass
class PretrainConfig:
    """MAE pretraining settings (from params YAML)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    epochs: int = 10  # passes over the pretraining images
    batch_size: int = 64  # images per step
    lr: float = 1e-3  # AdamW peak learning rate (cosine to 0)
    weight_decay: float = 0.05  # AdamW weight decay
    mask_ratio: float = 0.75  # fraction of patches hidden
    columns_per_image: int = 8  # mae1d: random columns drawn per image per step
    seed: int = 0  # torch / numpy seed
    memory_limit_mb: int = 1024  # hold images in memory below this size, else stream
    num_workers: int = 0  # DataLoader workers when streaming
    threads: int = 0  # torch CPU threads (0 = torch default)
    pixel_norm: str = "image"  # image: subtract each image's mean (calibration-free); global
    device: str = "cpu"  # torch device for pretraining (cpu, cuda)


def normalize(x: np.ndarray | torch.Tensor, mean: float, std: float, per_image: bool) -> np.ndarray | torch.Tensor:
    """Pixels [B, C, H, W] -> model input: (x - mean) / std, mean per image if ``per_image``.

    Per-image centring removes camera calibration offsets and the flight's sea-surface
    temperature, keeping the cloud/surface contrast that carries height.
    """
    if per_image:
        centre = x.mean(axis=(1, 2, 3), keepdims=True) if isinstance(x, np.ndarray) else x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - centre) / std
    return (x - mean) / std


def pixel_stats(camp: Campaign, idx: np.ndarray, batch: int = 64, per_image: bool = False) -> tuple[float, float]:
    """Mean and std of all pixels of ``idx`` (streamed; after per-image centring if asked)."""
    total, total_sq, count = 0.0, 0.0, 0
    for s in range(0, len(idx), batch):
        x = camp.images(idx[s : s + batch]).astype(np.float64)
        if per_image:
            x = x - x.mean(axis=(1, 2, 3), keepdims=True)
        total += x.sum()
        total_sq += np.square(x).sum()
        count += x.size
    mean = total / count
    return float(mean), float(max(math.sqrt(max(total_sq / count - mean * mean, 0.0)), 1e-6))


def encoder_config_for(camp: Campaign, base: EncoderConfig) -> EncoderConfig:
    """Fill the image geometry of ``base`` from the campaign."""
    C, H, W = camp.image_shape  # type: ignore[misc]
    d = base.to_dict()
    d.update(in_chans=C, img_h=H, img_w=W)
    return EncoderConfig(**d)


def _model_input(model: MaskedAutoencoder, x: torch.Tensor, cfg: PretrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Images [B, C, H, W] -> the MAE's input (random columns for mae1d)."""
    if cfg.encoder.name != "mae1d":
        return x
    B, C, H, W = x.shape
    k = min(cfg.columns_per_image, W)
    cols = torch.stack([torch.randperm(W, generator=gen)[:k] for _ in range(B)])  # [B, k]
    picked = torch.gather(x, 3, cols[:, None, None, :].expand(B, C, H, k))
    return picked.permute(0, 3, 1, 2).reshape(B * k, C, H)


def pretrain(camp: Campaign, idx: np.ndarray, cfg: PretrainConfig, out_path: str | Path,
             meta: dict[str, object] | None = None, progress: bool = True,
             log_path: str | Path | None = None) -> dict[str, object]:
    """Pretrain an MAE on the images ``idx`` and save it.

    Returns:
        The checkpoint dict written (config, state_dict, pixel statistics, history).
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    enc_cfg = encoder_config_for(camp, cfg.encoder)
    model = build_encoder(enc_cfg)
    idx = np.sort(np.asarray(idx, np.int64))
    per_image = cfg.pixel_norm == "image"
    C, H, W = camp.image_shape  # type: ignore[misc]
    in_memory = len(idx) * C * H * W * 4 <= cfg.memory_limit_mb * 2**20
    cache = None
    if in_memory:  # one read from HDF5; statistics and batches come from memory
        raw = camp.images(idx)
        centred = raw - raw.mean(axis=(1, 2, 3), keepdims=True) if per_image else raw
        mean, std = float(centred.mean()), float(max(centred.std(), 1e-6))
        cache = torch.from_numpy(normalize(raw, mean, std, per_image))
        del raw, centred
    else:  # streamed: one pass for statistics, then batches through a DataLoader
        mean, std = pixel_stats(camp, idx, per_image=per_image)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    steps = cfg.epochs * math.ceil(len(idx) / cfg.batch_size)
    warm = max(1, min(steps // 10, 50))  # linear warm-up, then cosine to 0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * min(s - warm, steps) / max(1, steps - warm))))
    history: list[float] = []
    log = open(log_path, "a") if log_path else None
    bar = tqdm(range(cfg.epochs), desc=f"pretrain {enc_cfg.name}", disable=not progress)
    t_start = time.perf_counter()
    for epoch in bar:
        model.train()
        t0, total, count = time.perf_counter(), 0.0, 0
        if in_memory:
            perm = rng.permutation(len(idx))  # rows of the cache, in the order of idx
            batches = ((idx[r], cache[r]) for r in (perm[s : s + cfg.batch_size]
                                                    for s in range(0, len(idx), cfg.batch_size)))
        else:
            loader = image_loader(camp, idx, cfg.batch_size, cfg.num_workers, shuffle=True, seed=cfg.seed + epoch)
            batches = ((b, normalize(x, mean, std, per_image)) for x, b in loader)
        for b, x in batches:
            loss, _, _ = model(_model_input(model, x, cfg, gen).to(cfg.device, non_blocking=True), cfg.mask_ratio)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretraining {enc_cfg.name}: non-finite loss at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
            count += len(b)
        history.append(total / count)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
        if log:
            log.write(json.dumps({"stage": "pretrain", "encoder": enc_cfg.name, "epoch": epoch,
                                  "loss": history[-1], "seconds": time.perf_counter() - t0,
                                  **(meta or {})}) + "\n")
            log.flush()
    if log:
        log.close()
    ckpt = {
        "kind": "mae-encoder",
        "config": enc_cfg.to_dict(),
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        "pixel_mean": mean,
        "pixel_std": std,
        "pixel_norm": cfg.pixel_norm,
        "history": history,
        "mask_ratio": cfg.mask_ratio,
        "n_images": int(len(idx)),
        "seconds": time.perf_counter() - t_start,
        "meta": json.dumps(meta or {}),
    }
    save_checkpoint(ckpt, out_path)
    return ckpt


def load_encoder(path: str | Path, cfg: EncoderConfig | None = None) -> tuple[MaskedAutoencoder, dict[str, object]]:
    """Load an MAE from a checkpoint (``weights_only=True``).

    Accepts our checkpoints and bare state dicts (the seed's), with or without an
    ``encoder.`` prefix; a bare state dict needs ``cfg``. A decoder may be absent.

    Returns:
        (model in eval mode, checkpoint dict).
    """
    ckpt = load_checkpoint(path)
    if "state_dict" in ckpt and "config" in ckpt:
        cfg = EncoderConfig(**ckpt["config"])  # type: ignore[arg-type]
        state = ckpt["state_dict"]
    else:
        if cfg is None:
            raise CheckpointError(f"{path}: a bare state dict needs an encoder config to build the model")
        state = ckpt.get("model_state_dict", ckpt)
        ckpt = {"config": cfg.to_dict(), "pixel_mean": 0.0, "pixel_std": 1.0, "pixel_norm": "global"}
    model = build_encoder(cfg)
    load_state(model, state, path, optional_prefixes=("decoder", "mask_token"))
    model.eval()
    return model, ckpt


@torch.no_grad()
def reconstruct_examples(camp: Campaign, ckpt_path: str | Path, idx: np.ndarray, mask_ratio: float = 0.75,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, masked inputs and MAE reconstructions of images ``idx`` (channel 0).

    Returns:
        Three arrays [n, H', W'] in normalised units (H', W' cropped to whole patches).
    """
    model, ckpt = load_encoder(ckpt_path)
    torch.manual_seed(seed)
    x = torch.from_numpy(normalize(camp.images(idx), float(ckpt["pixel_mean"]), float(ckpt["pixel_std"]),
                                   ckpt.get("pixel_norm") == "image"))
    B, C, H, W = x.shape
    if model.cfg.name == "mae1d":
        cols = x.permute(0, 3, 1, 2).reshape(B * W, C, H)  # every column
        _, pred, mask = model(cols, mask_ratio)
        target = model.patchify(cols)
        masked = target * (1 - mask[..., None])
        rec = pred * mask[..., None] + target * (1 - mask[..., None])
        to_img = lambda p: model.unpatchify(p).reshape(B, W, C, -1).permute(0, 2, 3, 1)  # noqa: E731
        inp = to_img(target)
    else:
        _, pred, mask = model(x, mask_ratio)
        target = model.patchify(x)
        masked = target * (1 - mask[..., None])
        rec = pred * mask[..., None] + target * (1 - mask[..., None])
        to_img = model.unpatchify
        inp = to_img(target)
    return inp[:, 0].numpy(), to_img(masked)[:, 0].numpy(), to_img(rec)[:, 0].numpy()
