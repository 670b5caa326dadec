"""Calibration-free image statistics: the strongest simple image baseline.

Thirteen numbers per image (channels averaged) that do not change when a constant is
added to every pixel (a camera calibration offset, the flight's sea-surface
temperature): spreads between percentiles, warm-minus-cold means, the fraction of
pixels well below the warm (surface) mode, texture and skewness. A learned encoder
earns its place only if it beats these with the same head.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cbhlib.data.campaign import Campaign
from cbhlib.store.cache import load_arrays, save_arrays

NAMES = [
    "std",
    "p95_p05",
    "p99_p01",
    "p95_p50",
    "p50_p05",
    "p75_p25",
    "warm20_cold20",
    "warm50_cold50",
    "cold_frac_q25",
    "cold_frac_q50",
    "cold_frac_q75",
    "gradient",
    "skewness",
]
VERSION = 1


def image_statistics(images: np.ndarray) -> np.ndarray:
    """Images [B, C, H, W] -> statistics [B, 13] (see :data:`NAMES`)."""
    x = images.astype(np.float64).mean(axis=1)  # [B, H, W]
    B = x.shape[0]
    flat = x.reshape(B, -1)
    q = np.percentile(flat, [1, 5, 25, 50, 75, 95, 99], axis=1)  # [7, B]
    p01, p05, p25, p50, p75, p95, p99 = q
    srt = np.sort(flat, axis=1)
    n = srt.shape[1]
    k20, k50 = max(1, n // 5), max(1, n // 2)
    spread = np.maximum(p95 - p05, 1e-9)
    cold = [np.mean(flat < (p95 - f * spread)[:, None], axis=1) for f in (0.25, 0.5, 0.75)]
    grad = (np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))) / 2
    sd = flat.std(axis=1)
    skew = np.mean((flat - flat.mean(axis=1, keepdims=True)) ** 3, axis=1) / np.maximum(sd, 1e-9) ** 3
    cols = [
        sd,
        p95 - p05,
        p99 - p01,
        p95 - p50,
        p50 - p05,
        p75 - p25,
        srt[:, -k20:].mean(1) - srt[:, :k20].mean(1),
        srt[:, -k50:].mean(1) - srt[:, :k50].mean(1),
        *cold,
        grad,
        skew,
    ]
    return np.stack(cols, axis=1).astype(np.float32)


def campaign_statistics(camp: Campaign, cache_dir: str | Path | None = None, batch: int = 256) -> np.ndarray:
    """Statistics [N, 13] of every labelled image (streamed; cached per campaign file)."""
    cache = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{camp.fingerprint()}|imagestats-v{VERSION}".encode()).hexdigest()[:20]
        cache = Path(cache_dir) / f"imagestats_{key}.npz"
        got = load_arrays(cache, {"stats": (camp.n_samples, len(NAMES))})
        if got is not None:
            return got["stats"]
    out = np.concatenate(
        [
            image_statistics(camp.images(slice(s, min(camp.n_samples, s + batch))))
            for s in range(0, camp.n_samples, batch)
        ]
    )
    if cache is not None:
        save_arrays(cache, {"stats": out})
    return out
