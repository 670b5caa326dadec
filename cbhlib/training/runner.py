"""One model under every configured protocol: encoders, embeddings, units, reports.

``run_mode(cfg)`` is what ``notebooks/02_train_fusion`` calls. Models are the four
fusion modes plus two neural baselines trained the same way: ``random_init`` (image_only
head on an untrained encoder of the same architecture and scope) and
``image_stats_mlp`` (the physical_only head on calibration-free image statistics).
Every path is the run folder's (:class:`cbhlib.store.rundir.RunDir`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cbhlib import threads
from cbhlib.config import NEURAL_BASELINES, Config
from cbhlib.constants import NESTED_BASE, NESTED_PROTOCOL, PROTOCOL_LABELS
from cbhlib.data.campaign import Campaign
from cbhlib.data.folds import Fold, make_folds
from cbhlib.errors import CbhError
from cbhlib.evaluation import imagestats
from cbhlib.evaluation.baselines import DESCRIPTIONS as BASELINE_DESCRIPTIONS
from cbhlib.evaluation.baselines import baseline_data, run_baseline
from cbhlib.evaluation.flightnorm import LABELS, variant
from cbhlib.evaluation.reports import build_report, provenance, write_json
from cbhlib.models.fusion import IMAGE_MODES, MODES, PHYSICAL_MODES
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import Unit, UnitResult, UnitStore
from cbhlib.training import encoders
from cbhlib.training.embed import embed_campaign
from cbhlib.training.heads import TrainInputs, train_units
from cbhlib.training.inputcheck import campaign_profile
from cbhlib.training.inputs import flight_normalised

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "image_only": "Frozen MAE image embedding (mean of patch tokens) -> MLP head",
    "physical_only": "Physical features (ERA5 + shadow geometry) -> MLP encoder -> MLP head",
    "concat": "Image embedding concatenated with encoded physical features -> MLP head",
    "attention": "Image query attends over one token per physical variable and per image region -> MLP head",
    **BASELINE_DESCRIPTIONS,
}


def model_name(model: str, cfg: Config) -> str:
    """The name a model's results carry: ``concat``, ``concat_fn`` (flight-normalised),
    ``image_only_finetuned``; pretraining that saw more than the training flights' frames is
    named too (``image_only_scope-transductive``), so every table and figure marks it."""
    name = variant(model, cfg.train.flight_norm)
    if cfg.train.finetune and model in IMAGE_MODES:
        name += "_finetuned"
    if cfg.pretrain.scope != "fold" and head_mode(model) in IMAGE_MODES:
        name += f"_scope-{cfg.pretrain.scope}"
    return name


NESTED = NESTED_PROTOCOL  # the protocol name of the heads trained without one training flight


def nested_folds(camp: Campaign, folds: list[Fold]) -> list[Fold]:
    """Per LOFO fold, one fold per training flight g: trained and validated without g (and without
    the outer held-out flight), scored on g: out-of-flight residuals for interval calibration."""
    out = []
    for f in folds:
        for g in np.unique(camp.flight[f.fit_idx]):
            train, val = (idx[camp.flight[idx] != g] for idx in (f.train_idx, f.val_idx))
            test = np.flatnonzero(camp.flight == g)
            out.append(Fold(f.fold_id * NESTED_BASE + int(g), f.test_flight, train, val, test, NESTED))
    return out


def head_mode(model: str) -> str:
    """The head mode a model trains (the neural baselines reuse image_only / physical_only)."""
    return {"random_init": "image_only", "image_stats_mlp": "physical_only"}.get(model, model)


@dataclass
class ModelRun:
    """What a model run produced (for the notebook's tables and figures)."""

    model: str
    mode: str
    cfg: Config
    run: RunDir
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # protocol -> report
    units: dict[str, list[UnitResult]] = field(default_factory=dict)  # protocol -> unit results
    climatology: dict[str, list[UnitResult]] = field(default_factory=dict)
    phys_names: list[str] = field(default_factory=list)
    region_grid: tuple[int, int] | None = None
    embed_seconds: float = 0.0
    name: str = ""  # what its results are called (model_name): e.g. concat_fn

    @property
    def log_path(self) -> Path:
        return self.run.training_log(self.name or self.model)

    def predictions(self, camp: Campaign) -> pd.DataFrame:
        """Tidy held-out predictions of the model and of climatology, every protocol and seed."""
        import pandas as pd

        from cbhlib.evaluation.reports import predictions_frame

        units = [u for us in (*self.units.values(), *self.climatology.values()) for u in us]
        return predictions_frame(units, camp) if units else pd.DataFrame()

    def attention(self, protocol: str = "lofo") -> np.ndarray | None:
        """[folds, T] attention per held-out flight (first seed), or None outside the attention mode."""
        units = [u for u in self.units.get(protocol, []) if u.attention_mean is not None]
        if not units:
            return None
        first = min(u.seed for u in units)
        return np.array([u.attention_mean for u in sorted(units, key=lambda u: u.fold_id) if u.seed == first])


def _held_out(camp: Campaign, fold: Fold) -> int | None:
    return int(camp.flight[fold.test_idx[0]]) if fold.protocol == "lofo" else None


def _image_inputs(
    cfg: Config, camp: Campaign, run: RunDir, protocol: str, folds: list[Fold], model: str, out: ModelRun
) -> tuple[TrainInputs, dict[tuple[int, int], int]]:
    """Embeddings of every (scope, seed) encoder the units need; unit -> embedding set."""
    scopes = encoders.scopes_for(cfg, camp, protocol, untrained=model == "random_init")
    needed = [(sc, encoders.encoder_seed(cfg, s)) for sc in scopes for s in cfg.seeds]
    needed = list(dict.fromkeys(needed))
    paths = encoders.ensure(
        cfg, camp, run, needed, allow_train=cfg.pretrain.missing == "pretrain", progress=cfg.progress
    )
    embs = [
        embed_campaign(camp, paths[(sc.key, s)], run.cache, (cfg.train.regions,) * 2, cfg.device, cfg.progress)
        for sc, s in needed
    ]
    out.region_grid = embs[0].region_grid
    out.embed_seconds += sum(e.seconds for e in embs)
    index = {(sc.key, s): i for i, (sc, s) in enumerate(needed)}
    which = {}
    for f in folds:
        sc = encoders.scope_of_fold(scopes, _held_out(camp, f))
        for s in cfg.seeds:
            which[(f.fold_id, s)] = index[(sc.key, encoders.encoder_seed(cfg, s))]
    rel = [run.relative(paths[(sc.key, s)]) for sc, s in needed]
    inputs = TrainInputs(
        camp.cbh_km.astype(np.float64),
        pooled=[e.pooled for e in embs],
        regions=[e.regions for e in embs],
        encoders=rel,
        key=camp.fingerprint() + "|" + "|".join(rel),
        regions_per_side=cfg.train.regions,
    )
    return inputs, which


def run_mode(cfg: Config, model: str | None = None, camp: Campaign | None = None) -> ModelRun:
    """Train and score one model under every configured protocol.

    Args:
        model: a fusion mode or a neural baseline; default ``cfg.train.mode``.
    """
    model = model or cfg.train.mode
    if model not in MODES + NEURAL_BASELINES:
        raise CbhError(f"model '{model}': expected one of {', '.join(MODES + NEURAL_BASELINES)}")
    if cfg.threads:
        threads.fix(cfg.threads)
    camp = camp or Campaign(cfg.campaign)
    mode = head_mode(model)
    needs_images = mode in IMAGE_MODES or model == "image_stats_mlp"
    if needs_images and not camp.has_images:
        raise CbhError(
            f"{camp.path}: model '{model}' needs images but the campaign has no 'images' dataset; "
            "run physical_only or the baselines instead"
        )
    run = RunDir(cfg.run_dir)
    store = UnitStore(run, campaign_profile(camp))  # heads record their campaign for `predict`'s checks
    bdata = baseline_data(camp, cfg, run, with_stats=model == "image_stats_mlp")
    if mode in PHYSICAL_MODES and model != "image_stats_mlp" and bdata.phys.shape[1] == 0:
        raise CbhError(f"{camp.path}: model '{model}' needs physical features but the campaign has none")
    out = ModelRun(model, mode, cfg, run, phys_names=bdata.phys_names)
    how = cfg.train.flight_norm
    if how != "none" and cfg.train.finetune:
        raise CbhError(
            "train.flight_norm: expected none with train.finetune (a fine-tuned encoder changes the embeddings "
            f"each step, so their flight statistics cannot be fixed); found {how!r}"
        )
    name = out.name = model_name(model, cfg)
    for protocol in cfg.protocols:
        folds = make_folds(camp, protocol, cfg.val_fraction)
        if not folds:
            log.warning("protocol %s: no folds on this campaign (flights too short); skipped", protocol)
            continue
        if mode in IMAGE_MODES:
            inputs, which = _image_inputs(cfg, camp, run, protocol, folds, model, out)
        else:
            inputs, which = TrainInputs(bdata.y, key=bdata.key), {}
        if mode in PHYSICAL_MODES:
            inputs.phys, inputs.phys_names = (
                (bdata.stats, list(imagestats.NAMES)) if model == "image_stats_mlp" else (bdata.phys, bdata.phys_names)
            )
        inputs = flight_normalised(inputs, camp.flight, camp.time_utc, how, cfg.adapt.warmup, cfg.adapt.level)
        units = [Unit(name, protocol, f, s, which.get((f.fold_id, s), 0)) for f in folds for s in cfg.seeds]
        if cfg.train.finetune and model in IMAGE_MODES:
            from cbhlib.training.finetune import finetune_units

            results = finetune_units(camp, run, inputs, units, mode, cfg, store)
        else:
            results = train_units(
                inputs,
                units,
                mode,
                cfg.train,
                cfg.head,
                store,
                str(run.training_log(name)),
                cfg.progress,
                cfg.device,
            )
        if protocol == "lofo" and cfg.train.nested and camp.n_flights > 2 and not cfg.train.finetune:
            nested = [
                Unit(name, NESTED, nf, s, which.get((nf.fold_id // NESTED_BASE, s), 0))
                for nf in nested_folds(camp, folds)
                for s in cfg.seeds[:1]  # one seed calibrates them all (residual spread, not the seed's)
            ]
            train_units(inputs, nested, mode, cfg.train, cfg.head, store, str(run.training_log(name)),
                        cfg.progress, cfg.device)  # fmt: skip
        clim = run_baseline("climatology", bdata, folds, protocol, cfg.seeds, store)
        prov = provenance(cfg.to_nested(), camp.fingerprint(), cfg.seeds)
        desc = DESCRIPTIONS[model] + (" (encoder fine-tuned end to end)" if "_finetuned" in name else "")
        desc += f"; {LABELS[how]} inputs, within-flight anomaly plus the training level" if how != "none" else ""
        report = build_report(name, desc, protocol, PROTOCOL_LABELS[protocol], results, prov)
        report["climatology"] = build_report(
            "climatology",
            DESCRIPTIONS["climatology"],
            protocol,
            PROTOCOL_LABELS[protocol],
            clim,
            prov,
            deterministic=True,
        )["aggregate_metrics"]
        if mode == "attention":
            report["attention_tokens"] = attention_token_names(inputs.phys_names, out.region_grid)
        write_json(run.report(name, protocol), report)
        out.reports[protocol], out.units[protocol], out.climatology[protocol] = report, results, clim
    return out


def attention_token_names(names: list[str], grid: tuple[int, int] | None) -> list[str]:
    """Key names of the attention mode: physical variables, then image regions."""
    regions = [f"region r{i}c{j}" for i in range(grid[0]) for j in range(grid[1])] if grid else []
    return [n.split("/")[-1] for n in names] + regions
