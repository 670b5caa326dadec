"""One fusion-mode run: encoders, embeddings, every protocol's units, reports.

``run_mode(params)`` is what ``notebooks/02_train_fusion.ipynb`` calls. Outputs in
``run_dir``: ``report_<mode>.json`` and ``predictions_<mode>.csv`` (LOFO),
``report_<mode>__<protocol>.json`` for other protocols, ``training_<mode>.log`` (JSON
lines), ``checkpoints/``, ``encoders/``, ``units/`` and ``report_all.json``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cbhlib.baselines import run_baseline
from cbhlib.campaign import Campaign
from cbhlib.data import Fold, make_folds
from cbhlib.embed import Embeddings, embed_campaign, model_grid
from cbhlib.errors import CbhError, ParamsError
from cbhlib.metrics import aggregate
from cbhlib.models.fusion import IMAGE_MODES, PHYSICAL_MODES
from cbhlib.params import RunParams
from cbhlib.pretrain import load_encoder, pretrain
from cbhlib.reports import build_report, predictions_frame, provenance, read_json, write_json, write_predictions
from cbhlib.train import TrainInputs, Unit, train_units

DESCRIPTIONS = {
    "image_only": "Frozen MAE image embedding (mean of patch tokens) -> MLP head",
    "physical_only": "Physical features (ERA5 + shadow geometry) -> MLP encoder -> MLP head",
    "concat": "Image embedding concatenated with encoded physical features -> MLP head",
    "attention": "Image query attends over one token per physical variable and per image region -> MLP head",
    "climatology": "Mean CBH of the training flights",
    "lcl": "Espy LCL from ERA5 t2m/d2m plus an offset fitted on the training flights",
    "gbdt": "HistGradientBoostingRegressor on the physical features",
}


def report_name(model: str, protocol: str) -> str:
    return f"report_{model}.json" if protocol == "lofo" else f"report_{model}__{protocol}.json"


def predictions_name(model: str, protocol: str) -> str:
    return f"predictions_{model}.csv" if protocol == "lofo" else f"predictions_{model}__{protocol}.csv"


@dataclass
class ModeRun:
    """What a mode run produced (for the notebook's tables and figures)."""

    params: RunParams
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # protocol -> report
    units: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # protocol -> unit results
    climatology: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # protocol -> units
    phys_names: list[str] = field(default_factory=list)
    region_grid: tuple[int, int] | None = None
    embed_seconds: float = 0.0
    log_path: Path | None = None


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def encoder_dir(params: RunParams) -> Path:
    """Encoders of one architecture and pretraining recipe live together."""
    cfg = params.pretrain_config()
    key = _sha({"encoder": cfg.encoder.to_dict(), "epochs": cfg.epochs, "lr": cfg.lr, "bs": cfg.batch_size,
                "mask": cfg.mask_ratio, "seed": cfg.seed, "norm": cfg.pixel_norm})
    return Path(params.run_dir) / "encoders" / f"{params.encoder}-{key}"


def pretrain_images(camp: Campaign, key: str) -> np.ndarray:
    """Images an encoder may see: all flights but the held-out one (``fold<k>``) or all."""
    if key == "all":
        return np.arange(camp.n_samples)
    k = int(key.removeprefix("fold"))
    return np.flatnonzero(camp.flight != k)


def ensure_encoders(camp: Campaign, params: RunParams, keys: list[str]) -> dict[str, Path]:
    """Pretrain (or reuse) one encoder per key: ``fold<k>`` (flight k unseen) or ``all``."""
    out = {}
    folder = encoder_dir(params)
    for key in keys:
        path = folder / f"{key}.pt"
        if not path.exists():
            pretrain(camp, pretrain_images(camp, key), params.pretrain_config(), path,
                     meta={"key": key, "campaign": str(params.campaign)}, progress=params.progress,
                     log_path=Path(params.run_dir) / "pretrain.log")
        out[key] = path
    return out


def encoder_keys(camp: Campaign, params: RunParams, protocol: str) -> list[str]:
    if protocol == "lofo" and params.pretrain_scope == "fold":
        return [f"fold{k}" for k in range(camp.n_flights)]
    return ["all"]


def encoder_paths_for(camp: Campaign, params: RunParams, protocol: str) -> list[Path]:
    """Encoder checkpoints of a protocol, in embedding-set order (pretrained when missing)."""
    keys = encoder_keys(camp, params, protocol)
    paths = ensure_encoders(camp, params, keys)
    return [paths[k] for k in keys]


def embeddings_for(camp: Campaign, params: RunParams, protocol: str) -> list[Embeddings]:
    cache = Path(params.run_dir) / "cache"
    return [embed_campaign(camp, p, cache, regions=(params.regions, params.regions), device=params.device,
                           progress=params.progress)
            for p in encoder_paths_for(camp, params, protocol)]


def _check_fit(folds: list[Fold], params: RunParams, protocol: str) -> None:
    largest = max(len(f.train_idx) for f in folds)
    if params.batch_size > largest:
        raise ParamsError("parameters", "batch_size", f"at most the largest training set ({largest} samples "
                          f"under {protocol})", str(params.batch_size))


def run_mode(params: RunParams) -> ModeRun:
    """Train and score one fusion mode under every requested protocol."""
    if params.threads:
        torch.set_num_threads(params.threads)
    camp = Campaign(params.campaign)
    mode = params.mode
    if mode in IMAGE_MODES and not camp.has_images:
        raise CbhError(f"{camp.path}: mode '{mode}' needs images but the campaign has no 'images' dataset; "
                       "run physical_only or the baselines instead")
    X, names = camp.feature_matrix(params.feature_groups or None)
    if mode in PHYSICAL_MODES and X.shape[1] == 0:
        raise CbhError(f"{camp.path}: mode '{mode}' needs physical features but the campaign has none")
    run_dir = Path(params.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / f"params_{mode}.json", params.to_dict())
    log_path = run_dir / f"training_{mode}.log"
    out = ModeRun(params, phys_names=names, log_path=log_path)
    cfg = params.train_config()
    y = camp.cbh_km.astype(np.float64)
    for protocol in params.protocols:
        folds = make_folds(camp, protocol, params.val_fraction)
        _check_fit(folds, params, protocol)
        pooled, regions, key, per_fold = [], [], camp.fingerprint(), False
        if mode in IMAGE_MODES and not params.finetune:
            embs = embeddings_for(camp, params, protocol)
            pooled, regions = [e.pooled for e in embs], [e.regions for e in embs]
            out.region_grid = embs[0].region_grid
            out.embed_seconds += sum(e.seconds for e in embs)
            key += "|" + str(encoder_dir(params))
            per_fold = len(embs) > 1
        elif mode in IMAGE_MODES:  # fine-tuning: the encoders are trained further per unit
            key += "|" + str(encoder_dir(params))
            per_fold = len(encoder_keys(camp, params, protocol)) > 1
            encoder, _ = load_encoder(encoder_paths_for(camp, params, protocol)[0])
            out.region_grid = model_grid(encoder, (params.regions, params.regions))
        inputs = TrainInputs(y, X if mode in PHYSICAL_MODES else None, names, pooled, regions, key)
        units = [Unit(f, s, emb=(int(camp.flight[f.test_idx[0]]) if per_fold else 0))
                 for f in folds for s in params.seeds]
        if params.finetune and mode in IMAGE_MODES:
            from cbhlib.finetune import finetune_units

            results = finetune_units(camp, encoder_paths_for(camp, params, protocol), inputs, units, cfg, run_dir,
                                     protocol, params.finetune_lr, params.regions, log_path, params.progress)
        else:
            results = train_units(inputs, units, cfg, run_dir, protocol, log_path, params.progress)
        clim = run_baseline("climatology", camp, folds, protocol, run_dir,
                            params.feature_groups or None)
        prov = provenance(params.to_dict(), camp.fingerprint(), params.seeds)
        variant = f"{mode}_finetuned" if params.finetune and mode in IMAGE_MODES else mode
        desc = DESCRIPTIONS[mode] + (" (encoder fine-tuned end to end)" if variant != mode else "")
        report = build_report(variant, desc, protocol_label(protocol), results, prov)
        report["climatology_fold_results"] = [{k: c[k] for k in ("fold_id", "test_flight", "r2", "mae_km", "rmse_km")}
                                              for c in clim]
        report["climatology_aggregate"] = aggregate(clim, np.concatenate([c["true"] for c in clim]),
                                                    np.concatenate([c["pred"] for c in clim]))
        if mode == "attention":
            report["attention_tokens"] = attention_token_names(names, out.region_grid)
        write_json(run_dir / report_name(variant, protocol), report)
        write_predictions(run_dir / predictions_name(variant, protocol),
                          predictions_frame(results, camp.flight_names, camp.flight))
        out.reports[protocol], out.units[protocol], out.climatology[protocol] = report, results, clim
    write_combined(run_dir)
    return out


def protocol_label(protocol: str) -> str:
    return {
        "lofo": "leave-one-flight-out (validation: time blocks of training flights)",
        "random": "pooled random 5-fold (LEAKY: neighbours along a track fall on both sides)",
        "within_flight": "time-blocked 5-fold within each flight",
    }[protocol]


def attention_token_names(names: list[str], grid: tuple[int, int] | None) -> list[str]:
    """Key names of the attention mode: physical variables, then image regions."""
    regions = [f"region r{i}c{j}" for i in range(grid[0]) for j in range(grid[1])] if grid else []
    return [n.split("/")[-1] for n in names] + regions


def write_combined(run_dir: str | Path) -> dict[str, Any]:
    """``report_all.json``: every LOFO report's aggregate and folds, keyed by model."""
    run_dir = Path(run_dir)
    combined: dict[str, Any] = {}
    for path in sorted(run_dir.glob("report_*.json")):
        if path.name == "report_all.json":
            continue
        rep = read_json(path)
        proto = "lofo" if "__" not in path.stem else path.stem.split("__", 1)[1]
        combined.setdefault(proto, {})[rep["model_variant"]] = {
            "aggregate_metrics": rep["aggregate_metrics"], "fold_results": rep["fold_results"],
            "description": rep.get("description"), "timestamp": rep.get("timestamp")}
    write_json(run_dir / "report_all.json", combined)
    return combined
