"""Apply a finished run to a campaign file: every saved head, with its own scalers and encoder.

Each unit's checkpoint holds its head's weights, architecture, fitted scalers, label
scale, feature names, the encoder it was trained on and a profile of its training
campaign, so a head rebuilds from its file (as nanoGPT's ``model_args``). Nothing loaded
is trusted: checkpoints must lie inside the run folder and match the sha256 their unit
files record, head sizes are checked before anything is allocated, and the campaign is
compared with what the heads were trained on (``cbhlib.training.inputcheck``).
``predict`` writes nothing into the run folder (a read-only archived run can be applied)
and returns one row per (unit, sample) and the ensemble mean and sd over units per sample.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cbhlib.constants import FLIGHT_NORMS, INTERVAL_METHODS
from cbhlib.data.campaign import Campaign
from cbhlib.errors import CbhError, CheckpointError
from cbhlib.evaluation import imagestats
from cbhlib.evaluation.flightnorm import normalise
from cbhlib.evaluation.intervals import interval_label
from cbhlib.evaluation.intervals.newflight import ONLINE, Intervals, calibration_residuals
from cbhlib.models.fusion import IMAGE_MODES, PHYSICAL_MODES, FusionHeads, HeadConfig
from cbhlib.store.checkpoints import load_checkpoint
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import UnitResult, UnitStore
from cbhlib.training import inputcheck as ic
from cbhlib.training.embed import Embeddings, embed_campaign
from cbhlib.training.pretrain import load_encoder

log = logging.getLogger(__name__)


@dataclass
class Head:
    """One trained head and what it needs to predict."""

    model: str
    mode: str
    fold_id: int
    seed: int
    test_flight: str
    net: FusionHeads
    scalers: dict[str, np.ndarray]
    y_mean: float
    y_std: float
    feature_names: list[str]
    encoder: str  # encoder checkpoint, relative to the run folder ("" for physical_only)
    regions: int = 4  # image regions per side of the attention mode's tokens
    path: Path = field(default_factory=Path)  # the checkpoint
    profile: dict[str, Any] | None = None  # the training campaign (None: trained before profiles)
    encoder_sha256: str | None = None  # its encoder's weights sha256, recorded at training (None: older checkpoints)
    flight_norm: str = "none"  # label-free flight adaptation the head was trained with
    flight_warmup: int = 10

    @property
    def what(self) -> str:
        return f"{self.model} (fold {self.fold_id}, seed {self.seed})"


def _number(ck: dict[str, Any], key: str, path: object, lo: float, hi: float) -> float:
    v = ck.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= float(v) <= hi:
        raise CheckpointError(f"{path}: {key}: expected a number in {lo:g}..{hi:g}; found {v!r:.60}")
    return float(v)


def _norm(a: np.ndarray, h: Head, camp: Campaign) -> np.ndarray:
    """A head's flight normalisation (none: unchanged) applied to (N, K) inputs of ``camp``."""
    if h.flight_norm == "none":
        return a
    return normalise(a, camp.flight, camp.time_utc, h.flight_norm, h.flight_warmup).astype(np.float32)


def _choice(ck: dict[str, Any], key: str, allowed: tuple[str, ...], path: object) -> str:
    v = ck.get(key, allowed[0])
    if v not in allowed:
        raise CheckpointError(f"{path}: {key}: expected one of {', '.join(allowed)}; found {v!r:.60}")
    return str(v)


