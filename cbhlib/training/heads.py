"""The honest trainer: many units of one head mode, trained together.

Each unit (fold, seed) has its own training / validation / test indices, its own scalers
(fitted on its training samples only), its own random streams, its own early stopping on
its validation split (time blocks of training flights) and its own outputs (checkpoint,
then result JSON, written through :class:`cbhlib.store.units.UnitStore`). A finished unit is
skipped on the next call, so an interrupted run resumes where it stopped.

For speed, pending units train in one batched module (``models.fusion``): per epoch
each unit steps through its own shuffled mini-batches; units that finished their epoch
or stopped early are masked out of the optimizer.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cbhlib import threads
from cbhlib.evaluation.reports import write_unit
from cbhlib.models.fusion import BatchedAdamW, FusionHeads, HeadConfig
from cbhlib.store.units import Unit, UnitResult, UnitStore
from cbhlib.training.inputs import TrainInputs, _prepare, _to, effective_batch, eval_sets, head_sha, huber
from cbhlib.training.loops import JsonlLog, check_finite, cosine_lr, resolve_device

log = logging.getLogger(__name__)


def train_units(
    inputs: TrainInputs,
    units: list[Unit],
    mode: str,
    train: Any,
    head: HeadConfig,
    store: UnitStore,
    log_path: str | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> list[UnitResult]:
    """Train every unit not already finished; return all units' results (in order).

    Args:
        mode: head mode (``image_only`` ... ``attention``); ``Unit.model`` names the variant.
        train: a :class:`cbhlib.config.TrainConfig`.
        device: ``cpu``, ``cuda[:N]`` or ``auto``; every tensor is moved there once, before
            the first epoch (results are written from CPU copies).

    Raises:
        TrainingDivergedError: a loss or prediction became non-finite (names mode, fold, epoch).
    """
    shas = [head_sha(mode, train, head, u, inputs) for u in units]
    results: dict[int, UnitResult] = {}
    pending: list[int] = []
    for i, (u, sha) in enumerate(zip(units, shas, strict=True)):
        done = store.load(u, sha)
        if done is not None:
            results[i] = done
        else:
            pending.append(i)
    if pending:
        fitted = _fit(
            [units[i] for i in pending],
            [shas[i] for i in pending],
            inputs,
            mode,
            train,
            head,
            store,
            log_path,
            progress,
            resolve_device(device),
        )
        results.update(dict(zip(pending, fitted, strict=True)))
    return [results[i] for i in range(len(units))]


GATHER_BYTES = 64 << 20  # inputs of an epoch's steps are gathered in chunks of at most this size


def _gather(t: dict[str, Any], idx: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Inputs for sample indices idx [..., M, B] (a leading axis gathers several steps at once)."""
    ar = torch.arange(idx.shape[-2], device=idx.device)[:, None]
    return {
        "img": t["img"][ar, idx] if "img" in t else None,
        "phys": t["phys"][ar, idx] if "phys" in t else None,
        "regions": t["regions"][t["emb"][:, None], idx] if "regions" in t else None,
    }


Batch = dict[str, torch.Tensor | None]  # model inputs by name (None where the mode takes none)


