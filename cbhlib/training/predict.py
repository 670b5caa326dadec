"""Apply a finished run to a campaign file: every saved head, with its own scalers and encoder.

Each unit's checkpoint holds its head's weights, architecture, fitted scalers, label
scale, feature names and the encoder it was trained on, so a head rebuilds from its file
(as nanoGPT's ``model_args``). ``predict`` returns one row per (unit, sample) and the
ensemble mean and sd over units per sample.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cbhlib.data.campaign import Campaign
from cbhlib.errors import CbhError, CheckpointError
from cbhlib.evaluation import imagestats
from cbhlib.models.fusion import IMAGE_MODES, PHYSICAL_MODES, FusionHeads, HeadConfig
from cbhlib.store.checkpoints import load_checkpoint
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import UnitStore
from cbhlib.training.embed import embed_campaign


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


def load_head(path: str | Path) -> Head:
    """Rebuild a head from its unit checkpoint (``weights_only=True``)."""
    ck = load_checkpoint(path)
    try:
        cfg = HeadConfig(**json.loads(ck["head_config"]))
        net = FusionHeads(ck["mode"], cfg, 1, int(ck["img_dim"]), int(ck["n_phys"]), seeds=[0])
        net.load_state_dict(ck["model_state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: not a loadable head checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    net.eval()
    return Head(
        ck.get("model", ck["mode"]),
        ck["mode"],
        int(ck["fold_id"]),
        int(ck["seed"]),
        ck["test_flight"],
        net,
        {k: v.numpy() for k, v in ck["scalers"].items()},
        float(ck["y_mean"]),
        float(ck["y_std"]),
        list(ck["feature_names"]),
        str(ck.get("encoder", "")),
        int(ck.get("regions", 4)),
    )


def load_heads(run_dir: str | Path, model: str, protocol: str = "lofo") -> list[Head]:
    """Every verified head of a model and protocol in a run folder."""
    run = RunDir(run_dir)
    units = UnitStore(run).read_all(model, protocol)
    if not units:
        raise CbhError(f"{run.root}: expected finished units of model '{model}' under {protocol}; found none")
    return [load_head(run.root / u.checkpoint) for u in units if u.checkpoint]


def _features(head: Head, camp: Campaign) -> np.ndarray:
    if head.model == "image_stats_mlp":
        return imagestats.campaign_statistics(camp)
    X, names = camp.feature_matrix()
    where = {n: i for i, n in enumerate(names)}
    missing = [n for n in head.feature_names if n not in where]
    if missing:
        raise CbhError(
            f"{camp.path}: features: expected {', '.join(missing)} (the model was trained on them); "
            f"found {', '.join(names) or 'none'}"
        )
    return X[:, [where[n] for n in head.feature_names]]


@torch.no_grad()
def predict(
    run_dir: str | Path, model: str, camp: Campaign, protocol: str = "lofo"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions of every head of ``model`` on ``camp``.

    Returns:
        (per unit: model, fold, seed, test_flight, sample, pred_km; per sample: flight,
        time_utc, lat, lon, pred_km (ensemble mean over units), pred_sd_km, n_units).
    """
    run = RunDir(run_dir)
    heads = load_heads(run, model, protocol)
    rows = []
    for h in heads:
        inputs: dict[str, torch.Tensor] = {}
        if h.mode in PHYSICAL_MODES:
            X = _features(h, camp)
            med, mean, scale = h.scalers["phys_median"], h.scalers["phys_mean"], h.scalers["phys_scale"]
            X = np.where(np.isnan(X), med[None], X)
            inputs["phys"] = torch.from_numpy(((X - mean) / scale).astype(np.float32))[None]
        if h.mode in IMAGE_MODES:
            if not camp.has_images:
                raise CbhError(f"{camp.path}: model '{model}' needs images; the campaign has none")
            emb = embed_campaign(camp, run.root / h.encoder, run.cache, (h.regions, h.regions), progress=False)
            e = (emb.pooled - h.scalers["img_mean"]) / h.scalers["img_std"]
            inputs["img"] = torch.from_numpy(e.astype(np.float32))[None]
            inputs["regions"] = torch.from_numpy(emb.regions.astype(np.float32))[None]
        pred, _ = h.net(**inputs)
        rows.append(
            pd.DataFrame(
                {
                    "model": h.model,
                    "fold": h.fold_id,
                    "seed": h.seed,
                    "test_flight": h.test_flight,
                    "sample": np.arange(camp.n_samples),
                    "pred_km": pred[0].numpy().astype(float) * h.y_std + h.y_mean,
                }
            )
        )
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
    return per_unit, ens