def _head_net(ck: dict[str, Any], path: object) -> FusionHeads:
    """The head's module, its size checked (on the meta device) before anything is allocated."""
    try:
        raw = json.loads(ck["head_config"])
        cfg = HeadConfig(**raw) if isinstance(raw, dict) else None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: head_config: expected a head architecture; found {type(exc).__name__}"
        ) from None
    if cfg is None:
        raise CheckpointError(f"{path}: head_config: expected a mapping; found {type(raw).__name__}")
    mode = ck.get("mode")
    img_dim, n_phys = int(_number(ck, "img_dim", path, 0, 65536)), int(_number(ck, "n_phys", path, 0, 65536))
    problem = cfg.problem(mode if isinstance(mode, str) else repr(mode), img_dim, n_phys)
    if problem:
        raise CheckpointError(f"{path}: head_config refused: {problem}")
    state = ck.get("model_state_dict")
    if isinstance(state, dict) and any(str(k).startswith("encoder.") for k in state):
        raise CheckpointError(
            f"{path}: expected a head on a frozen encoder; found a fine-tuned head with its own encoder "
            "weights, which predict does not apply (predict with the model it was fine-tuned from)"
        )
    with torch.device("meta"):
        want = {
            k: tuple(v.shape) for k, v in FusionHeads(mode, cfg, 1, img_dim, n_phys, seeds=[0]).state_dict().items()
        }
    got = (
        {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    )
    if want != got:
        diff = sorted(set(want) ^ set(got)) or [k for k in want if want[k] != got[k]]
        raise CheckpointError(
            f"{path}: model_state_dict: expected the {len(want)} tensors of its head_config; found "
            f"{len(got)} ({diff[0]}: {got.get(diff[0], 'missing')} vs {want.get(diff[0], 'not expected')})"
        )
    net = FusionHeads(mode, cfg, 1, img_dim, n_phys, seeds=[0])
    net.load_state_dict(state)
    return net.eval()


def load_head(path: str | Path) -> Head:
    """Rebuild a head from its unit checkpoint (``weights_only=True``), refusing anything inconsistent."""
    ck = load_checkpoint(path)
    net = _head_net(ck, path)
    try:
        scalers = {str(k): v.numpy() for k, v in ck["scalers"].items()}
        head = Head(
            str(ck.get("model", ck["mode"])),
            ck["mode"],
            int(ck["fold_id"]),
            int(ck["seed"]),
            str(ck["test_flight"]),
            net,
            scalers,
            _number(ck, "y_mean", path, -100, 100),
            _number(ck, "y_std", path, 1e-6, 100),
            [str(n) for n in ck["feature_names"]],
            str(ck.get("encoder", "")),
            int(_number(ck, "regions", path, 1, 64)) if "regions" in ck else 4,
            Path(path),
            ic.read_profile(ck.get("training_campaign"), path),
            ck.get("encoder_weights_sha256"),
            _choice(ck, "flight_norm", FLIGHT_NORMS, path),
            int(_number(ck, "flight_warmup", path, 0, 1e6)) if "flight_warmup" in ck else 10,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: not a loadable head checkpoint ({type(exc).__name__}: {exc})") from None
    sizes = {"phys": net.n_phys, "img": net.img_dim}
    for key, v in scalers.items():
        n = sizes.get(key.split("_")[0])
        if n is None or v.shape != (n,) or not np.isfinite(v).all():
            raise CheckpointError(f"{path}: scalers/{key}: expected {n} finite values; found shape {v.shape}")
    if head.mode in PHYSICAL_MODES and len(head.feature_names) != net.n_phys:
        raise CheckpointError(f"{path}: feature_names: expected {net.n_phys} names; found {len(head.feature_names)}")
    return head


def load_heads(run_dir: str | Path, model: str, protocol: str = "lofo") -> list[Head]:
    """Every head of a model and protocol in a run folder, each checkpoint verified against its unit file.

    Raises:
        CbhError: a unit file damaged or copied, a checkpoint outside the run folder, replaced
            or altered (sha256), or not the unit's; a model without saved heads.
    """
    run = RunDir(run_dir)
    units = UnitStore(run).read_all(model, protocol, strict=True)
    if not units:
        known = _known(run, model, protocol)
        raise CbhError(f"{run.root}: expected finished units of model '{model}' under {protocol}; found none{known}")
    saved = [u for u in units if u.checkpoint]
    if not saved:
        raise CbhError(
            f"{run.root}: --model {model}: expected a model with saved heads (a fusion mode or neural baseline); "
            f"found {len(units)} units without checkpoints (baselines are refitted, not saved)"
        )
    return [_verified_head(run, u) for u in saved]


def _known(run: RunDir, model: str, protocol: str) -> str:
    """What the run holds under ``protocol``, for the one-line error on ``model``: a close name, or
    that its folder holds no finished unit, and the model folders there."""
    folder = run.root / "units" / protocol
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not names:
        return ""
    if model in names:
        hint = "; its folder holds no finished unit"
    else:
        close = difflib.get_close_matches(model, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{hint} (model folders under units/{protocol}: {', '.join(names)})"


def _verified_head(run: RunDir, u: UnitResult) -> Head:
    source = run.unit_json(u.model, u.protocol, u.fold_id, u.seed)
    path = ic.inside_run(run.root, u.checkpoint, source, "checkpoint")
    ic.verify_sha(path, u.checkpoint_sha256, source)
    head = load_head(path)
    if (head.model, head.fold_id, head.seed, head.test_flight) != (u.model, u.fold_id, u.seed, u.test_flight):
        raise CheckpointError(
            f"{path}: expected the head of {u.model} fold {u.fold_id} seed {u.seed} ({u.test_flight}); found "
            f"{head.model} fold {head.fold_id} seed {head.seed} ({head.test_flight})"
        )
    if head.mode in IMAGE_MODES:
        enc = ic.inside_run(run.root, head.encoder, path, "encoder")
        if head.encoder_sha256 is not None:
            ic.verify_weights(enc, head.encoder_sha256, path)
    return head


def _features(head: Head, camp: Campaign, allow_shift: bool, said: set[str] | None = None) -> np.ndarray:
    """The head's feature columns of ``camp``, units converted where safe (each conversion said once
    per ``said``), flight-normalised for a flight-normalised head, statistics checked."""
    if head.model == "image_stats_mlp":
        ic.check_image_format(camp, head.profile, None, head.model)
        X, notes = imagestats.campaign_statistics(camp).astype(np.float64), []
    else:
        A, names = camp.feature_matrix()
        where = {n: i for i, n in enumerate(names)}
        missing = [n for n in head.feature_names if n not in where]
        if missing:
            raise CbhError(
                f"{camp.path}: features: expected {', '.join(missing)} (the model was trained on them); "
                f"found {', '.join(names) or 'none'}"
            )
        X, notes = ic.match_units(
            A[:, [where[n] for n in head.feature_names]], head.feature_names, head.profile, camp, head.model
        )
    for note in notes:
        if said is None or note not in said:
            log.warning(note)
            if said is not None:
                said.add(note)
    X = _norm(X, head, camp)  # a flight-normalised head: each flight from its own inputs, as in training
    ic.check_feature_stats(
        X,
        head.feature_names,
        head.scalers["phys_mean"],
        head.scalers["phys_scale"],
        camp,
        head.model,
        allow_shift,
        said,
    )
    return X


class _Encoders:
    """Embeddings of the campaign per encoder, computed once per call and kept in memory (no cache file is
    written, so a read-only run folder can be applied)."""

    def __init__(self, run: RunDir, camp: Campaign, allow_shift: bool) -> None:
        self.run, self.camp, self.allow_shift = run, camp, allow_shift
        self.done: dict[tuple[str, int], Embeddings] = {}

    def get(self, h: Head) -> Embeddings:
        key = (h.encoder, h.regions)
        if key not in self.done:
            path = self.run.root / h.encoder
            model, ck = load_encoder(path)
            ic.check_image_format(self.camp, h.profile, tuple(int(g) for g in ck["geometry"]), h.model)
            ic.check_pixel_stats(self.camp, model, h.model, self.allow_shift)
            self.done[key] = embed_campaign(self.camp, path, None, (h.regions, h.regions), progress=False)
        return self.done[key]


@torch.no_grad()
def predict(
    run_dir: str | Path,
    model: str,
    camp: Campaign,
    protocol: str = "lofo",
    allow_shift: bool = False,
    intervals: str | None = None,
    alpha: float = 0.1,
    labels: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions of every head of ``model`` on ``camp``, optionally with prediction intervals.

    Args:
        allow_shift: predict (with a warning) where the campaign's feature or pixel statistics are far
            from the training campaign's; shapes, dtypes and units are always refused.
        intervals: ``flight_t``, ``flight``, ``flight_max`` (label-free for ``camp``) or ``online``
            (:mod:`cbhlib.evaluation.intervals.newflight`): ``1 - alpha`` intervals from the
            out-of-flight residuals of the run's nested heads; the tables gain ``lower_km`` and
            ``upper_km`` (``online``: and ``labels_before``, ``samples_since_label``). None: no intervals.
        labels: ``online`` only: (n,) lidar labels of ``camp``'s samples (km), NaN where none has
            arrived; None: the campaign's own labels. Each sample's interval learns from the labels
            of its flight before it in time, never from its own or a later one.

    Returns:
        (per unit: model, fold, seed, test_flight, sample, pred_km; per sample: flight,
        time_utc, lat, lon, pred_km (ensemble mean over units), pred_sd_km, n_units).

    Raises:
        CbhError: one line, for anything the checks in this module's docstring refuse.
    """
    run = RunDir(run_dir)
    heads = load_heads(run, model, protocol)
    if intervals is not None and intervals not in INTERVAL_METHODS:
        raise CbhError(f"intervals: expected one of {', '.join(INTERVAL_METHODS)}; found {intervals!r}")
    if intervals is not None and not 0 < alpha < 0.5:
        raise CbhError(f"alpha: expected a miscoverage level between 0 and 0.5; found {alpha!r}")
    if labels is not None and intervals != ONLINE:
        raise CbhError(f"labels: expected with the {ONLINE} intervals (they learn from them); found {intervals!r}")
    if intervals == ONLINE:
        labels = _online_labels(camp, labels)
    cal = Intervals(calibration_residuals(run, model), alpha, intervals, labels) if intervals else None
    if any(h.profile is None for h in heads):
        log.warning(
            "%s: the heads of %s record no training-campaign profile (trained before they were recorded): "
            "feature units and image dtype cannot be compared; shapes and statistics are",
            run.root,
            model,
        )
    if any(h.profile is not None and h.profile.get("campaign_sha256") == camp.fingerprint() for h in heads):
        held_out = f" (held-out predictions: {run.predictions_csv})" if run.predictions_csv.exists() else ""
        log.warning(
            "%s: the campaign the heads of %s were trained on: every head saw part of it (under lofo, every flight "
            "but its held-out one), so these predictions and intervals are in-sample%s",
            camp.path,
            model,
            held_out,
        )
    encoders = _Encoders(run, camp, allow_shift)
    rows, said = [], set()
    for h in heads:
        inputs: dict[str, torch.Tensor] = {}
        if h.mode in PHYSICAL_MODES:
            X = _features(h, camp, allow_shift, said)
            med, mean, scale = h.scalers["phys_median"], h.scalers["phys_mean"], h.scalers["phys_scale"]
            X = np.where(np.isnan(X), med[None], X)
            inputs["phys"] = torch.from_numpy(((X - mean) / scale).astype(np.float32))[None]
        if h.mode in IMAGE_MODES:
            emb = encoders.get(h)
            pooled, regions = emb.pooled, emb.regions
            pooled, regions = (
                _norm(pooled, h, camp),
                _norm(regions.reshape(len(regions), -1), h, camp).reshape(regions.shape),
            )
            e = (pooled - h.scalers["img_mean"]) / h.scalers["img_std"]
            inputs["img"] = torch.from_numpy(e.astype(np.float32))[None]
            inputs["regions"] = torch.from_numpy(regions.astype(np.float32))[None]
        pred, _ = h.net(**inputs)
        pred_km = pred[0].numpy().astype(float) * h.y_std + h.y_mean
        ic.check_predictions(pred_km, h.path, f"the head of {h.what}")
        rows.append(
            pd.DataFrame(
                {
                    "model": h.model,
                    "fold": h.fold_id,
                    "seed": h.seed,
                    "test_flight": h.test_flight,
                    "sample": np.arange(camp.n_samples),
                    "pred_km": pred_km,
                }
            )
        )
        if cal is not None:  # the residuals of the head's own outer fold (all where it has none)
            lo, hi = cal.bounds(pred_km, camp.flight, (h.fold_id,))
            rows[-1] = rows[-1].assign(lower_km=lo, upper_km=hi)
    per_unit = pd.concat(rows, ignore_index=True)
    g = per_unit.groupby("sample")["pred_km"]
    ens = pd.DataFrame(
        {
            "sample": np.arange(camp.n_samples),
            "flight": [camp.flight_names[k] for k in camp.flight],
            "time_utc": pd.to_datetime(camp.time_utc, unit="s", utc=True),
            "lat": camp.lat if camp.lat is not None else np.nan,
            "lon": camp.lon if camp.lon is not None else np.nan,
            "pred_km": g.mean().to_numpy(),
            "pred_sd_km": g.std(ddof=0).to_numpy(),
            "n_units": len(heads),
        }
    )
    if cal is not None:
        lo, hi = cal.bounds(ens["pred_km"].to_numpy(float), camp.flight)
        ens = ens.assign(lower_km=lo, upper_km=hi, interval=interval_label(intervals, alpha))
        if intervals == ONLINE:
            ens = pd.concat([ens, cal.arrival(camp.flight)], axis=1)
            free = ens["labels_before"] == 0  # no label of its flight before it: the label-free interval
            ens.loc[free, "interval"] = f"{interval_label('flight_t', alpha)} (no label before it)"
            if unlabelled := sorted(set(ens["flight"]) - set(ens.loc[ens["labels_before"] > 0, "flight"])):
                log.warning("no label has arrived before any sample of %s: their online intervals are the label-free "
                            "flight_t ones", ", ".join(unlabelled))  # fmt: skip
    return per_unit, ens


def _online_labels(camp: Campaign, labels: np.ndarray | None) -> np.ndarray:
    """(n,) the labels the online intervals learn from: ``labels`` or the campaign's own."""
    if labels is None:
        if not camp.has_labels:
            raise CbhError(
                f"{camp.path}: online intervals: expected the new flights' lidar labels as they arrived (samples/"
                "cbh_km, or cbh predict --labels FILE); found an inputs-only campaign: use --intervals flight_t"
            )
        return camp.cbh_km.astype(float)
    labels = np.asarray(labels, float)
    if labels.shape != (camp.n_samples,):
        raise CbhError(f"labels: expected one value per sample of {camp.path} ({camp.n_samples}); found {labels.shape}")
    return labels