def _chunk_steps(t: dict[str, Any], M: int, B: int) -> int:
    """Steps per gathered chunk: as many as fit in ``GATHER_BYTES`` (at least one)."""
    width = 1 + sum(t[k][0, 0].numel() for k in ("img", "phys", "regions") if k in t)  # floats per sample
    return max(1, GATHER_BYTES // (4 * M * B * width))


def _step_inputs(t: dict[str, Any], idx_s: torch.Tensor) -> Iterator[tuple[Batch, torch.Tensor]]:
    """Per training step s: the inputs and targets [M, B] of batch idx_s[s] (idx_s [S, M, B]).

    Gathered a chunk of steps at a time (one indexing call per input per chunk, not per
    step; the chunks hold at most ``GATHER_BYTES``), so each step gets contiguous views.
    """
    S, M, B = idx_s.shape
    chunk = _chunk_steps(t, M, B)
    ar = torch.arange(M, device=idx_s.device)[:, None]
    for c in range(0, S, chunk):
        idx_c = idx_s[c : c + chunk]
        x, y = _gather(t, idx_c), t["y"][ar, idx_c]
        for j in range(len(idx_c)):
            yield {k: (v[j] if v is not None else None) for k, v in x.items()}, y[j]


def _predict(
    model: FusionHeads, t: dict[str, Any], idx: torch.Tensor, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eval-mode predictions at idx [M, E]: [M, E] and attention [M, E, T] or None."""
    preds, atts = [], []
    with torch.no_grad():
        for s in range(0, idx.shape[1], chunk):
            p, a = model(**_gather(t, idx[:, s : s + chunk]))
            preds.append(p)
            if a is not None:
                atts.append(a)
    return torch.cat(preds, 1), (torch.cat(atts, 1) if atts else None)


def _rows(t: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """The per-unit tensors of units ``rows`` (shared region tokens are kept whole)."""
    r = torch.from_numpy(np.asarray(rows))
    return {
        k: (v[r.to(v.device)] if k in ("y", "img", "phys", "emb") else v)
        for k, v in t.items()
        if k not in ("y_mu", "y_lv", "y_sd", "scalers")
    }


class _Live:
    """The units still training: their batched module, optimizer and tensors.

    Row r of the module is unit ``ids[r]``. ``compact`` drops stopped units once half
    have stopped, so the tail of a run no longer pays for finished units.
    """

    def __init__(self, model: FusionHeads, opt: BatchedAdamW, t: dict[str, Any], ids: np.ndarray) -> None:
        self.model, self.opt, self.t, self.ids = model, opt, t, ids

    def compact(self, keep: np.ndarray) -> None:
        rows = np.flatnonzero(keep).tolist()
        self.model = self.model.subset(rows)
        self.opt = self.opt.subset(rows, list(self.model.parameters()))
        self.t = _rows(self.t, np.asarray(rows))
        self.ids = self.ids[rows]


def _fit(
    units: list[Unit],
    shas: list[str],
    inputs: TrainInputs,
    mode: str,
    train: Any,
    head: HeadConfig,
    store: UnitStore,
    log_path: str | None,
    progress: bool,
    dev: torch.device,
) -> list[UnitResult]:
    M = len(units)
    B = effective_batch(train.batch_size, units)
    t = _to(_prepare(units, inputs, mode), dev)  # the data go to the device once
    D = t["img"].shape[2] if "img" in t else 0
    K = t["phys"].shape[2] if "phys" in t else 0
    model = FusionHeads(mode, head, M, D, K, seeds=[u.seed * 100_003 + u.fold.fold_id for u in units]).to(dev)
    live = _Live(
        model,
        BatchedAdamW(list(model.parameters()), M, train.lr, train.weight_decay),
        _rows(t, np.arange(M)),
        np.arange(M),
    )
    rngs = [np.random.default_rng([u.seed, u.fold.fold_id, 7]) for u in units]
    train_sets = [np.asarray(u.fold.train_idx, np.int64) for u in units]
    n_steps = np.array([math.ceil(len(s) / B) for s in train_sets])
    val_idx, val_mask, _, _ = (v.to(dev) if isinstance(v, torch.Tensor) else v for v in eval_sets(units, test=False))
    delta = torch.tensor(train.huber_delta_km / t["y_sd"], dtype=torch.float32, device=dev)[:, None]
    best_val, best_epoch = np.full(M, np.inf), np.full(M, -1)
    best_state = [model.slice_state(m) for m in range(M)]
    stopped, epochs_run = np.zeros(M, bool), np.zeros(M, int)
    results: list[UnitResult | None] = [None] * M
    name = units[0].model

    def finish(m: int) -> None:
        if results[m] is None:
            results[m] = _finish(
                units[m],
                shas[m],
                m,
                mode,
                t,
                best_state[m],
                best_epoch,
                best_val,
                epochs_run,
                inputs,
                head,
                train,
                store,
                (D, K),
            )

    with JsonlLog(log_path, model=name, mode=mode, protocol=units[0].protocol) as jlog:
        bar = tqdm(range(train.epochs), desc=f"{name} x{M} units", disable=not progress, leave=False)
        for epoch in bar:
            threads.tick()  # fewer torch threads while other processes hold cores
            t0 = time.perf_counter()
            lr_e = cosine_lr(epoch, train.epochs, train.lr)
            ids, L = live.ids, len(live.ids)
            S = int(n_steps[ids].max())
            idx_e = np.zeros((L, S * B), np.int64)  # this epoch's batches, built once
            w_e = np.zeros((L, S * B), np.float32)
            for r, m in enumerate(ids):
                perm = rngs[m].permutation(train_sets[m])
                idx_e[r, : len(perm)], w_e[r, : len(perm)] = perm, 1.0
            idx_s = torch.from_numpy(idx_e.reshape(L, S, B).transpose(1, 0, 2).copy()).to(dev)  # [S, L, B]
            w_s = torch.from_numpy(w_e.reshape(L, S, B).transpose(1, 0, 2).copy()).to(dev)
            act_s = torch.from_numpy(np.arange(S)[:, None] < n_steps[ids][None, :]).to(dev)  # [S, L]
            losses = torch.zeros(S, L, device=dev)
            ids_t = torch.from_numpy(ids).to(dev)
            ar = torch.arange(L, device=dev)[:, None]
            lt, lmodel = live.t, live.model
            delta_e, n_e = delta[ids_t], w_s.sum(2).clamp_min(1.0)  # [L, 1]; samples per step [S, L]
            lmodel.train()
            lmodel.begin_epoch(n_steps[ids].tolist(), B)
            for s, (x_t, y_t) in enumerate(_step_inputs(lt, idx_s)):
                w_t = w_s[s]
                lmodel.set_step(s)
                pred, _ = lmodel(**x_t)
                per = (huber(pred - y_t, delta_e) * w_t).sum(1) / n_e[s]
                live.opt.zero_grad()
                per.sum().backward()
                live.opt.step(act_s[s], lr_e)
                losses[s] = per.detach()
            lmodel.eval()
            pred_v, _ = _predict(lmodel, lt, val_idx[ids_t])
            vy = lt["y"][ar, val_idx[ids_t]]
            vl = (huber(pred_v - vy, delta[ids_t]) * val_mask[ids_t]).sum(1) / val_mask[ids_t].sum(1)
            losses, act_c, pred_v, vl = losses.cpu(), act_s.cpu(), pred_v.cpu(), vl.cpu()  # one sync per epoch
            seconds = (time.perf_counter() - t0) / L
            for r, m in enumerate(ids):
                what = (
                    f"mode {mode} ({name}), fold {units[m].fold.fold_id} ({units[m].fold.test_flight}), "
                    f"seed {units[m].seed}, epoch {epoch + 1}"
                )
                check_finite(
                    losses[act_c[:, r], r],
                    f"{what}: the training loss",
                    f"lower train.lr (now {train.lr:g}) or check the inputs",
                )
                check_finite(pred_v[r], f"{what}: predictions")
                epochs_run[m] = epoch + 1
                v = float(vl[r])
                if v < best_val[m] - 1e-9:
                    best_val[m], best_epoch[m], best_state[m] = v, epoch, lmodel.slice_state(r)
                elif epoch - best_epoch[m] >= train.patience:
                    stopped[m] = True
                jlog.write(
                    fold=units[m].fold.fold_id,
                    test_flight=units[m].fold.test_flight,
                    seed=units[m].seed,
                    epoch=epoch + 1,
                    max_epochs=train.epochs,
                    train_loss=float((losses[:, r] * act_c[:, r]).sum() / max(int(act_c[:, r].sum()), 1)),
                    val_loss=v,
                    best_val_loss=best_val[m],
                    lr=lr_e,
                    seconds=seconds,
                    n_units=M,
                    stopped=bool(stopped[m]),
                )
                if stopped[m]:
                    finish(m)
            bar.set_postfix(active=int((~stopped).sum()), best_val=f"{np.nanmean(best_val):.4f}")
            if stopped.all():
                break
            alive = ~stopped[live.ids]
            if alive.sum() <= len(alive) // 2:
                live.compact(alive)
    for m in range(M):
        finish(m)
    return results  # type: ignore[return-value]


def _finish(
    u: Unit,
    sha: str,
    m: int,
    mode: str,
    t: dict[str, Any],
    state: dict[str, torch.Tensor],
    best_epoch: np.ndarray,
    best_val: np.ndarray,
    epochs_run: np.ndarray,
    inputs: TrainInputs,
    head: HeadConfig,
    train: Any,
    store: UnitStore,
    dims: tuple[int, int],
) -> UnitResult:
    """Score unit m's best state on its validation and test samples; write checkpoint, then result."""
    dev = state[next(iter(state))].device
    net = FusionHeads(mode, head, 1, dims[0], dims[1], seeds=[0]).to(dev)
    net.load_state_dict(state)
    net.eval()
    idx, _, n_val, n_test = eval_sets([u])
    pred, att = _predict(net, _rows(t, np.array([m])), idx.to(dev))
    pred, att = pred.cpu(), (att.cpu() if att is not None else None)
    state = {k: v.cpu() for k, v in state.items()}
    n_eval = n_val[0] + n_test[0]
    level = t["y_lv"][m][idx[0, :n_eval].numpy()]  # per scored sample: its flight's level
    pred_km = pred[0, :n_eval].numpy().astype(np.float64) * t["y_sd"][m] + level
    nv, nt = n_val[0], n_test[0]
    return write_unit(
        u,
        sha,
        mode,
        inputs.y,
        pred_km[:nv] if len(u.fold.val_idx) else np.array([]),
        pred_km[nv : nv + nt],
        store,
        feature_names=inputs.phys_names,
        encoder=inputs.encoders[u.emb] if inputs.encoders else None,
        regions=inputs.regions_per_side,
        head_state=state,
        scalers=t["scalers"][m],
        y_mu=float(t["y_mu"][m]),
        y_sd=float(t["y_sd"][m]),
        epoch=int(best_epoch[m]) + 1,
        epochs_run=int(epochs_run[m]),
        best_val=float(best_val[m]),
        head=head,
        dims=dims,
        attention=att[0, nv : nv + nt] if att is not None else None,
        extra=inputs.adaptation(),
    )
