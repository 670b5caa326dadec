"""Safe checkpoint files: written atomically, read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from cbhlib.atomic import atomic_path, write_failure
from cbhlib.errors import CheckpointError

STRIP_PREFIXES = ("encoder.", "module.")


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` to a unique temporary file in the same folder, then rename.

    Saved through a file object, so the archive's inner name is torch's fixed default, not
    the temporary name: the same weights give the same bytes (and sha256) on every run.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            torch.save(obj, fh)
    except RuntimeError as exc:  # torch reports a full disk or a size limit as "unexpected pos ..."
        raise write_failure(path, exc) from None
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: code hidden in a pickle never runs.

    Raises:
        CheckpointError: missing, truncated, not a torch file, or holding objects
            other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        found = "a folder" if path.is_dir() else "no such file"
        raise CheckpointError(f"{path}: expected a torch checkpoint file; found {found}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x89HDF"):
        raise CheckpointError(f"{path}: expected a torch checkpoint (.pt); found an HDF5 file (a campaign file?)")
    try:
        with warnings.catch_warnings():  # torch warns about legacy pickles before refusing them: one line is ours
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        m = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        plain = head.startswith(b"\x80") and not head.startswith(b"PK")
        what = (
            f"found {m.group(1)}" if m else "found a plain pickle, not a torch.save file" if plain else "found others"
        )
        raise CheckpointError(
            f"{path}: refused to load: expected tensors and plain containers (weights_only=True: nothing in the file "
            f"runs); {what}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {first}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint; found {type(obj).__name__}")
    return obj


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop an ``encoder.`` (or ``module.``) prefix shared by every key."""
    for prefix in STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_state(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: object, optional_prefixes: tuple[str, ...] = ()
) -> None:
    """Load a state dict, naming the file and the mismatch on failure.

    Keys starting with one of ``optional_prefixes`` may be absent (e.g. an MAE decoder
    when only the encoder was saved).
    """
    state = strip_prefix(dict(state))
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(optional_prefixes)]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[0]})")
        raise CheckpointError(f"{source}: checkpoint does not fit the model architecture: " + "; ".join(parts))
    model.load_state_dict(state, strict=False)


def weights_sha256(path: str | Path) -> str:
    """sha256 of a checkpoint's weights (``model_state_dict`` or ``state_dict``, keys in order), not of its bytes:
    the same weights give the same hash whatever else the file records (timings, host)."""
    import hashlib

    import torch

    ck = load_checkpoint(path)
    state = ck.get("model_state_dict", ck.get("state_dict"))  # heads and encoders
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: expected weights (model_state_dict or state_dict); found none")
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k]
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            h.update(str(v.dtype).encode() + str(tuple(v.shape)).encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
