"""The honest trainer: many (fold, seed) units of one fusion mode, trained together.

Each unit is an independent piece of work: its own training / validation / test
indices, its own scalers (fitted on its training samples only), its own random
streams, its own early stopping on its validation split (drawn from training flights),
and its own outputs (result JSON written last and atomically, checkpoint). A finished
unit is skipped on the next call, so an interrupted run resumes where it stopped.

For speed, pending units train in one batched module (see ``models.fusion``): per
epoch, each unit steps through its own shuffled mini-batches; units that finished
their epoch or stopped early are masked out of the optimizer.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cbhlib.checkpoints import save_checkpoint
from cbhlib.data import FeatureScaler, Fold
from cbhlib.errors import TrainingDivergedError
from cbhlib.metrics import regression_metrics
from cbhlib.models.fusion import IMAGE_MODES, PHYSICAL_MODES, BatchedAdamW, FusionConfig, FusionHeads
from cbhlib.reports import read_json, write_json


RESULT_VERSION = 2  # bump when the unit result schema changes, so stale units recompute


@dataclass
class TrainConfig:
    """Optimisation settings of the fusion heads (from the run's params YAML)."""

    mode: str = "concat"  # image_only, physical_only, concat or attention
    epochs: int = 50  # maximum epochs
    batch_size: int = 32  # samples per step
    lr: float = 1e-3  # AdamW learning rate (cosine annealed per epoch)
    weight_decay: float = 1e-4  # AdamW weight decay
    patience: int = 15  # epochs without validation improvement before stopping
    huber_delta_km: float = 0.3  # Huber loss delta, km
    fusion: FusionConfig = field(default_factory=FusionConfig)
    eval_chunk: int = 1024  # samples per evaluation forward pass

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Unit:
    """One (fold, seed) of one mode; ``emb`` selects the embedding set (per-fold encoder)."""

    fold: Fold
    seed: int
    emb: int = 0

    @property
    def name(self) -> str:
        return f"fold{self.fold.fold_id}_seed{self.seed}"


@dataclass
class TrainInputs:
    """Arrays over all N samples of the campaign.

    Attributes:
        y: (N,) labels, km.
        phys: (N, K) raw physical features (NaN allowed) or None.
        phys_names: K names.
        pooled: per embedding set, (N, D) image embeddings.
        regions: per embedding set, (N, R, D) region tokens.
        key: a string identifying the inputs (campaign hash, encoder checkpoints).
    """

    y: np.ndarray
    phys: np.ndarray | None = None
    phys_names: list[str] = field(default_factory=list)
    pooled: list[np.ndarray] = field(default_factory=list)
    regions: list[np.ndarray] = field(default_factory=list)
    key: str = ""


def unit_sha(cfg: TrainConfig, unit: Unit, inputs: TrainInputs) -> str:
    """Hash of everything that determines a unit's result."""
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    for arr in (unit.fold.train_idx, unit.fold.val_idx, unit.fold.test_idx):
        h.update(np.asarray(arr, np.int64).tobytes())
    h.update(f"|{RESULT_VERSION}|{unit.seed}|{unit.emb}|{inputs.key}|{inputs.phys_names}".encode())
    return h.hexdigest()[:16]


def huber(err: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Elementwise Huber loss; err [M, B], delta [M, 1]."""
    a = err.abs()
    return torch.where(a <= delta, 0.5 * err * err, delta * (a - 0.5 * delta))


class UnitStore:
    """Where units of one mode and protocol keep their results and checkpoints."""

    def __init__(self, run_dir: str | Path, mode: str, protocol: str) -> None:
        self.run_dir = Path(run_dir)
        self.mode, self.protocol = mode, protocol
        self.units_dir = self.run_dir / "units" / protocol / mode
        sub = "" if protocol == "lofo" else protocol
        self.ckpt_dir = self.run_dir / "checkpoints" / sub

    def result_path(self, unit: Unit) -> Path:
        return self.units_dir / f"{unit.name}.json"

    def ckpt_path(self, unit: Unit) -> Path:
        return self.ckpt_dir / f"model_{self.mode}_fold{unit.fold.fold_id}_seed{unit.seed}.pt"

    def load_done(self, unit: Unit, sha: str) -> dict[str, Any] | None:
        path = self.result_path(unit)
        if not path.exists():
            return None
        try:
            res = read_json(path)
        except (OSError, json.JSONDecodeError):
            return None  # a damaged result is recomputed
        return res if res.get("unit_sha") == sha and self.ckpt_path(unit).exists() else None


def train_units(inputs: TrainInputs, units: list[Unit], cfg: TrainConfig, run_dir: str | Path,
                protocol: str = "lofo", log_path: str | Path | None = None, progress: bool = True,
                flight_names: list[str] | None = None) -> list[dict[str, Any]]:
    """Train every unit not already finished; return all units' results (fold order).

    Raises:
        TrainingDivergedError: a loss or prediction became non-finite (names mode, fold, epoch).
    """
    store = UnitStore(run_dir, cfg.mode, protocol)
    shas = [unit_sha(cfg, u, inputs) for u in units]
    results: dict[int, dict[str, Any]] = {}
    pending: list[int] = []
    for i, (u, sha) in enumerate(zip(units, shas)):
        done = store.load_done(u, sha)
        if done is not None:
            results[i] = done
        else:
            pending.append(i)
    if pending:
        fitted = _fit([units[i] for i in pending], [shas[i] for i in pending], inputs, cfg, store,
                      log_path, progress)
        results.update(dict(zip(pending, fitted)))
    return [results[i] for i in range(len(units))]


def _prepare(units: list[Unit], inputs: TrainInputs, mode: str) -> dict[str, Any]:
    """Per-unit scaled tensors; every statistic is fitted on the unit's training samples."""
    M, N = len(units), len(inputs.y)
    y = inputs.y.astype(np.float64)
    y_mu = np.array([y[u.fold.train_idx].mean() for u in units])
    y_sd = np.array([max(y[u.fold.train_idx].std(), 1e-3) for u in units])
    out: dict[str, Any] = {
        "y": torch.tensor((y[None] - y_mu[:, None]) / y_sd[:, None], dtype=torch.float32),
        "y_mu": y_mu, "y_sd": y_sd, "scalers": [{} for _ in units],
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
        D = inputs.pooled[0].shape[1]
        img = np.empty((M, N, D), np.float32)
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


def _gather(t: dict[str, Any], idx: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Inputs for sample indices idx [M, B]."""
    ar = torch.arange(idx.shape[0])[:, None]
    return {
        "img": t["img"][ar, idx] if "img" in t else None,
        "phys": t["phys"][ar, idx] if "phys" in t else None,
        "regions": t["regions"][t["emb"][:, None], idx] if "regions" in t else None,
    }


def _predict(model: FusionHeads, t: dict[str, Any], idx: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eval-mode predictions at idx [M, E]: [M, E] and attention [M, E, T] or None."""
    preds, atts = [], []
    with torch.no_grad():
        for s in range(0, idx.shape[1], chunk):
            p, a = model(**_gather(t, idx[:, s : s + chunk]))
            preds.append(p)
            if a is not None:
                atts.append(a)
    return torch.cat(preds, 1), (torch.cat(atts, 1) if atts else None)


def _eval_sets(units: list[Unit]) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """Per unit, the samples scored each epoch: validation then test, padded.

    Returns:
        idx [M, E], validation mask [M, E], n_val and n_test per unit. A unit without
        validation samples is validated on its training samples (stated in its result).
    """
    vals = [np.asarray(u.fold.val_idx if len(u.fold.val_idx) else u.fold.train_idx, np.int64) for u in units]
    tests = [np.asarray(u.fold.test_idx, np.int64) for u in units]
    E = max(len(v) + len(te) for v, te in zip(vals, tests))
    idx = torch.zeros(len(units), E, dtype=torch.long)
    vmask = torch.zeros(len(units), E)
    for m, (v, te) in enumerate(zip(vals, tests)):
        idx[m, : len(v) + len(te)] = torch.from_numpy(np.concatenate([v, te]))
        vmask[m, : len(v)] = 1.0
    return idx, vmask, [len(v) for v in vals], [len(te) for te in tests]


def _fit(units: list[Unit], shas: list[str], inputs: TrainInputs, cfg: TrainConfig, store: UnitStore,
         log_path: str | Path | None, progress: bool) -> list[dict[str, Any]]:
    mode, M, B = cfg.mode, len(units), cfg.batch_size
    t = _prepare(units, inputs, mode)
    D = t["img"].shape[2] if "img" in t else 0
    K = t["phys"].shape[2] if "phys" in t else 0
    fusion = FusionConfig(**{**cfg.fusion.to_dict(), "mode": mode})
    model = FusionHeads(fusion, M, D, K, seeds=[u.seed * 100_003 + u.fold.fold_id for u in units])
    opt = BatchedAdamW(list(model.parameters()), M, cfg.lr, cfg.weight_decay)
    rngs = [np.random.default_rng([u.seed, u.fold.fold_id, 7]) for u in units]
    train_sets = [np.asarray(u.fold.train_idx, np.int64) for u in units]
    if min(len(s) for s in train_sets) == 0:
        raise ValueError("a fold has no training samples")
    n_steps = np.array([math.ceil(len(s) / B) for s in train_sets])
    eval_idx, val_mask, n_val, n_test = _eval_sets(units)
    y_eval = t["y"][torch.arange(M)[:, None], eval_idx]
    delta = torch.tensor(cfg.huber_delta_km / t["y_sd"], dtype=torch.float32)[:, None]

    best_val = np.full(M, np.inf)
    best_epoch = np.full(M, -1)
    best_pred = torch.zeros(M, eval_idx.shape[1])
    best_att: list[torch.Tensor | None] = [None] * M
    best_state: list[dict[str, torch.Tensor]] = [model.slice_state(m) for m in range(M)]
    stopped = np.zeros(M, bool)
    epochs_run = np.zeros(M, int)
    results: list[dict[str, Any] | None] = [None] * M
    log = open(log_path, "a") if log_path else None
    bar = tqdm(range(cfg.epochs), desc=f"{mode} x{M} units", disable=not progress, leave=True)
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            lr_e = cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
            live = ~stopped
            S = int(n_steps[live].max())
            idx_e = np.zeros((M, S * B), np.int64)  # this epoch's batches, built once
            w_e = np.zeros((M, S * B), np.float32)
            for m in np.flatnonzero(live):
                perm = rngs[m].permutation(train_sets[m])
                idx_e[m, : len(perm)], w_e[m, : len(perm)] = perm, 1.0
            idx_e = torch.from_numpy(idx_e.reshape(M, S, B).transpose(1, 0, 2).copy())  # [S, M, B]
            w_e = torch.from_numpy(w_e.reshape(M, S, B).transpose(1, 0, 2).copy())
            act_e = torch.from_numpy(live[None, :] & (np.arange(S)[:, None] < n_steps[None, :]))  # [S, M]
            losses = torch.zeros(S, M)
            ar = torch.arange(M)[:, None]
            model.train()
            model.begin_epoch([int(n_steps[m]) if live[m] else 0 for m in range(M)], B)
            for s in range(S):
                idx_t, w_t, act_t = idx_e[s], w_e[s], act_e[s]
                model.set_step(s)
                pred, _ = model(**_gather(t, idx_t))
                per = (huber(pred - t["y"][ar, idx_t], delta) * w_t).sum(1) / w_t.sum(1).clamp_min(1.0)
                opt.zero_grad()
                per.sum().backward()
                opt.step(act_t, lr_e)
                losses[s] = per.detach()
            bad = act_e & ~torch.isfinite(losses)
            if bad.any():
                m = int(torch.nonzero(bad)[0, 1])
                raise TrainingDivergedError(
                    f"mode {mode}, fold {units[m].fold.fold_id} ({units[m].fold.test_flight}), "
                    f"seed {units[m].seed}, epoch {epoch + 1}: the training loss became non-finite; "
                    f"lower lr (now {cfg.lr:g}) or check the inputs")
            loss_sum = (losses * act_e).sum(0).numpy()
            loss_n = act_e.sum(0).numpy()
            model.eval()
            pred_all, att_all = _predict(model, t, eval_idx, cfg.eval_chunk)
            finite = torch.isfinite(pred_all).all(1).numpy()
            if not finite[live].all():
                m = int(np.flatnonzero(live & ~finite)[0])
                raise TrainingDivergedError(
                    f"mode {mode}, fold {units[m].fold.fold_id} ({units[m].fold.test_flight}), "
                    f"seed {units[m].seed}, epoch {epoch + 1}: predictions became non-finite")
            vl = (huber(pred_all - y_eval, delta) * val_mask).sum(1) / val_mask.sum(1)
            seconds = time.perf_counter() - t0
            for m in np.flatnonzero(live):
                epochs_run[m] = epoch + 1
                v = float(vl[m])
                if v < best_val[m] - 1e-9:
                    best_val[m], best_epoch[m] = v, epoch
                    best_pred[m] = pred_all[m]
                    best_att[m] = att_all[m].clone() if att_all is not None else None
                    best_state[m] = model.slice_state(m)
                elif epoch - best_epoch[m] >= cfg.patience:
                    stopped[m] = True
                if log:
                    log.write(json.dumps({
                        "mode": mode, "protocol": store.protocol, "fold": units[m].fold.fold_id,
                        "test_flight": units[m].fold.test_flight, "seed": units[m].seed, "epoch": epoch + 1,
                        "max_epochs": cfg.epochs, "train_loss": loss_sum[m] / max(loss_n[m], 1),
                        "val_loss": v, "best_val_loss": best_val[m], "lr": lr_e,
                        "seconds": seconds / max(int(live.sum()), 1), "n_units": M,
                        "stopped": bool(stopped[m])}) + "\n")
            if log:
                log.flush()
            for m in np.flatnonzero(stopped):
                if results[m] is None:
                    results[m] = _finish(units[m], shas[m], m, t, best_pred, best_att, best_state,
                                         best_epoch, best_val, epochs_run, inputs, fusion, cfg, store,
                                         n_val[m], n_test[m])
            bar.set_postfix(active=int((~stopped).sum()), best_val=f"{np.nanmean(best_val):.4f}")
            if stopped.all():
                break
    finally:
        if log:
            log.close()
    for m in range(M):
        if results[m] is None:
            results[m] = _finish(units[m], shas[m], m, t, best_pred, best_att, best_state,
                                 best_epoch, best_val, epochs_run, inputs, fusion, cfg, store, n_val[m], n_test[m])
    return results  # type: ignore[return-value]


def _finish(u: Unit, sha: str, m: int, t: dict[str, Any], best_pred: torch.Tensor,
            best_att: list[torch.Tensor | None], best_state: list[dict[str, torch.Tensor]],
            best_epoch: np.ndarray, best_val: np.ndarray, epochs_run: np.ndarray,
            inputs: TrainInputs, fusion: FusionConfig, cfg: TrainConfig, store: UnitStore,
            n_val: int, n_test: int) -> dict[str, Any]:
    """Score unit m on its test samples and write its checkpoint, then its result (last)."""
    pred_eval = best_pred[m].numpy().astype(np.float64) * t["y_sd"][m] + t["y_mu"][m]
    val_pred, test_pred = pred_eval[:n_val], pred_eval[n_val : n_val + n_test]
    test = np.asarray(u.fold.test_idx, np.int64)
    metrics = regression_metrics(inputs.y[test], test_pred)
    ckpt = {
        "model_state_dict": best_state[m],
        "fold_id": u.fold.fold_id,
        "test_flight": u.fold.test_flight,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "epoch": int(best_epoch[m]) + 1,
        "mode": cfg.mode,
        "seed": u.seed,
        "fusion_config": json.dumps(fusion.to_dict()),
        "scalers": {k: torch.from_numpy(np.asarray(v)) for k, v in t["scalers"][m].items()},
        "y_mean": float(t["y_mu"][m]),
        "y_std": float(t["y_sd"][m]),
        "feature_names": list(inputs.phys_names),
    }
    save_checkpoint(ckpt, store.ckpt_path(u))
    result: dict[str, Any] = {
        "mode": cfg.mode, "protocol": store.protocol, "fold_id": u.fold.fold_id,
        "test_flight": u.fold.test_flight, "seed": u.seed,
        "n_train": int(len(u.fold.train_idx)), "n_val": int(len(u.fold.val_idx)), "n_test": int(len(test)),
        **{k: v for k, v in metrics.items() if k != "n"},
        "epoch_trained": int(best_epoch[m]) + 1, "epochs_run": int(epochs_run[m]),
        "best_val_loss": float(best_val[m]),
        "test_idx": test.tolist(), "true": inputs.y[test].astype(float).tolist(), "pred": test_pred.tolist(),
        "val_idx": np.asarray(u.fold.val_idx, int).tolist(),
        "val_pred": val_pred.tolist() if len(u.fold.val_idx) else [],
        "unit_sha": sha,
    }
    if best_att[m] is not None:
        att = best_att[m][n_val : n_val + n_test]
        result["attention_mean"] = att.mean(0).tolist()
        result["attention_test"] = att.tolist()
    write_json(store.result_path(u), result)
    return result
