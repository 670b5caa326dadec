"""Units of work and their typed results, written by one function and verified on read.

A unit is one (model, protocol, fold, seed). Its result file carries a format version,
the hash of everything that determined it (``unit_sha``), the sha256 of its own content
and of its checkpoint. On read, a file that is truncated, edited, of another version,
missing keys, or whose checkpoint is missing or altered is not trusted: it is reported in
a warning and the unit is computed again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cbhlib.atomic import atomic_write_text
from cbhlib.data.folds import Fold
from cbhlib.errors import CbhError
from cbhlib.store.checkpoints import save_checkpoint, weights_sha256
from cbhlib.store.rundir import RunDir

log = logging.getLogger(__name__)

RESULT_VERSION = 3  # bump when the schema or the meaning of a field changes


class UnitFileError(CbhError):
    """A unit result file that cannot be trusted (the unit is recomputed)."""


@dataclass
class Unit:
    """One (model, protocol, fold, seed); ``emb`` indexes the embedding set (encoder) it uses."""

    model: str
    protocol: str
    fold: Fold
    seed: int
    emb: int = 0

    @property
    def name(self) -> str:
        return f"{self.model}/{self.protocol}/fold{self.fold.fold_id}_seed{self.seed}"


@dataclass
class UnitResult:
    """What one unit produced. Errors in km; ``r2`` is None where the truth is constant."""

    model: str
    protocol: str
    fold_id: int
    test_flight: str
    seed: int
    n_train: int
    n_val: int
    n_test: int
    r2: float | None
    mae_km: float
    rmse_km: float
    bias_km: float
    test_idx: list[int]
    true: list[float]
    pred: list[float]
    val_idx: list[int] = field(default_factory=list)
    val_pred: list[float] = field(default_factory=list)
    cal_idx: list[int] = field(default_factory=list)  # training-side samples, each predicted by a model
    cal_pred: list[float] = field(default_factory=list)  # fitted without its flight (flight-aware intervals)
    epoch_trained: int | None = None
    epochs_run: int | None = None
    best_val_loss: float | None = None
    attention_mean: list[float] | None = None
    attention_test: list[list[float]] | None = None
    encoder: str | None = None
    unit_sha: str = ""
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    version: int = RESULT_VERSION

    def to_json(self) -> dict[str, Any]:
        """Plain dict with ``content_sha256`` of everything else."""
        body = plain(dataclasses.asdict(self))
        body["content_sha256"] = _content_sha(body)
        return body

    @classmethod
    def from_json(cls, d: Any, source: object = "unit file") -> UnitResult:
        """Rebuild and verify a result dict (version, keys, types, content hash)."""
        if not isinstance(d, dict):
            raise UnitFileError(f"{source}: expected a JSON object; found {type(d).__name__}")
        if d.get("version") != RESULT_VERSION:
            raise UnitFileError(f"{source}: expected result version {RESULT_VERSION}; found {d.get('version')!r}")
        claimed = d.get("content_sha256")
        body = {k: v for k, v in d.items() if k != "content_sha256"}
        if claimed != _content_sha(body):
            raise UnitFileError(f"{source}: content hash mismatch (edited or damaged file)")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(body))
        if missing:
            raise UnitFileError(f"{source}: missing keys {missing}")
        unknown = sorted(set(body) - names)
        if unknown:
            raise UnitFileError(f"{source}: unknown keys {unknown}")
        if not (len(body["test_idx"]) == len(body["true"]) == len(body["pred"]) == body["n_test"]):
            raise UnitFileError(f"{source}: test_idx, true, pred and n_test disagree")
        return cls(**body)

    def fold_row(self) -> dict[str, Any]:
        """The seed's fold_results entry (plus seed, n_val and bias)."""
        return {
            k: getattr(self, k)
            for k in (
                "fold_id",
                "test_flight",
                "seed",
                "n_train",
                "n_val",
                "n_test",
                "r2",
                "mae_km",
                "rmse_km",
                "bias_km",
                "epoch_trained",
            )
        }


