"""Optional end-to-end fine-tuning of the image encoder with a fusion head, one unit at a time.

The default keeps the encoder frozen (embeddings cached once, heads batched over folds:
``cbhlib.training.heads``). With ``train.finetune: true`` every (fold, seed) unit copies its
pretrained encoder and trains it jointly with its head (encoder learning rate
``train.finetune_lr``), under the same honest protocol: scalers fitted on training rows,
early stopping on the validation time blocks of the training flights, results written by
the same :func:`cbhlib.evaluation.reports.write_unit`. Images are encoded every step here by
necessity; this costs far more than frozen heads.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cbhlib.config import Config
from cbhlib.data.campaign import Campaign
from cbhlib.data.folds import FeatureScaler
from cbhlib.evaluation.reports import write_unit
from cbhlib.models.fusion import PHYSICAL_MODES, FusionHeads
from cbhlib.models.mae import pool_tokens
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import Unit, UnitResult, UnitStore
from cbhlib.training.heads import TrainInputs, eval_sets, head_sha, huber
from cbhlib.training.loops import JsonlLog, check_finite, cosine_lr, resolve_device
from cbhlib.training.pretrain import load_encoder


class Joint(torch.nn.Module):
    """Encoder + a single (M = 1) fusion head; ``state_dict`` keys ``encoder.*`` and ``head.*``."""

    def __init__(self, encoder: torch.nn.Module, head: FusionHeads, regions: int) -> None:
        super().__init__()
        self.encoder, self.head, self.regions = encoder, head, regions

    def forward(self, images: torch.Tensor, phys: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw images [B, C, H, W]; phys [B, K] -> pred [1, B], attention or None."""
        pooled, reg = pool_tokens(self.encoder.forward_features(images), (self.regions, self.regions))
        return self.head(img=pooled[None], regions=reg[None], phys=phys[None] if phys is not None else None)


def finetune_units(
    camp: Campaign, run: RunDir, inputs: TrainInputs, units: list[Unit], mode: str, cfg: Config, store: UnitStore
) -> list[UnitResult]:
    """Fine-tune each unit's encoder with its head; finished units are reused."""
    out = []
    for u in units:
        sha = head_sha(mode, cfg.train, cfg.head, u, inputs)
        done = store.load(u, sha)
        out.append(done if done is not None else _one(camp, run, inputs, u, sha, mode, cfg, store))
    return out


