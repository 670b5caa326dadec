"""What head training consumes: per-unit inputs scaled on each unit's training samples, and the loss."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from cbhlib.data.folds import FeatureScaler
from cbhlib.evaluation.flightnorm import levels, normalise
from cbhlib.models.fusion import IMAGE_MODES, PHYSICAL_MODES, HeadConfig
from cbhlib.store.units import Unit, unit_sha

log = logging.getLogger(__name__)


@dataclass
class TrainInputs:
    """Arrays over all N samples of the campaign.

    Attributes:
        y: (N,) labels, km.
        phys: (N, K) raw physical features (NaN allowed) or None.
        phys_names: K names.
        pooled: per embedding set, (N, D) image embeddings.
        regions: per embedding set, (N, R, D) region tokens.
        encoders: per embedding set, the encoder checkpoint (relative path) it came from.
        key: identifies the inputs (campaign hash, encoder checkpoints) in unit hashes.
        regions_per_side: the region grid the region tokens were pooled with.
        flight: (N,) flight of each sample (flight normalisation).
        flight_norm: ``none``, ``flight`` or ``running`` (:func:`flight_normalised` applied).
        level: the level a flight-normalised head adds (``training`` or ``inputs``).
        level_inputs: (N, K) raw inputs whose flight means predict a new flight's level (``inputs``).
    """

    y: np.ndarray
    phys: np.ndarray | None = None
    phys_names: list[str] = field(default_factory=list)
    pooled: list[np.ndarray] = field(default_factory=list)
    regions: list[np.ndarray] = field(default_factory=list)
    encoders: list[str] = field(default_factory=list)
    key: str = ""
    regions_per_side: int = 4
    flight: np.ndarray | None = None
    flight_norm: str = "none"
    level: str = "training"
    level_inputs: np.ndarray | None = None
    warmup: int = 10

    def adaptation(self) -> dict[str, object]:
        """What a head's checkpoint must carry to predict a new flight the same way."""
        return {"flight_norm": self.flight_norm, "flight_warmup": self.warmup, "flight_level": self.level}


def flight_normalised(
    inputs: TrainInputs, flight: np.ndarray, time: np.ndarray, how: str, warmup: int, level: str
) -> TrainInputs:
    """The inputs with every column standardised within its own flight, from inputs only
    (:func:`cbhlib.evaluation.flightnorm.normalise`): physical features, image embeddings and
    region tokens. Heads trained on them learn the within-flight anomaly (see :func:`_prepare`)."""
    if how == "none":
        return inputs
    norm = lambda a: normalise(a, flight, time, how, warmup).astype(np.float32)
    regions = [norm(r.reshape(len(r), -1)).reshape(r.shape) for r in inputs.regions]
    raw = inputs.phys if inputs.phys is not None and inputs.phys.shape[1] else (inputs.pooled or [None])[0]
    return replace(
        inputs,
        phys=norm(inputs.phys) if inputs.phys is not None else None,
        pooled=[norm(e) for e in inputs.pooled],
        regions=regions,
        key=f"{inputs.key}|flight_norm={how},warmup={warmup},level={level}",
        flight=np.asarray(flight),
        flight_norm=how,
        level=level,
        level_inputs=raw,
        warmup=warmup,
    )


