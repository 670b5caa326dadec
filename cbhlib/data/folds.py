"""Training data: fold splits, per-fold preprocessing and a lazy image dataset.

Every fitted statistic (imputer medians, scaler means, pixel statistics) is fitted on
the training side of a fold only. Splits are index arrays into the campaign.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, LeaveOneGroupOut
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from cbhlib.constants import PROTOCOLS
from cbhlib.data.campaign import Campaign


@dataclass
class Fold:
    """One split of a protocol.

    Attributes:
        fold_id: position in the protocol.
        test_flight: held-out flight name (LOFO) or a label such as ``random-3``.
        train_idx: samples the model fits on.
        val_idx: samples for early stopping / model selection (never test samples).
        test_idx: samples scored.
        protocol: ``lofo``, ``random`` or ``within_flight``.
    """

    fold_id: int
    test_flight: str
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    protocol: str = "lofo"

    @property
    def fit_idx(self) -> np.ndarray:
        """Training plus validation samples: everything a fold may learn from."""
        return np.sort(np.concatenate([self.train_idx, self.val_idx]))


def time_block_split(
    idx: np.ndarray,
    flight: np.ndarray,
    time: np.ndarray,
    fraction: float = 0.2,
    n_blocks: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split samples into (train, validation) by contiguous time blocks within each flight.

    Each flight's samples (in time order) are cut into ``n_blocks`` contiguous blocks
    and ``round(n_blocks * fraction)`` (at least one) are drawn for validation, so
    validation samples are not the neighbours of training samples along the track.
    Flights with fewer than ``2 * n_blocks`` samples stay entirely in training.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    n_val_blocks = max(1, int(round(n_blocks * fraction)))
    for k in np.unique(flight[idx]):
        members = idx[flight[idx] == k]
        members = members[np.argsort(time[members], kind="stable")]
        if len(members) < 2 * n_blocks:
            train.append(members)
            continue
        blocks = np.array_split(members, n_blocks)
        chosen = set(rng.choice(n_blocks, size=n_val_blocks, replace=False).tolist())
        for b, block in enumerate(blocks):
            (val if b in chosen else train).append(block)
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.array([], dtype=np.int64)
    return cat(train), cat(val)


def lofo_folds(camp: Campaign, val_fraction: float = 0.2, val_blocks: int = 5, seed: int = 0) -> list[Fold]:
    """Leave-one-flight-out folds in flight order, validation from training flights only."""
    n = camp.n_samples
    folds = []
    splitter = LeaveOneGroupOut()
    for fid, (fit, test) in enumerate(splitter.split(np.zeros(n), groups=camp.flight)):
        k = int(camp.flight[test[0]])
        train, val = time_block_split(fit, camp.flight, camp.time_utc, val_fraction, val_blocks, seed + fid)
        folds.append(Fold(fid, camp.flight_names[k], train, val, np.sort(test), "lofo"))
    return folds


def random_folds(camp: Campaign, k: int = 5, val_fraction: float = 0.2, seed: int = 0) -> list[Fold]:
    """Pooled random K-fold (leaky: neighbours along a track land on both sides)."""
    folds = []
    rng = np.random.default_rng(seed)
    for fid, (fit, test) in enumerate(KFold(k, shuffle=True, random_state=seed).split(np.zeros(camp.n_samples))):
        val = np.sort(rng.choice(fit, size=max(1, int(len(fit) * val_fraction)), replace=False))
        train = np.setdiff1d(fit, val)
        folds.append(Fold(fid, f"random-{fid}", train, val, np.sort(test), "random"))
    return folds


def within_flight_folds(camp: Campaign, k: int = 5, val_fraction: float = 0.2, seed: int = 0) -> list[Fold]:
    """Time-blocked CV inside each flight: train on a flight's other blocks, test one block.

    Flights with fewer than ``2 * k`` samples are skipped.
    """
    folds: list[Fold] = []
    for f, name in enumerate(camp.flight_names):
        members = camp.flight_indices(f)
        members = members[np.argsort(camp.time_utc[members], kind="stable")]
        if len(members) < 2 * k:
            continue
        blocks = np.array_split(members, k)
        for b in range(k):
            fit = np.concatenate([blocks[j] for j in range(k) if j != b])
            train, val = time_block_split(fit, camp.flight, camp.time_utc, val_fraction, k - 1, seed + b)
            if len(val) == 0:
                train, val = fit[: int(len(fit) * (1 - val_fraction))], fit[int(len(fit) * (1 - val_fraction)) :]
            folds.append(Fold(len(folds), f"{name}#b{b}", train, val, np.sort(blocks[b]), "within_flight"))
    return folds


def make_folds(camp: Campaign, protocol: str = "lofo", val_fraction: float = 0.2, seed: int = 0) -> list[Fold]:
    """Folds of a named protocol (``lofo``, ``random``, ``within_flight``)."""
    if protocol == "lofo":
        return lofo_folds(camp, val_fraction, seed=seed)
    if protocol == "random":
        return random_folds(camp, val_fraction=val_fraction, seed=seed)
    if protocol == "within_flight":
        return within_flight_folds(camp, val_fraction=val_fraction, seed=seed)
    raise ValueError(f"unknown protocol '{protocol}'; choose from {', '.join(PROTOCOLS)}")


class FeatureScaler:
    """Median imputation then standardisation, fitted on one fold's training samples."""

    def __init__(self) -> None:
        self.pipe = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]
        )

    def fit(self, X: np.ndarray) -> FeatureScaler:
        """Fit on (n_train, K); returns self."""
        self.pipe.fit(X)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(N, K) with NaN -> (N, K) float32, finite."""
        return self.pipe.transform(X).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        """Fitted statistics, for checkpoints."""
        return {
            "median": self.pipe["impute"].statistics_.astype(np.float32),
            "mean": self.pipe["scale"].mean_.astype(np.float32),
            "scale": self.pipe["scale"].scale_.astype(np.float32),
        }


class ImageDataset(torch.utils.data.Dataset):
    """Images of a campaign by sample index, read lazily from HDF5.

    The HDF5 handle is opened on first access in each process, so DataLoader workers
    (fork or spawn) each open their own. Items are ``(image (C, H, W) float32, index)``.
    """

    def __init__(self, camp: Campaign, indices: np.ndarray) -> None:
        if not camp.has_images:
            camp.images([0])  # raises the clear "no images" error
        self.camp = camp
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        return torch.from_numpy(self.camp.images([j])[0]), j


def image_loader(
    camp: Campaign, indices: np.ndarray, batch_size: int, num_workers: int = 0, shuffle: bool = False, seed: int = 0
) -> torch.utils.data.DataLoader:
    """A DataLoader over :class:`ImageDataset`; workers open their own HDF5 handle."""
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        ImageDataset(camp, indices),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=gen,
        persistent_workers=False,
    )