def _one(
    camp: Campaign, run: RunDir, inputs: TrainInputs, u: Unit, sha: str, mode: str, cfg: Config, store: UnitStore
) -> UnitResult:
    tc = cfg.train
    dev = resolve_device(cfg.device)
    torch.manual_seed(u.seed * 100_003 + u.fold.fold_id)
    rng = np.random.default_rng([u.seed, u.fold.fold_id, 11])
    encoder, _ = load_encoder(run.root / inputs.encoders[u.emb])
    train = np.asarray(u.fold.train_idx, np.int64)
    y = inputs.y.astype(np.float64)
    y_mu, y_sd = float(y[train].mean()), float(max(y[train].std(), 1e-3))
    phys, scalers = None, {}
    if mode in PHYSICAL_MODES:
        sc = FeatureScaler().fit(inputs.phys[train])  # type: ignore[index]
        phys = torch.from_numpy(sc.transform(inputs.phys)).to(dev)
        scalers = {f"phys_{k}": v for k, v in sc.state().items()}
    head = FusionHeads(
        mode,
        cfg.head,
        1,
        encoder.cfg.embed_dim,
        0 if phys is None else phys.shape[1],
        seeds=[u.seed * 100_003 + u.fold.fold_id],
    )
    model = Joint(encoder, head, tc.regions).to(dev)
    opt = torch.optim.AdamW(
        [{"params": encoder.parameters(), "lr": tc.finetune_lr}, {"params": head.parameters(), "lr": tc.lr}],
        weight_decay=tc.weight_decay,
    )
    eval_idx, vmask, n_val, n_test = eval_sets([u])
    E = int(n_val[0] + n_test[0])
    eidx = eval_idx[0, :E].numpy()
    yt = torch.tensor((y - y_mu) / y_sd, dtype=torch.float32, device=dev)
    delta = torch.tensor([[tc.huber_delta_km / y_sd]], device=dev)
    vmask = vmask.to(dev)
    images = lambda idx: torch.from_numpy(camp.images(idx)).to(dev, non_blocking=True)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")  # the encoder's matmuls
    best: dict[str, Any] = {
        "val": np.inf,
        "epoch": -1,
        "pred": None,
        "att": None,
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }
    batch = min(tc.batch_size, len(train))
    n_steps = math.ceil(len(train) / batch)
    epochs_run = 0
    what = f"mode {mode} (fine-tuned), fold {u.fold.fold_id} ({u.fold.test_flight}), seed {u.seed}"
    with JsonlLog(run.training_log(u.model), model=u.model, mode=mode, protocol=u.protocol) as jlog:
        for epoch in tqdm(
            range(tc.epochs), desc=f"fine-tune {u.model} fold {u.fold.fold_id}", disable=not cfg.progress
        ):
            t0 = time.perf_counter()
            scale = cosine_lr(epoch, tc.epochs, 1.0)
            for g, base in zip(opt.param_groups, (tc.finetune_lr, tc.lr), strict=True):
                g["lr"] = base * scale
            model.train()
            head.begin_epoch([n_steps], batch)
            perm = rng.permutation(train)
            total = 0.0
            for s in range(n_steps):
                b = np.sort(perm[s * batch : (s + 1) * batch])
                head.set_step(s)
                with amp:
                    pred, _ = model(images(b), phys[b] if phys is not None else None)
                loss = huber(pred.float() - yt[b][None], delta).mean()
                check_finite(loss.detach(), f"{what}, epoch {epoch + 1}: the training loss", "lower train.lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
            model.eval()
            preds, atts = [], []
            with torch.no_grad():
                for s in range(0, E, 64):
                    chunk = eidx[s : s + 64]
                    order = np.argsort(chunk)
                    inv = np.argsort(order)
                    with amp:
                        p, a = model(images(chunk[order]), phys[chunk[order]] if phys is not None else None)
                    preds.append(p.float()[:, inv])
                    if a is not None:
                        atts.append(a.float()[:, inv])
            pred_e = torch.cat(preds, 1)
            check_finite(pred_e, f"{what}, epoch {epoch + 1}: predictions")
            val = float((huber(pred_e - yt[eidx][None], delta) * vmask[:, :E]).sum() / vmask[:, :E].sum())
            epochs_run = epoch + 1
            if val < best["val"] - 1e-9:
                best.update(
                    val=val,
                    epoch=epoch,
                    pred=pred_e[0].clone(),
                    att=torch.cat(atts, 1)[0] if atts else None,
                    state={k: v.clone() for k, v in model.state_dict().items()},
                )
            jlog.write(
                fold=u.fold.fold_id,
                test_flight=u.fold.test_flight,
                seed=u.seed,
                epoch=epoch + 1,
                max_epochs=tc.epochs,
                train_loss=total / n_steps,
                val_loss=val,
                best_val_loss=best["val"],
                lr=tc.lr * scale,
                seconds=time.perf_counter() - t0,
                n_units=1,
                stopped=False,
            )
            if epoch - best["epoch"] >= tc.patience:
                break
    pred = best["pred"].cpu().numpy().astype(np.float64) * y_sd + y_mu
    att = best["att"][n_val[0] :].cpu() if best["att"] is not None else None
    best["state"] = {k: v.cpu() for k, v in best["state"].items()}
    return write_unit(
        u,
        sha,
        mode,
        inputs.y,
        pred[: n_val[0]],
        pred[n_val[0] : E],
        store,
        feature_names=inputs.phys_names,
        encoder=inputs.encoders[u.emb] if inputs.encoders else None,
        regions=inputs.regions_per_side,
        head_state=best["state"],
        scalers=scalers,
        y_mu=y_mu,
        y_sd=y_sd,
        epoch=best["epoch"] + 1,
        epochs_run=epochs_run,
        best_val=best["val"],
        head=cfg.head,
        dims=(encoder.cfg.embed_dim, 0 if phys is None else phys.shape[1]),
        attention=att,
    )