def plain(obj: Any) -> Any:
    """JSON-safe copy: numpy to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [plain(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _content_sha(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def unit_sha(*parts: Any) -> str:
    """Hash of everything that determines a unit's result (configs, indices, inputs, version)."""
    h = hashlib.sha256(f"v{RESULT_VERSION}".encode())
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(plain(p), sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:20]


class UnitStore:
    """Reads and writes unit results of one run folder."""

    def __init__(self, run: RunDir, profile: dict[str, Any] | None = None) -> None:
        """``profile``: what heads record about their training campaign (``training_campaign`` in each
        checkpoint, as JSON), so that ``predict`` can compare a new campaign with it."""
        self.run = run
        self.profile = profile

    def load(self, unit: Unit, sha: str) -> UnitResult | None:
        """The finished result of ``unit`` if it can be trusted and matches ``sha``, else None."""
        path = self.run.unit_json(unit.model, unit.protocol, unit.fold.fold_id, unit.seed)
        if not path.exists():
            return None
        try:
            res = UnitResult.from_json(json.loads(path.read_text()), path)
            if res.unit_sha != sha:
                return None  # inputs or settings changed: recompute quietly
            if res.checkpoint is not None:
                ck = self.run.root / res.checkpoint
                if not ck.exists():
                    raise UnitFileError(f"{ck}: checkpoint of this unit is missing")
                if file_sha256(ck) != res.checkpoint_sha256:
                    raise UnitFileError(f"{ck}: checkpoint does not match its recorded sha256 (truncated or altered)")
            return res
        except (UnitFileError, json.JSONDecodeError, UnicodeDecodeError, OSError, TypeError, ValueError) as exc:
            log.warning("not trusting %s (%s); recomputing unit %s", path, str(exc).splitlines()[0], unit.name)
            return None

    def save(self, result: UnitResult, checkpoint: dict[str, Any] | None = None) -> UnitResult:
        """Write the checkpoint (if any), then the result JSON last; both atomically."""
        if checkpoint is not None:
            checkpoint = dict(checkpoint)
            if self.profile is not None:
                checkpoint["training_campaign"] = json.dumps(self.profile, sort_keys=True)
            enc = checkpoint.get("encoder")
            if isinstance(enc, str) and enc and (self.run.root / enc).is_file():
                checkpoint["encoder_weights_sha256"] = weights_sha256(self.run.root / enc)  # predict verifies it
            ck = self.run.unit_checkpoint(result.model, result.protocol, result.fold_id, result.seed)
            save_checkpoint(checkpoint, ck)
            result.checkpoint = self.run.relative(ck)
            result.checkpoint_sha256 = file_sha256(ck)
        path = self.run.unit_json(result.model, result.protocol, result.fold_id, result.seed)
        atomic_write_text(path, json.dumps(result.to_json(), indent=1) + "\n")
        return result

    def read_all(self, model: str, protocol: str, strict: bool = False) -> list[UnitResult]:
        """Every readable, verified result of a model and protocol.

        Damaged ones are skipped with a warning; with ``strict`` (``predict``) they are refused,
        as is a file whose fold or seed is not the one its name says (a copied unit file).
        """
        out = []
        for fold, seed, path in self.run.unit_files(model, protocol):
            try:
                res = UnitResult.from_json(json.loads(path.read_text()), path)
                if strict and (res.fold_id, res.seed, res.model, res.protocol) != (fold, seed, model, protocol):
                    raise UnitFileError(
                        f"{path}: expected the unit of {model}/{protocol} fold {fold} seed {seed} (its name); "
                        f"found {res.model}/{res.protocol} fold {res.fold_id} seed {res.seed} (a copied file?)"
                    )
                out.append(res)
            except (UnitFileError, json.JSONDecodeError, OSError, TypeError, ValueError, UnicodeDecodeError) as exc:
                if strict:
                    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise UnitFileError(
                        msg if msg.startswith(str(path)) else f"{path}: unreadable unit file: {msg}"
                    ) from None
                log.warning("skipping %s: %s", path, str(exc).splitlines()[0])
        return out
