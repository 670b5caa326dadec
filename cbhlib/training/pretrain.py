"""Self-supervised MAE pretraining (no labels), with the loss reported beside two floors.

* ``train_one_epoch`` is the loop (as MAE's ``engine_pretrain.py``); ``pretrain_encoder``
  sets up frames, normalisation statistics, schedule and logging and saves the checkpoint.
* Floors, measured on the same frames and masks as the final loss: *predict-zero* (the
  mean of each target patch) and *visible-patch interpolation* (masked pixels filled by
  a Gaussian-weighted average of the visible pixels around them). An encoder that does
  not beat interpolation has learned nothing a smoothing filter does not know.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cbhlib import threads
from cbhlib.data.campaign import Campaign
from cbhlib.data.frames import FrameSet, Scope, batch_cap, epoch_rows, select_frames, steps_per_epoch
from cbhlib.errors import CheckpointError
from cbhlib.models.mae import MAE1D, EncoderConfig, MaskedAutoencoder, build_encoder
from cbhlib.store.checkpoints import load_checkpoint, load_state, save_checkpoint
from cbhlib.training.loops import JsonlLog, check_finite, cosine_lr, resolve_device

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "mae-encoder"


def _inputs(model: MaskedAutoencoder, raw: torch.Tensor, k_cols: int, gen: torch.Generator) -> torch.Tensor:
    """Raw frames [B, C, H, W] -> model input (random columns per frame for mae1d)."""
    x = model.normalize(raw)
    if isinstance(model, MAE1D):
        W = x.shape[-1]
        k = min(k_cols, W)
        cols = torch.stack([torch.randperm(W, generator=gen)[:k] for _ in range(x.shape[0])]).to(x.device)
        return model.model_input(x, cols)
    return x


def adamw(params: Any, **kw: Any) -> torch.optim.Optimizer:
    """AdamW, fused where this torch build supports it (15 % faster per step on CPU here)."""
    try:
        return torch.optim.AdamW(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, **kw)


def train_one_epoch(
    model: MaskedAutoencoder,
    frames: FrameSet,
    rows: np.ndarray,
    opt: torch.optim.Optimizer,
    step0: int,
    total: int,
    warmup: int,
    lr: float,
    batch: int,
    mask_ratio: float,
    k_cols: int,
    gen: torch.Generator,
    device: torch.device,
    what: str,
) -> tuple[float, int]:
    """One pass over ``rows``; returns (mean loss, next global step)."""
    model.train()
    total_loss, count, step = 0.0, 0, step0
    for s in range(0, len(rows), batch):
        raw = frames.batch(rows[s : s + batch]).to(device, non_blocking=True)
        x = _inputs(model, raw, k_cols, gen)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, total, lr, warmup)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):  # bf16: no scaler
            loss, _, _ = model(x, mask_ratio, gen)
        check_finite(loss.detach(), f"{what}, step {step + 1}", "lower pretrain.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        threads.tick()  # fewer torch threads while other processes hold cores
        total_loss += float(loss.detach()) * len(raw)
        count += len(raw)
        step += 1
    return total_loss / max(count, 1), step


def interpolate_masked(x: torch.Tensor, model: MaskedAutoencoder, mask: torch.Tensor) -> torch.Tensor:
    """Fill masked patches of model input ``x`` from the visible pixels (normalised Gaussian
    convolution, sigma = one patch). Returns the filled input's patches [B, L, P]."""
    p = model.cfg.patch
    vis = 1.0 - mask  # [B, L]
    if isinstance(model, MAE1D):
        xc = model.crop(x)  # [B, C, L*p]
        w = vis.repeat_interleave(p, dim=1)[:, None]  # [B, 1, L*p]
        radius = 2 * p
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / p) ** 2)[None, None]
        C = xc.shape[1]
        num = F.conv1d((xc * w).reshape(-1, 1, xc.shape[-1]), k, padding=radius).reshape(xc.shape)
        den = F.conv1d(w, k, padding=radius)
        filled = torch.where(w > 0, xc, num / den.clamp_min(1e-6).expand(-1, C, -1))
    else:
        xc = model.crop(x)  # [B, C, H', W']
        B, C, H, W = xc.shape
        w = vis.reshape(B, 1, model.gh, model.gw).repeat_interleave(p, 2).repeat_interleave(p, 3)
        radius = 2 * p
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        g = torch.exp(-0.5 * (t / p) ** 2)
        gy, gx = g[None, None, :, None], g[None, None, None, :]  # the Gaussian is separable

        def blur(z: torch.Tensor) -> torch.Tensor:
            return F.conv2d(F.conv2d(z, gy, padding=(radius, 0)), gx, padding=(0, radius))

        num = blur((xc * w).reshape(B * C, 1, H, W)).reshape(B, C, H, W)
        filled = torch.where(w > 0, xc, num / blur(w).clamp_min(1e-6))
    return model.patchify(filled)