def huber(err: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Elementwise Huber loss; err [M, B], delta [M, 1]."""
    a = err.abs()
    return torch.where(a <= delta, 0.5 * err * err, delta * (a - 0.5 * delta))


def head_sha(mode: str, train: Any, head: HeadConfig, unit: Unit, inputs: TrainInputs) -> str:
    """Hash of everything that determines a head unit's result."""
    settings = {k: v for k, v in asdict(train).items() if k not in ("mode", "finetune_lr")}
    return unit_sha(
        mode,
        settings,
        head.to_dict(),
        unit.model,
        unit.seed,
        unit.emb,
        unit.fold.train_idx,
        unit.fold.val_idx,
        unit.fold.test_idx,
        inputs.key,
        inputs.phys_names,
    )


def effective_batch(batch_size: int, units: list[Unit]) -> int:
    """The batch size, capped by the smallest training split (with a logged note)."""
    smallest = min(len(u.fold.train_idx) for u in units)
    if smallest < 1:
        raise ValueError("a fold has no training samples")
    if batch_size > smallest:
        log.info(
            "batch_size %d capped at %d: the smallest training split has %d samples", batch_size, smallest, smallest
        )
    return min(batch_size, smallest)


def _prepare(units: list[Unit], inputs: TrainInputs, mode: str) -> dict[str, Any]:
    """Per-unit scaled tensors; every statistic is fitted on the unit's training samples."""
    M, N = len(units), len(inputs.y)
    y = inputs.y.astype(np.float64)
    y_mu = np.array([y[u.fold.train_idx].mean() for u in units])  # a new flight's level without adaptation
    if inputs.flight_norm != "none":  # the target is the anomaly from each flight's training-side mean label
        lv = np.stack(
            [levels(y, inputs.flight, u.fold.train_idx, inputs.level_inputs, inputs.level) for u in units]  # type: ignore[arg-type]
        )
    else:
        lv = np.repeat(y_mu[:, None], N, axis=1)
    y_sd = np.array([max((y - lv[m])[u.fold.train_idx].std(), 1e-3) for m, u in enumerate(units)])
    out: dict[str, Any] = {
        "y": torch.tensor((y[None] - lv) / y_sd[:, None], dtype=torch.float32),
        "y_mu": y_mu,
        "y_lv": lv,  # [M, N] km: the level each unit adds back to a sample's prediction
        "y_sd": y_sd,
        "scalers": [{} for _ in units],
    }
    if mode in PHYSICAL_MODES:
        if inputs.phys is None or inputs.phys.shape[1] == 0:
            raise ValueError(f"mode '{mode}' needs physical features; the campaign has none")
        phys = np.empty((M, N, inputs.phys.shape[1]), np.float32)
        for m, u in enumerate(units):
            sc = FeatureScaler().fit(inputs.phys[u.fold.train_idx])
            phys[m] = sc.transform(inputs.phys)
            out["scalers"][m].update({f"phys_{k}": v for k, v in sc.state().items()})
        out["phys"] = torch.from_numpy(phys)
    if mode in IMAGE_MODES:
        if not inputs.pooled:
            raise ValueError(f"mode '{mode}' needs image embeddings; the campaign has no images")
        img = np.empty((M, N, inputs.pooled[0].shape[1]), np.float32)
        for m, u in enumerate(units):
            e = inputs.pooled[u.emb]
            mu, sd = e[u.fold.train_idx].mean(0), e[u.fold.train_idx].std(0) + 1e-6
            img[m] = (e - mu) / sd
            out["scalers"][m].update({"img_mean": mu.astype(np.float32), "img_std": sd.astype(np.float32)})
        out["img"] = torch.from_numpy(img)
        if mode == "attention":
            out["regions"] = torch.from_numpy(np.stack(inputs.regions).astype(np.float32))  # [S, N, R, D]
            out["emb"] = torch.tensor([u.emb for u in units])
    return out


def _to(t: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    """The tensors of ``t`` on ``dev`` (numpy statistics stay where they are)."""
    return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in t.items()}


def eval_sets(units: list[Unit], test: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """Per unit, the samples scored: validation (then test, with ``test``), padded.

    Returns:
        idx [M, E], validation mask [M, E], n_val and n_test per unit. A unit without
        validation samples is validated on its training samples.
    """
    vals = [np.asarray(u.fold.val_idx if len(u.fold.val_idx) else u.fold.train_idx, np.int64) for u in units]
    tests = [np.asarray(u.fold.test_idx if test else [], np.int64) for u in units]
    E = max(len(v) + len(te) for v, te in zip(vals, tests, strict=True))
    idx = torch.zeros(len(units), E, dtype=torch.long)
    vmask = torch.zeros(len(units), E)
    for m, (v, te) in enumerate(zip(vals, tests, strict=True)):
        idx[m, : len(v) + len(te)] = torch.from_numpy(np.concatenate([v, te]))
        vmask[m, : len(v)] = 1.0
    return idx, vmask, [len(v) for v in vals], [len(te) for te in tests]
