"""What every training loop shares: one learning-rate schedule, one JSON-lines log, one
divergence check."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from cbhlib.errors import TrainingDivergedError


def cosine_lr(step: int, total: int, base: float, warmup: int = 0) -> float:
    """Learning rate at ``step`` of ``total``: 1) linear warm-up over ``warmup`` steps,
    2) cosine decay from ``base`` to 0 over the rest (nanoGPT's ``get_lr``)."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(max(step - warmup, 0), span) / span
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def check_finite(value: torch.Tensor | float, what: str, hint: str = "") -> None:
    """Raise :class:`TrainingDivergedError` naming ``what`` (mode, fold, epoch...) if not finite."""
    ok = bool(torch.isfinite(value).all()) if isinstance(value, torch.Tensor) else math.isfinite(value)
    if not ok:
        raise TrainingDivergedError(f"{what}: became non-finite" + (f"; {hint}" if hint else ""))


class JsonlLog:
    """Append JSON records, one per line, flushed per call (readable while a run is live).

    ``JsonlLog(None)`` is a no-op, so loops need no ``if log`` branches.
    """

    def __init__(self, path: str | os.PathLike | None, **common: Any) -> None:
        self.path = Path(path) if path else None
        self.common = common
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a")

    def write(self, **record: Any) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps({**self.common, **record}, default=float) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike | None) -> list[dict[str, Any]]:
    """Records of a JSON-lines log (a line cut by a crash is skipped)."""
    if path is None or not Path(path).exists():
        return []
    rows = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.

    Raises:
        CbhError: a CUDA device asked for on a machine without one.
    """
    from cbhlib.errors import CbhError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CbhError(f"device '{device}': expected a CUDA GPU; found none (use device: auto or cpu)")
    return torch.device(device)
