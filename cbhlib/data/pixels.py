"""The pixel scan of the campaign contract: images streamed in bounded blocks (NaN/inf, a constant set).

Memory is bounded by reading at most ``BLOCK_VALUES`` pixels at a time (a 16384 x 16384 image is
read in row slabs), and time by scanning at most ``SCAN_VALUES`` pixels per image set: a larger
set is scanned on evenly spaced frames (with a log line), and every frame read later is checked
for NaN/inf again by :meth:`cbhlib.data.campaign.Campaign.images`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from cbhlib.data.h5safe import open_h5
from cbhlib.errors import CampaignFormatError

log = logging.getLogger(__name__)

BLOCK_VALUES = 2**24  # pixels per read (128 MB as float64)
SCAN_VALUES = 2**27  # pixels scanned per image set (a few seconds; 512 MiB of float32)


def _fail(file: object, where: str, expected: str, found: str) -> CampaignFormatError:
    return CampaignFormatError(file, where, expected, found)


def _blocks(ds: h5py.Dataset, batch: int, budget: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(frame indices, block) of at most ``BLOCK_VALUES`` pixels, over at most about ``budget`` pixels:
    every frame, or runs of consecutive frames at evenly spaced starts (the first and last included)."""
    n = ds.shape[0]
    per_frame = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)))
    if per_frame <= BLOCK_VALUES:
        step = max(1, min(batch, BLOCK_VALUES // per_frame))
        starts = np.arange(0, n, step)
        if n * per_frame > budget:
            keep = max(2, budget // (step * per_frame))
            starts = np.unique(np.linspace(0, max(n - step, 0), keep).astype(np.int64))
            log.info("%s: %d frames; the pixel scan checks %d of them (time bound)", ds.name, n, len(starts) * step)
        for a in starts:
            idx = np.arange(int(a), min(n, int(a) + step))
            yield idx, ds[int(idx[0]) : int(idx[-1]) + 1]
        return
    C, H = ds.shape[1], ds.shape[2]
    rows = max(1, BLOCK_VALUES // max(1, int(np.prod(ds.shape[3:], dtype=np.int64))))
    frames = np.arange(n) if n * per_frame <= budget else np.unique(np.linspace(0, n - 1, 2).astype(np.int64))
    seen = 0
    for i in frames:
        for c in range(C):
            for r in range(0, H, rows):
                block = ds[int(i), c : c + 1, r : r + rows]
                yield np.array([i]), block[None]
                seen += block.size
                if seen >= budget:
                    return


def scan_pixels(
    path: Path, keys: tuple[str, ...] = ("images", "unlabelled/images"), batch: int = 64
) -> dict[str, float]:
    """Stream the images in bounded blocks: reject NaN/inf pixels and a constant image set.

    Returns:
        Pixel statistics of the (scanned) labelled images ``{"min", "max", "mean", "std"}``.
    """
    stats: dict[str, float] = {}
    with open_h5(path) as f:
        for key in keys:
            if key not in f:
                continue
            ds = f[key]
            lo, hi, total, total_sq, count = np.inf, -np.inf, 0.0, 0.0, 0
            for idx, raw in _blocks(ds, batch, SCAN_VALUES):
                block = raw.astype(np.float64)
                finite = np.isfinite(block)
                if not finite.all():
                    bad = int(idx[np.flatnonzero(~finite.reshape(len(block), -1).all(axis=1))[0]])
                    what = "sample" if key == "images" else "frame"
                    raise _fail(path, key, "finite pixel values", f"NaN or inf pixels in {what} {bad}")
                lo, hi = min(lo, block.min()), max(hi, block.max())
                total += block.sum()
                total_sq += np.square(block).sum()
                count += block.size
            if key == "images" and count:
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
