"""Image embeddings from a frozen encoder, computed once per checkpoint and cached.

The cache key is the checkpoint's bytes plus the campaign's fingerprint, so training
epochs and every fusion mode reuse the same arrays and nothing is re-encoded.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cbhlib.campaign import Campaign
from cbhlib.models.mae import pool_tokens
from cbhlib.pretrain import load_encoder, normalize


@dataclass
class Embeddings:
    """Encoder outputs for every sample of a campaign.

    Attributes:
        pooled: (N, D) mean over patch tokens (CLS excluded).
        regions: (N, R, D) tokens pooled over a coarse grid of image regions.
        region_grid: (Rh, Rw) layout of the regions.
        seconds: wall time of the encoding (0 when read from cache).
    """

    pooled: np.ndarray
    regions: np.ndarray
    region_grid: tuple[int, int]
    seconds: float = 0.0
    cached: bool = False

    @property
    def images_per_second(self) -> float:
        return len(self.pooled) / self.seconds if self.seconds > 0 else float("nan")


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def model_grid(model: torch.nn.Module, regions: tuple[int, int]) -> tuple[int, int]:
    """The region layout (Rh, Rw) that :func:`pool_tokens` gives for this encoder."""
    if hasattr(model, "gh"):
        gh, gw = model.gh, model.gw
    else:
        gh, gw = model.n_tokens, len(model.column_indices(model.cfg.img_w))
    return min(regions[0], gh), min(regions[1], gw)


@torch.inference_mode()
def encode_images(model: torch.nn.Module, images: torch.Tensor, regions: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images [B, C, H, W] -> pooled [B, D], regions [B, R, D]."""
    grid = model.image_tokens(images)  # type: ignore[operator]
    return pool_tokens(grid, regions)


def embed_campaign(camp: Campaign, ckpt_path: str | Path, cache_dir: str | Path | None = None,
                   batch_size: int = 64, regions: tuple[int, int] = (4, 4), device: str = "cpu",
                   progress: bool = True) -> Embeddings:
    """Encode every image of ``camp`` with the frozen encoder in ``ckpt_path`` (cached)."""
    ckpt_path = Path(ckpt_path)
    key = hashlib.sha256(
        f"{_file_sha(ckpt_path)}|{camp.fingerprint()}|{regions}".encode()).hexdigest()[:20]
    cache = Path(cache_dir) / f"emb_{key}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return Embeddings(z["pooled"], z["regions"], tuple(z["grid"]), 0.0, True)  # type: ignore[arg-type]
    model, ckpt = load_encoder(ckpt_path)
    model.to(device)
    mean, std = float(ckpt["pixel_mean"]), float(ckpt["pixel_std"])
    per_image = ckpt.get("pixel_norm", "global") == "image"
    n = camp.n_samples
    C, H, W = camp.image_shape  # type: ignore[misc]
    batch_size = max(4, min(batch_size, (64 * 64 * 64) // (H * W)))  # bound activation memory on large images
    pooled, regs = [], []
    t0 = time.perf_counter()
    for s in tqdm(range(0, n, batch_size), desc="embed", disable=not progress):
        x = torch.from_numpy(normalize(camp.images(slice(s, min(n, s + batch_size))), mean, std, per_image)).to(device)
        p, r = encode_images(model, x, regions)
        pooled.append(p.float().cpu().numpy())
        regs.append(r.float().cpu().numpy())
    seconds = time.perf_counter() - t0
    pooled_a, regs_a = np.concatenate(pooled), np.concatenate(regs)
    grid = tuple(int(g) for g in model_grid(model, regions))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, pooled=pooled_a, regions=regs_a, grid=np.array(grid))
        tmp.replace(cache)
    return Embeddings(pooled_a, regs_a, grid, seconds, False)