@torch.no_grad()
def masked_losses(
    model: MaskedAutoencoder,
    x: torch.Tensor,
    mask_ratio: float,
    seed: int,
    floors: bool = True,
    chunk_values: int = 2**22,
) -> dict[str, float]:
    """Masked-patch MSE of the model and (``floors``) of its two floors on the same masks.

    Frames go through in chunks of about ``chunk_values`` values (one chunk for small
    frames), each masked patch weighted equally across chunks.

    Args:
        x: model input (normalised frames or columns) [B, ...].
    Returns:
        ``{"model", "predict_zero", "interpolation"}`` in the loss's units.
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    per = max(1, chunk_values // max(1, int(x[0].numel())))
    sums, weight = {"model": 0.0, "predict_zero": 0.0, "interpolation": 0.0}, 0.0
    for s in range(0, len(x), per):
        xb = x[s : s + per]
        loss, _, mask = model(xb, mask_ratio, gen)
        w = float(mask.sum())
        sums["model"] += float(loss) * w
        weight += w
        if not floors:
            continue
        target = model.target(xb)
        sums["predict_zero"] += float(((target**2).mean(-1) * mask).sum())
        interp = interpolate_masked(xb, model, mask)
        if model.cfg.norm_pix_loss:
            interp = (interp - interp.mean(-1, keepdim=True)) / (interp.var(-1, keepdim=True) + 1e-6) ** 0.5
        sums["interpolation"] += float((((interp - target) ** 2).mean(-1) * mask).sum())
    out = {k: v / max(weight, 1.0) for k, v in sums.items()}
    return out if floors else {"model": out["model"]}


def pretrain_encoder(
    camp: Campaign,
    enc: EncoderConfig,
    pre: Any,
    scope: Scope,
    seed: int,
    out_path: str | Path,
    log_path: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pretrain one MAE on the frames ``scope`` allows and save its checkpoint.

    Args:
        pre: a :class:`cbhlib.config.PretrainConfig`.
    Returns:
        The checkpoint written: config, geometry, state (with pixel statistics), loss
        history, final loss and floors, frames seen (per flight), scope and seed.
    """
    dev = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    lab, unl = select_frames(camp, scope, pre.unlabelled)
    frames = FrameSet(camp, lab, unl, pre.memory_limit_mb)
    model = build_encoder(enc, camp.image_shape)  # type: ignore[arg-type]
    mean, std = frames.channel_stats(model.centre)
    model.set_pixel_stats(mean, std)
    model.to(dev)
    frames.to(dev)  # in-memory frames cross to the device once
    batch = batch_cap(frames.shape, pre.batch_size)
    n_steps = steps_per_epoch(len(frames), batch, pre.max_frames)
    total = pre.epochs * n_steps
    warmup = int(round(pre.warmup * total))
    opt = adamw(model.parameters(), lr=pre.lr, weight_decay=pre.weight_decay, betas=(0.9, 0.95))
    n_eval = min(pre.eval_frames, max(8, 2**26 // int(np.prod(frames.shape))))  # at most ~256 MB of frames
    if n_eval < pre.eval_frames:
        log.info(
            "loss and floors measured on %d frames, not %d (memory bound for %s frames)",
            n_eval,
            pre.eval_frames,
            "x".join(map(str, frames.shape)),
        )
    eval_rows = np.sort(np.random.default_rng([seed, 99]).permutation(len(frames))[:n_eval])
    eval_gen = torch.Generator().manual_seed(seed + 1)
    x_eval = _inputs(model, frames.batch(eval_rows).to(dev), pre.columns_per_image, eval_gen)
    before = masked_losses(model, x_eval, pre.mask_ratio, seed, floors=False)
    what = f"pretraining {enc.name} ({scope.key}, seed {seed})"
    history: list[float] = []
    t0, step = time.perf_counter(), 0
    with JsonlLog(log_path, stage="pretrain", encoder=enc.name, key=scope.key, seed=seed, **(meta or {})) as jlog:
        for epoch in tqdm(range(pre.epochs), desc=f"pretrain {scope.key} seed {seed}", disable=not progress):
            te = time.perf_counter()
            rows = epoch_rows(rng, len(frames), pre.max_frames)
            loss, step = train_one_epoch(
                model,
                frames,
                rows,
                opt,
                step,
                total,
                warmup,
                pre.lr,
                batch,
                pre.mask_ratio,
                pre.columns_per_image,
                gen,
                dev,
                f"{what}, epoch {epoch + 1}",
            )
            history.append(loss)
            jlog.write(
                epoch=epoch + 1,
                epochs=pre.epochs,
                loss=loss,
                seconds=time.perf_counter() - te,
                lr=cosine_lr(step - 1, total, pre.lr, warmup),
            )
    final = masked_losses(model, x_eval, pre.mask_ratio, seed)
    by_flight = np.bincount(frames.flights(), minlength=camp.n_flights)
    ckpt = {
        "kind": CHECKPOINT_KIND,
        "config": enc.to_dict(),
        "geometry": list(camp.image_shape),  # type: ignore[arg-type]
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": history,
        "loss_before": before["model"],
        "loss_final": final["model"],
        "floor_predict_zero": final["predict_zero"],
        "floor_interpolation": final["interpolation"],
        "mask_ratio": pre.mask_ratio,
        "scope": scope.key,
        "held_out_flight": camp.flight_names[scope.held_out] if scope.held_out is not None else "",
        "seed": int(seed),
        "frames_labelled": int(len(lab)),
        "frames_unlabelled": int(len(unl)),
        "frames_by_flight": {name: int(c) for name, c in zip(camp.flight_names, by_flight, strict=True)},
        "epochs": pre.epochs,
        "steps": step,
        "seconds": time.perf_counter() - t0,
        "campaign_sha256": camp.fingerprint(),
    }
    save_checkpoint(ckpt, out_path)
    log.info(
        "%s: loss %.3f -> %.3f (floors: predict-zero %.3f, interpolation %.3f) on %d frames in %.1f s",
        what,
        before["model"],
        final["model"],
        final["predict_zero"],
        final["interpolation"],
        len(frames),
        ckpt["seconds"],
    )
    return ckpt


def random_encoder(
    camp: Campaign, enc: EncoderConfig, pre: Any, scope: Scope, seed: int, out_path: str | Path
) -> dict[str, Any]:
    """The same architecture, untrained (``random_init``): what pretraining must beat.

    Its pixel statistics come from exactly the frames a pretrained encoder of ``scope``
    sees, so the two differ only by training.
    """
    torch.manual_seed(seed)
    lab, unl = select_frames(camp, scope, pre.unlabelled)
    frames = FrameSet(camp, lab, unl, pre.memory_limit_mb)
    model = build_encoder(enc, camp.image_shape)  # type: ignore[arg-type]
    model.set_pixel_stats(*frames.channel_stats(model.centre))
    ckpt = {
        "kind": CHECKPOINT_KIND,
        "config": enc.to_dict(),
        "geometry": list(camp.image_shape),  # type: ignore[arg-type]
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": [],
        "scope": scope.key,
        "held_out_flight": camp.flight_names[scope.held_out] if scope.held_out is not None else "",
        "seed": int(seed),
        "frames_labelled": 0,
        "frames_unlabelled": 0,
        "frames_by_flight": {},
        "epochs": 0,
        "steps": 0,
        "seconds": 0.0,
        "campaign_sha256": camp.fingerprint(),
    }
    save_checkpoint(ckpt, out_path)
    return ckpt


def load_encoder(
    path: str | Path, cfg: EncoderConfig | None = None, geometry: tuple[int, int, int] | None = None
) -> tuple[MaskedAutoencoder, dict[str, Any]]:
    """Load an MAE from a checkpoint (``weights_only=True``), refusing absurd configs.

    Accepts our checkpoints and bare state dicts (the seed's), with or without an
    ``encoder.`` prefix; a bare state dict needs ``cfg`` and ``geometry`` and gets
    identity pixel statistics. A decoder may be absent.

    Returns:
        (model in eval mode, checkpoint dict).
    """
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") == CHECKPOINT_KIND:
        raw = ckpt.get("config")
        geom = ckpt.get("geometry")
        if not isinstance(raw, dict) or not isinstance(geom, (list, tuple)) or len(geom) != 3:
            raise CheckpointError(
                f"{path}: expected an encoder config and a (C, H, W) geometry; found {raw!r}, {geom!r}"
            )
        try:
            cfg = EncoderConfig.from_dict(raw)
            geometry = tuple(int(g) for g in geom)  # type: ignore[assignment]
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: encoder config: {exc}") from None
        state = ckpt["state_dict"]
    else:
        if cfg is None or geometry is None:
            raise CheckpointError(
                f"{path}: a bare state dict needs an encoder config and image geometry to build the model"
            )
        state = ckpt.get("model_state_dict", ckpt)
        ckpt = {"kind": "bare", "config": cfg.to_dict(), "geometry": list(geometry)}
    problem = cfg.problem(geometry)
    if problem:
        raise CheckpointError(f"{path}: encoder config refused: {problem}")
    model = build_encoder(cfg, geometry)  # type: ignore[arg-type]
    load_state(model, state, path, optional_prefixes=("decoder", "mask_token", "pixel_"))
    model.eval()
    return model, ckpt


@torch.no_grad()
def reconstruct_examples(
    camp: Campaign, ckpt_path: str | Path, idx: np.ndarray, mask_ratio: float = 0.75, seed: int = 0
) -> dict[str, np.ndarray]:
    """Inputs, masked inputs and MAE reconstructions of images ``idx`` (channel 0).

    With ``norm_pix_loss`` the decoder predicts each patch's normalised pattern; it is
    shown de-normalised with the true patch's mean and std (as the MAE paper's figures).

    Returns:
        ``input``, ``masked`` (NaN where masked), ``reconstruction`` (model inside masked
        patches, input elsewhere), ``error`` (reconstruction - input inside masked
        patches), each [n, H', W'] in normalised units; ``mask`` [n, H', W'] (1 = masked).
    """
    model, _ = load_encoder(ckpt_path)
    gen = torch.Generator().manual_seed(seed)
    x = model.normalize(torch.from_numpy(camp.images(idx)))
    if isinstance(model, MAE1D):
        B, C, H, W = x.shape
        x = x.permute(0, 3, 1, 2).reshape(B * W, C, H)  # every column
        to_img = lambda p: model.unpatchify(p).reshape(B, W, C, -1).permute(0, 2, 3, 1)
    else:
        to_img = model.unpatchify
    _, pred, mask = model(x, mask_ratio, gen)
    target = model.patchify(x)
    if model.cfg.norm_pix_loss:
        mu, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mu
    m = mask[..., None]
    rec = pred * m + target * (1 - m)
    masked = torch.where(m.bool(), torch.full_like(target, float("nan")), target)
    out = {
        "input": to_img(target),
        "masked": to_img(masked),
        "reconstruction": to_img(rec),
        "error": to_img((pred - target) * m),
        "mask": to_img(m.expand_as(target)),
    }
    return {k: v[:, 0].numpy() for k, v in out.items()}
