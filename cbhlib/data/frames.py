"""The camera frames an encoder may see, held in memory when they fit or streamed from HDF5.

Per-fold pretraining uses the labelled and unlabelled frames of the *training* flights
only; the ``transductive`` scope adds the held-out flight's unlabelled frames (never its
labelled ones, never labels). Rows are (pool, index) pairs; every read of a batch goes
through :meth:`FrameSet.batch`, so the in-memory and streamed paths give the same batches.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from cbhlib.data.campaign import Campaign

log = logging.getLogger(__name__)
STATS_FRAMES = 16_384  # frames read for pixel statistics (every frame of the synthetic presets)


@dataclass(frozen=True)
class Scope:
    """Which frames an encoder is pretrained on.

    Attributes:
        key: ``fold<k>``, ``fold<k>-transductive`` or ``all``, with ``-random`` for the
            untrained ablation (same frames for its pixel statistics, no training).
        held_out: the flight index it must not see (None for ``all``).
        transductive: whether the held-out flight's *unlabelled* frames are allowed.
        untrained: random weights (the ``random_init`` baseline).
    """

    key: str
    held_out: int | None = None
    transductive: bool = False
    untrained: bool = False

    @classmethod
    def for_fold(cls, flight: int, transductive: bool = False) -> Scope:
        return cls(f"fold{flight}" + ("-transductive" if transductive else ""), flight, transductive)

    def as_untrained(self) -> Scope:
        """The same frames, random weights."""
        return Scope(self.key + "-random", self.held_out, self.transductive, True)


ALL = Scope("all")


def select_frames(camp: Campaign, scope: Scope, unlabelled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(labelled indices, unlabelled indices) an encoder of ``scope`` may be pretrained on."""
    lab = np.arange(camp.n_samples) if scope.held_out is None else np.flatnonzero(camp.flight != scope.held_out)
    if not unlabelled or camp.n_unlabelled == 0:
        return lab, np.array([], dtype=np.int64)
    fl = camp.unlabelled_flight
    if scope.held_out is None or scope.transductive:
        unl = np.arange(camp.n_unlabelled)
    else:
        unl = np.flatnonzero(fl != scope.held_out)
    return lab, unl


_ALL_FRAMES: dict[tuple[str, int, int], tuple[torch.Tensor, torch.Tensor | None]] = {}


