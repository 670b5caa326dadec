"""Images into a campaign file being written: one image per sample, in the campaign's order.

An array is written in slices (reordered on the way when the campaign's rows were sorted from
a table's); streamed ``(start, block)`` pairs must cover every sample exactly once. Anything
else is one line naming the output, the dataset, what was expected and what was found (an
image left out would otherwise read back as zeros, and a reordered table would pair each
image with another sample's label).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cbhlib.errors import CampaignFormatError

ImageSource = np.ndarray | Iterable[tuple[int, np.ndarray]]
SLICE_BYTES = 64 << 20  # an array is copied (and reordered) this many bytes at a time


def write_images(
    f: h5py.File,
    key: str,
    n: int,
    images: ImageSource,
    image_shape: tuple[int, int, int] | None,
    image_dtype: str,
    path: Path,
    order: np.ndarray | None = None,
) -> tuple[int, int, int]:
    """Write ``n`` images (C, H, W) to dataset ``key``; return (C, H, W).

    Args:
        images: an (n, C, H, W) array, or ``(start, block)`` pairs with blocks (b, C, H, W).
        order: (n,) the source row of each sample (``CampaignData.row_order``): the array is
            in the source's order and sample i is written from ``images[order[i]]``.
    """
    if order is not None and len(order) != n:
        raise CampaignFormatError(path, "row_order", f"one source row per sample ({n})", f"{len(order)} rows")
    if isinstance(images, np.ndarray) or (hasattr(images, "shape") and hasattr(images, "__getitem__")):
        return _write_array(f, key, n, images, image_dtype, path, order)  # numpy, h5py, zarr, torch ...
    if order is not None and not np.array_equal(order, np.arange(n)):
        raise CampaignFormatError(
            path,
            key,
            "an (N, C, H, W) array in the table's row order (its rows were sorted by flight and time)",
            "streamed (start, block) pairs, which cannot be reordered: pass an array, or sort the table first",
        )
    if image_shape is None:
        raise ValueError("image_shape is required when images are streamed")
    shape = tuple(int(s) for s in image_shape)
    ds = f.create_dataset(key, shape=(n, *shape), dtype=image_dtype, chunks=(1, *shape) if n else None)
    written = np.zeros(n, bool)
    for start, block in images:
        block = np.asarray(block)
        if block.ndim != 4 or tuple(block.shape[1:]) != shape:
            raise CampaignFormatError(path, key, f"blocks of shape (b, {', '.join(map(str, shape))})", str(block.shape))
        stop = int(start) + len(block)
        if not 0 <= int(start) <= stop <= n:
            raise CampaignFormatError(
                path, key, f"blocks within samples 0 to {n - 1}", f"samples {start} to {stop - 1}"
            )
        if written[int(start) : stop].any():
            twice = int(start) + int(np.argmax(written[int(start) : stop]))
            raise CampaignFormatError(path, key, "each sample's image once", f"sample {twice} written twice")
        ds[int(start) : stop] = block.astype(image_dtype, copy=False)
        written[int(start) : stop] = True
    if not written.all():
        raise CampaignFormatError(
            path,
            key,
            f"an image for each of the {n} samples",
            f"{int(written.sum())} (first without one: sample {int(np.argmin(written))})",
        )
    return shape  # type: ignore[return-value]


def _write_array(
    f: h5py.File, key: str, n: int, images: Any, image_dtype: str, path: Path, order: np.ndarray | None
) -> tuple[int, int, int]:
    """An array-like (N, C, H, W): numpy (memmaps too), or anything indexable with a shape (an h5py
    dataset, read a slice at a time in increasing order, as h5py requires)."""
    found = tuple(int(s) for s in images.shape)
    if len(found) != 4 or found[0] != n:
        raise CampaignFormatError(path, key, f"an (N, C, H, W) array with N = {n} (one image per sample)", str(found))
    shape = found[1:]
    ds = f.create_dataset(key, shape=(n, *shape), dtype=image_dtype, chunks=(1, *shape) if n else None)
    step = max(1, SLICE_BYTES // max(1, int(np.prod(shape)) * 8))
    for s in range(0, n, step):
        rows = slice(s, min(n, s + step))
        if order is None:
            block = np.asarray(images[rows])
        else:  # increasing indices (as h5py requires), then back into the campaign's order
            idx = np.asarray(order[rows])
            srt = np.argsort(idx)
            part = np.asarray(images[idx[srt]])
            block = np.empty_like(part)
            block[srt] = part
        ds[rows] = block.astype(image_dtype, copy=False)
    return shape  # type: ignore[return-value]


def campaign_bytes(data: Any, sources: list[tuple[Any, int]], image_shape: Any, image_dtype: str) -> int:
    """About how many bytes a campaign file takes: its tables, and ``(images, count)`` for each image set
    (an array's own shape, else ``image_shape``), plus HDF5's overhead."""
    tables = sum(np.asarray(v).nbytes for v in vars(data).values() if isinstance(v, np.ndarray))
    tables += sum(np.asarray(fg.values).nbytes for fg in data.features.values())
    images = 0
    for src, count in sources:
        shape = getattr(src, "shape", None)
        per = int(np.prod(shape[1:])) if shape is not None and len(shape) == 4 else int(np.prod(image_shape or (0,)))
        images += count * per * np.dtype(image_dtype).itemsize
    return tables + images + 2**16
