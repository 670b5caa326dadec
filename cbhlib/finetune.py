"""Optional end-to-end fine-tuning of the image encoder with a fusion head, one unit at a time.

The default keeps the encoder frozen (embeddings cached once, heads batched over folds:
``cbhlib.train``). With ``finetune: true`` every (fold, seed) unit copies its pretrained
encoder and trains it jointly with its head (encoder learning rate ``finetune_lr``),
with the same honest protocol: scalers fitted on training rows, early stopping on the
validation time blocks of the training flights, outputs in the same unit schema.
Images are encoded every step here by necessity; this costs far more than frozen heads.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cbhlib.campaign import Campaign
from cbhlib.data import FeatureScaler
from cbhlib.errors import TrainingDivergedError
from cbhlib.models.fusion import PHYSICAL_MODES, FusionConfig, FusionHeads
from cbhlib.models.mae import pool_tokens
from cbhlib.pretrain import load_encoder, normalize
from cbhlib.train import TrainConfig, TrainInputs, Unit, UnitStore, _eval_sets, _finish, huber, unit_sha


class _Joint(torch.nn.Module):
    """Encoder + a single (M = 1) fusion head; ``state_dict`` keys ``encoder.*`` and ``head.*``."""

    def __init__(self, encoder: torch.nn.Module, head: FusionHeads, regions: int) -> None:
        super().__init__()
        self.encoder, self.head, self.regions = encoder, head, regions

    def forward(self, x: torch.Tensor, phys: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, C, H, W] normalised; phys [B, K] -> pred [1, B], attention or None."""
        pooled, reg = pool_tokens(self.encoder.image_tokens(x), (self.regions, self.regions))
        return self.head(img=pooled[None], regions=reg[None], phys=phys[None] if phys is not None else None)