def all_frames(camp: Campaign) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every labelled and unlabelled frame of a campaign, read once per process and file version."""
    st = camp.path.stat()
    key = (str(camp.path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _ALL_FRAMES:
        _ALL_FRAMES.clear()  # one campaign at a time
        lab = torch.from_numpy(camp.images(slice(0, camp.n_samples)))
        unl = torch.from_numpy(camp.images(slice(0, camp.n_unlabelled), "unlabelled")) if camp.n_unlabelled else None
        _ALL_FRAMES[key] = (lab, unl)
    return _ALL_FRAMES[key]


class FrameSet:
    """Frames of two pools addressed by row; ``batch(rows)`` returns raw pixels [B, C, H, W].

    When the campaign's frames fit ``memory_limit_mb`` they are read once per process and
    shared by every encoder pretrained there; otherwise each batch is read from HDF5.
    """

    def __init__(self, camp: Campaign, labelled: np.ndarray, unlabelled: np.ndarray, memory_limit_mb: int) -> None:
        self.camp = camp
        self.labelled = np.sort(np.asarray(labelled, np.int64))
        self.unlabelled = np.sort(np.asarray(unlabelled, np.int64))
        C, H, W = camp.image_shape  # type: ignore[misc]
        self.shape = (C, H, W)
        total = (camp.n_samples + camp.n_unlabelled) * C * H * W * 4
        self.in_memory = total <= memory_limit_mb * 2**20
        self._cache: torch.Tensor | None = None
        if self.in_memory and len(self):
            lab, unl = all_frames(camp)
            parts = [lab[torch.from_numpy(self.labelled)]]
            if len(self.unlabelled) and unl is not None:
                parts.append(unl[torch.from_numpy(self.unlabelled)])
            self._cache = torch.cat(parts) if len(parts) > 1 else parts[0]

    def __len__(self) -> int:
        return int(len(self.labelled) + len(self.unlabelled))

    def flights(self) -> np.ndarray:
        """Flight index of every row."""
        fl = [self.camp.flight[self.labelled]]
        if len(self.unlabelled):
            fl.append(self.camp.unlabelled_flight[self.unlabelled])  # type: ignore[index]
        return np.concatenate(fl)

    def to(self, device: torch.device) -> FrameSet:
        """Move in-memory frames to ``device`` once (a GPU then never waits on host copies)."""
        if self._cache is not None and self._cache.device != device:
            self._cache = self._cache.to(device)
        return self

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        """Raw pixels of ``rows`` in the given order (float32), on the frames' device."""
        rows = np.asarray(rows, np.int64)
        if self._cache is not None:
            return self._cache[torch.from_numpy(rows).to(self._cache.device)]
        out = np.empty((len(rows), *self.shape), np.float32)
        n_lab = len(self.labelled)
        is_lab = rows < n_lab
        if is_lab.any():
            out[is_lab] = self.camp.images(self.labelled[rows[is_lab]])
        if (~is_lab).any():
            out[~is_lab] = self.camp.images(self.unlabelled[rows[~is_lab] - n_lab], "unlabelled")
        return torch.from_numpy(out)

    def channel_stats(
        self, centre: torch.nn.Module | object, chunk: int = 256, max_frames: int = STATS_FRAMES
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the frames after ``centre`` (streamed in chunks of at most
        ``chunk`` frames and about 4 M values, so large frames never sit in memory in float64).

        At most ``max_frames`` evenly spaced frames are read (every frame of the presets), so a
        pool of millions of frames is not read before the first epoch."""
        C = self.shape[0]
        chunk = min(chunk, max(1, 2**22 // int(np.prod(self.shape))))
        rows = np.arange(len(self))
        if len(rows) > max_frames:
            rows = np.unique(np.linspace(0, len(rows) - 1, max_frames).astype(np.int64))
            log.info("pixel statistics from %d of %d frames (evenly spaced)", len(rows), len(self))
        total = torch.zeros(C, dtype=torch.float64)
        total_sq = torch.zeros(C, dtype=torch.float64)
        count = 0
        for s in range(0, len(rows), chunk):
            x = centre(self.batch(rows[s : s + chunk])).double()  # type: ignore[operator]
            total += x.sum(dim=(0, 2, 3))
            total_sq += (x * x).sum(dim=(0, 2, 3))
            count += x.shape[0] * x.shape[2] * x.shape[3]
        mean = total / max(count, 1)
        std = (total_sq / max(count, 1) - mean**2).clamp_min(0).sqrt()
        return mean.float(), std.float()


def batch_cap(shape: tuple[int, int, int], batch: int, budget_pixels: int = 64 * 128 * 128) -> int:
    """Frames per step bounded so that a batch holds at most ``budget_pixels`` pixels per channel
    (activation memory grows with image size; seed-shape frames are 69x the default's)."""
    C, H, W = shape
    cap = max(4, budget_pixels // max(1, H * W))
    if cap < batch:
        log.info("batch of %d frames capped at %d for %dx%d images (memory bound)", batch, cap, H, W)
    return min(batch, cap)


def epoch_rows(rng: np.random.Generator, n: int, max_frames: int) -> np.ndarray:
    """This epoch's frame order: a permutation, truncated to ``max_frames`` when set."""
    perm = rng.permutation(n)
    return perm[:max_frames] if max_frames and max_frames < n else perm


def steps_per_epoch(n: int, batch: int, max_frames: int) -> int:
    used = min(n, max_frames) if max_frames else n
    return max(1, math.ceil(used / batch))
