"""The pixel scan of the campaign contract: every image streamed once (NaN/inf, a constant set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbhlib.data.h5safe import open_h5
from cbhlib.errors import CampaignFormatError


def _fail(file: object, where: str, expected: str, found: str) -> CampaignFormatError:
    return CampaignFormatError(file, where, expected, found)


def scan_pixels(
    path: Path, keys: tuple[str, ...] = ("images", "unlabelled/images"), batch: int = 64
) -> dict[str, float]:
    """Stream every image once: reject NaN/inf pixels and a constant image set.

    Returns:
        Pixel statistics of the labelled images ``{"min", "max", "mean", "std"}``.
    """
    stats: dict[str, float] = {}
    with open_h5(path) as f:
        for key in keys:
            if key not in f:
                continue
            ds = f[key]
            n = ds.shape[0]
            lo, hi, total, total_sq, count = np.inf, -np.inf, 0.0, 0.0, 0
            for start in range(0, n, batch):
                block = ds[start : start + batch].astype(np.float64)
                finite = np.isfinite(block)
                if not finite.all():
                    bad = start + int(np.flatnonzero(~finite.reshape(len(block), -1).all(axis=1))[0])
                    what = "sample" if key == "images" else "frame"
                    raise _fail(path, key, "finite pixel values", f"NaN or inf pixels in {what} {bad}")
                lo, hi = min(lo, block.min()), max(hi, block.max())
                total += block.sum()
                total_sq += np.square(block).sum()
                count += block.size
            if key == "images":
                if hi - lo <= 0:
                    raise _fail(
                        path,
                        "images",
                        "images with some contrast",
                        f"every pixel of every image equals {lo:g} (a constant image set)",
                    )
                mean = total / count
                stats = {
                    "min": float(lo),
                    "max": float(hi),
                    "mean": float(mean),
                    "std": float(np.sqrt(max(total_sq / count - mean**2, 0.0))),
                }
    return stats
