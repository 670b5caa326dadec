"""Content-keyed array caches that verify themselves on read.

Each ``.npz`` holds its arrays plus the sha256 of their bytes, shapes and dtypes. A cache
file that is truncated, not a zip, or whose content does not match its recorded hash is
not used: a warning names the file and the caller recomputes (and overwrites it).
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import numpy as np

from cbhlib.atomic import atomic_path

log = logging.getLogger(__name__)


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays and their digest atomically (unique temporary name)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, __sha256__=np.array(_digest(arrays)), **arrays)
    return path


def load_arrays(
    path: str | Path, expect: dict[str, tuple[int, ...] | None] | None = None
) -> dict[str, np.ndarray] | None:
    """The arrays of a verified cache file, or None (missing, damaged, or not as expected).

    Args:
        expect: optional ``{name: shape}`` (None: any shape) the content must match.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "__sha256__"}
            recorded = str(z["__sha256__"]) if "__sha256__" in z.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        log.warning(
            "cache %s is unreadable (%s); recomputing",
            path,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return None
    if recorded != _digest(arrays):
        log.warning("cache %s does not match its recorded sha256 (damaged or edited); recomputing", path)
        return None
    for name, shape in (expect or {}).items():
        if name not in arrays or (shape is not None and tuple(arrays[name].shape) != tuple(shape)):
            found = arrays[name].shape if name in arrays else "missing"
            log.warning("cache %s: '%s' has shape %s, expected %s; recomputing", path, name, found, shape)
            return None
    return arrays
