"""Opening HDF5 files someone else wrote, without trusting them.

* Only the file itself is read: external links, datasets with external raw storage and
  virtual datasets (which pull bytes from other files, e.g. ``/etc/passwd``) are refused.
* Declared sizes are bounded by what the file can hold: a 1 MB file that declares a
  billion samples is refused before anything is read.
* Every failure is a :class:`CampaignFormatError` naming the file, the path inside it,
  what was expected and what was found.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from cbhlib.errors import CampaignFormatError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_EXPANSION = 1100  # deflate cannot expand stored bytes by more than ~1032x
SLACK_BYTES = 1 << 20  # small datasets may be declared larger than their (unallocated) storage


def open_h5(path: Path) -> h5py.File:
    """Open a campaign file read-only, with one clear error for each way it can be unreadable."""
    if not path.exists():
        raise CampaignFormatError(path, "(file)", "an existing campaign file", "no such file")
    if path.is_dir():
        raise CampaignFormatError(path, "(file)", "an HDF5 campaign file", "a directory")
    if path.stat().st_size == 0:
        raise CampaignFormatError(path, "(file)", "an HDF5 campaign file", "an empty file (0 bytes)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head != HDF5_SIGNATURE:
            raise CampaignFormatError(
                path, "(file)", "an HDF5 file (signature \\x89HDF)", f"first bytes {head[:8]!r}"
            ) from None
        raise CampaignFormatError(
            path,
            "(file)",
            "a complete, readable HDF5 file",
            f"h5py cannot open it ({str(exc).splitlines()[0]}); the file may be truncated",
        ) from None


def check_self_contained(f: h5py.File, path: Path) -> None:
    """Refuse external links, external raw storage and virtual datasets anywhere in the file."""
    problems: list[tuple[str, str]] = []

    def visit(name: str, link: h5py.HardLink | h5py.SoftLink | h5py.ExternalLink) -> None:
        if problems:
            return
        if isinstance(link, h5py.ExternalLink):
            problems.append((name, f"an external link to '{link.filename}:{link.path}'"))
            return
        if isinstance(link, h5py.SoftLink):
            return  # resolved inside this file; its target is visited on its own
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset):
            if obj.external:
                problems.append((name, f"external raw storage in '{obj.external[0][0]}'"))
            elif obj.is_virtual:
                sources = {m.file_name for m in obj.virtual_sources()}
                problems.append((name, f"a virtual dataset over {sorted(sources)}"))

    f.visititems_links(visit)
    if problems:
        name, what = problems[0]
        raise CampaignFormatError(path, name, "data stored in this file only", what)


def check_declared_size(ds: h5py.Dataset, path: Path, key: str) -> None:
    """Refuse a dataset whose declared size exceeds what its stored bytes can expand to."""
    declared = int(np.prod(ds.shape, dtype=np.float64) * ds.dtype.itemsize) if ds.shape else ds.dtype.itemsize
    stored = int(ds.id.get_storage_size())
    file_size = path.stat().st_size
    bound = min(stored, file_size) * MAX_EXPANSION + SLACK_BYTES
    if declared > bound:
        raise CampaignFormatError(
            path,
            key,
            f"a declared size the file can hold (at most ~{bound / 2**20:.0f} MiB for {stored:,} stored bytes)",
            f"shape {ds.shape} of {ds.dtype}, {declared / 2**20:,.0f} MiB declared",
        )


def read_bounded(ds: h5py.Dataset, path: Path, key: str, chunk: int = 1 << 20) -> np.ndarray:
    """Read a dataset after checking its declared size, in chunks of ``chunk`` rows."""
    check_declared_size(ds, path, key)
    if ds.ndim == 0 or ds.shape[0] <= chunk:
        return ds[()]
    out = np.empty(ds.shape, dtype=ds.dtype)
    for start in range(0, ds.shape[0], chunk):
        out[start : start + chunk] = ds[start : start + chunk]
    return out