def finetune_units(camp: Campaign, encoder_paths: list[Path], inputs: TrainInputs, units: list[Unit],
                   cfg: TrainConfig, run_dir: str | Path, protocol: str = "lofo", finetune_lr: float = 1e-4,
                   regions: int = 4, log_path: str | Path | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Fine-tune each unit's encoder with its head; finished units are reused.

    Args:
        encoder_paths: one pretrained checkpoint per embedding set (``Unit.emb`` indexes it).
    """
    store = UnitStore(run_dir, cfg.mode + "_finetuned", protocol)
    results = []
    for u in units:
        sha = unit_sha(cfg, u, inputs) + f"-ft{finetune_lr}"
        done = store.load_done(u, sha)
        results.append(done if done is not None else
                       _one(camp, encoder_paths[u.emb], inputs, u, sha, cfg, store, finetune_lr, regions, log_path, progress))
    return results


def _one(camp: Campaign, enc_path: Path, inputs: TrainInputs, u: Unit, sha: str, cfg: TrainConfig, store: UnitStore,
         lr_enc: float, regions: int, log_path: str | Path | None, progress: bool) -> dict[str, Any]:
    torch.manual_seed(u.seed * 100_003 + u.fold.fold_id)
    rng = np.random.default_rng([u.seed, u.fold.fold_id, 11])
    encoder, ck = load_encoder(enc_path)
    mean, std, per_image = float(ck["pixel_mean"]), float(ck["pixel_std"]), ck.get("pixel_norm") == "image"
    train = np.asarray(u.fold.train_idx, np.int64)
    y = inputs.y.astype(np.float64)
    y_mu, y_sd = float(y[train].mean()), float(max(y[train].std(), 1e-3))
    phys, scalers = None, {}
    if cfg.mode in PHYSICAL_MODES:
        sc = FeatureScaler().fit(inputs.phys[train])
        phys = torch.from_numpy(sc.transform(inputs.phys))
        scalers = {f"phys_{k}": v for k, v in sc.state().items()}
    fusion = FusionConfig(**{**cfg.fusion.to_dict(), "mode": cfg.mode})
    head = FusionHeads(fusion, 1, encoder.cfg.embed_dim, 0 if phys is None else phys.shape[1],
                       seeds=[u.seed * 100_003 + u.fold.fold_id])
    model = _Joint(encoder, head, regions)
    opt = torch.optim.AdamW([{"params": encoder.parameters(), "lr": lr_enc},
                             {"params": head.parameters(), "lr": cfg.lr}], weight_decay=cfg.weight_decay)
    base_lrs = [lr_enc, cfg.lr]
    eval_idx, vmask, n_val, n_test = _eval_sets([u])
    E = int(n_val[0] + n_test[0])
    eidx = eval_idx[0, :E].numpy()
    yt = torch.tensor((y - y_mu) / y_sd, dtype=torch.float32)
    delta = torch.tensor([[cfg.huber_delta_km / y_sd]])
    images = lambda idx: torch.from_numpy(normalize(camp.images(idx), mean, std, per_image))  # noqa: E731
    best = {"val": np.inf, "epoch": -1, "pred": torch.zeros(1, eval_idx.shape[1]), "att": None,
            "state": {k: v.clone() for k, v in model.state_dict().items()}}
    n_steps = math.ceil(len(train) / cfg.batch_size)
    log = open(log_path, "a") if log_path else None
    epochs_run = 0
    for epoch in tqdm(range(cfg.epochs), desc=f"fine-tune {cfg.mode} fold {u.fold.fold_id}", disable=not progress):
        t0 = time.perf_counter()
        scale = 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = base * scale
        model.train()
        head.begin_epoch([n_steps], cfg.batch_size)
        perm = rng.permutation(train)
        total = 0.0
        for s in range(n_steps):
            b = np.sort(perm[s * cfg.batch_size : (s + 1) * cfg.batch_size])
            head.set_step(s)
            pred, _ = model(images(b), phys[b] if phys is not None else None)
            loss = huber(pred - yt[b][None], delta).mean()
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"mode {cfg.mode} (fine-tuned), fold {u.fold.fold_id} ({u.fold.test_flight}), "
                                            f"seed {u.seed}, epoch {epoch + 1}: the training loss became non-finite")
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
                p, a = model(images(chunk[order]), phys[chunk[order]] if phys is not None else None)
                preds.append(p[:, inv])
                if a is not None:
                    atts.append(a[:, inv])
        pred_e = torch.cat(preds, 1)
        if not torch.isfinite(pred_e).all():
            raise TrainingDivergedError(f"mode {cfg.mode} (fine-tuned), fold {u.fold.fold_id}, epoch {epoch + 1}: "
                                        "predictions became non-finite")
        val = float((huber(pred_e - yt[eidx][None], delta) * vmask[:, :E]).sum() / vmask[:, :E].sum())
        epochs_run = epoch + 1
        if val < best["val"] - 1e-9:
            best.update(val=val, epoch=epoch, state={k: v.clone() for k, v in model.state_dict().items()})
            best["pred"][:, :E] = pred_e
            best["att"] = torch.cat(atts, 1)[0] if atts else None
        if log:
            log.write(json.dumps({"mode": cfg.mode + "_finetuned", "protocol": store.protocol, "fold": u.fold.fold_id,
                                  "test_flight": u.fold.test_flight, "seed": u.seed, "epoch": epoch + 1,
                                  "max_epochs": cfg.epochs, "train_loss": total / n_steps, "val_loss": val,
                                  "best_val_loss": best["val"], "lr": cfg.lr * scale,
                                  "seconds": time.perf_counter() - t0, "n_units": 1, "stopped": False}) + "\n")
            log.flush()
        if epoch - best["epoch"] >= cfg.patience:
            break
    if log:
        log.close()
    t = {"y_sd": [y_sd], "y_mu": [y_mu], "scalers": [scalers]}
    return _finish(u, sha, 0, t, best["pred"], [best["att"]], [best["state"]], np.array([best["epoch"]]),
                   np.array([best["val"]]), np.array([epochs_run]), inputs, fusion, cfg, store, n_val[0], n_test[0])
