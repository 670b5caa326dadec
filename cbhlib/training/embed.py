"""Image embeddings from a frozen encoder, computed once per checkpoint and cached.

The cache key is the checkpoint's bytes, the campaign's fingerprint and the region
grid, so training epochs and every fusion mode reuse the same arrays and nothing is
re-encoded. The cache verifies itself on read (``cbhlib.store.cache``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cbhlib.data.campaign import Campaign
from cbhlib.models.mae import MaskedAutoencoder, pool_tokens
from cbhlib.store.cache import load_arrays, save_arrays
from cbhlib.store.units import file_sha256
from cbhlib.training.loops import resolve_device
from cbhlib.training.pretrain import load_encoder

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """Encoder outputs for every labelled sample of a campaign.

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


def region_grid(model: MaskedAutoencoder, regions: tuple[int, int]) -> tuple[int, int]:
    """The region layout (Rh, Rw) that :func:`pool_tokens` gives for this encoder."""
    gh, gw = model.grid
    return min(regions[0], gh), min(regions[1], gw)


@torch.inference_mode()
def encode_images(
    model: MaskedAutoencoder, images: torch.Tensor, regions: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw images [B, C, H, W] -> pooled [B, D], regions [B, R, D]."""
    return pool_tokens(model.forward_features(images), regions)


def embedding_batch(shape: tuple[int, int, int], batch: int = 256) -> int:
    """Images per forward pass, bounded for large images (activation memory)."""
    C, H, W = shape
    return max(2, min(batch, (256 * 64 * 64) // max(1, H * W)))


def embed_campaign(
    camp: Campaign,
    ckpt_path: str | Path,
    cache_dir: str | Path | None = None,
    regions: tuple[int, int] = (4, 4),
    device: str = "cpu",
    progress: bool = True,
) -> Embeddings:
    """Encode every labelled image of ``camp`` with the frozen encoder in ``ckpt_path`` (cached)."""
    ckpt_path = Path(ckpt_path)
    key = hashlib.sha256(f"{file_sha256(ckpt_path)}|{camp.fingerprint()}|{regions}".encode()).hexdigest()[:20]
    cache = Path(cache_dir) / f"emb_{key}.npz" if cache_dir else None
    if cache is not None:
        got = load_arrays(cache, {"pooled": None, "regions": None, "grid": (2,)})
        if got is not None and len(got["pooled"]) == camp.n_samples:
            return Embeddings(got["pooled"], got["regions"], tuple(int(g) for g in got["grid"]), 0.0, True)  # type: ignore[arg-type]
    dev = resolve_device(device)
    model, _ = load_encoder(ckpt_path)
    model.to(dev)
    n = camp.n_samples
    batch = embedding_batch(camp.image_shape)  # type: ignore[arg-type]
    pooled, regs = [], []
    t0 = time.perf_counter()
    for s in tqdm(range(0, n, batch), desc="embed", disable=not progress):
        x = torch.from_numpy(camp.images(slice(s, min(n, s + batch)))).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            p, r = encode_images(model, x, regions)
        pooled.append(p.float().cpu().numpy())
        regs.append(r.float().cpu().numpy())
    seconds = time.perf_counter() - t0
    out = Embeddings(np.concatenate(pooled), np.concatenate(regs), region_grid(model, regions), seconds, False)
    if cache is not None:
        save_arrays(cache, {"pooled": out.pooled, "regions": out.regions, "grid": np.array(out.region_grid)})
    log.info("embedded %d images with %s in %.1f s (%.0f images/s)", n, ckpt_path.name, seconds, out.images_per_second)
    return out
