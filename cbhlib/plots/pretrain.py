"""Figures of MAE pretraining: loss beside its floors, and reconstructions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cbhlib.plots.style import flight_color, label, save

PIXEL_SCALES = {
    "image": "normalised pixels: image mean removed, ÷ training-pixel sd",
    "global": "normalised pixels: (pixel − training mean) ÷ training-pixel sd",
}


def _flight_index(flights: Sequence[str] | None, held: str, seen: list[str]) -> int:
    if flights and held in flights:
        return list(flights).index(held)
    if held not in seen:
        seen.append(held)
    return seen.index(held)


def pretrain_curves(
    encoders: pd.DataFrame,
    histories: dict[str, list[float]],
    save_to: str | Path | None = None,
    flights: Sequence[str] | None = None,
) -> plt.Figure:
    """Training loss per epoch of each encoder, coloured by its held-out flight, with the
    mean over encoders and two floors (means over encoders, measured on held-in frames).

    Args:
        encoders: one row per encoder with ``name``, ``floor_predict_zero``, ``floor_interpolation``, ``loss_final``
            and (optionally) ``held_out_flight``.
        histories: name -> training loss per epoch.
        flights: the campaign's flight names (fixes each held-out flight's colour).
    """
    held = {}
    if "held_out_flight" in encoders:
        held = dict(zip(encoders["name"], encoders["held_out_flight"].fillna(""), strict=True))
    fig, ax = plt.subplots(figsize=(9, 4.4))
    seen: list[str] = []
    labelled: set[str] = set()
    for name, h in histories.items():
        fl = held.get(name, "") or "all flights"
        k = _flight_index(flights, fl, seen)
        ax.plot(
            np.arange(1, len(h) + 1),
            h,
            "-",
            lw=1.1,
            color=flight_color(k),
            alpha=0.75,
            label=f"{label(fl)} held out" if fl not in labelled else None,
        )
        labelled.add(fl)
    if histories:
        L = max(len(h) for h in histories.values())
        grid = np.full((len(histories), L), np.nan)
        for i, h in enumerate(histories.values()):
            grid[i, : len(h)] = h
        ax.plot(np.arange(1, L + 1), np.nanmean(grid, 0), "-", color="k", lw=2.4, label="mean over encoders")
    zero = float(encoders["floor_predict_zero"].mean())
    interp = float(encoders["floor_interpolation"].mean())
    final = float(encoders["loss_final"].mean())
    ax.axhline(zero, color="k", ls="--", lw=1.2, label=f"floor: predict zero ({zero:.3f})")
    ax.axhline(interp, color="0.45", ls=":", lw=2.0, label=f"floor: interpolate visible patches ({interp:.3f})")
    ax.axhline(final, color="0.25", ls="-.", lw=1.2, label=f"final, held-in evaluation frames ({final:.3f})")
    lows = [interp, final] + [float(np.min(h)) for h in histories.values() if len(h)]
    highs = [zero] + [float(np.max(h)) for h in histories.values() if len(h)]
    pad = 0.06 * (max(highs) - min(lows) or 1.0)
    ax.set_ylim(min(lows) - pad, max(highs) + pad)
    ax.set(
        xlabel="epoch",
        ylabel="masked-patch MSE (training batches)",
        title=f"MAE pretraining: {len(histories)} encoders; final / predict-zero = {final / zero:.2f}, "
        f"final / interpolation = {final / interp:.2f}\n(floors and final: means over encoders)",
    )
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return save(fig, save_to)


def _bad_grey(name: str) -> Any:
    cmap = plt.get_cmap(name).copy()
    cmap.set_bad("0.7")
    return cmap


def reconstructions(
    rec: dict[str, np.ndarray], save_to: str | Path | None = None, source: str = "", pixel_norm: str = "image"
) -> plt.Figure:
    """Rows of (input, masked input, reconstruction, error inside masked patches), channel 0.

    Hidden patches are grey in the masked input; visible (unscored) patches are grey in the
    error panel. The error scale is shared by every row and clipped at the 99th percentile
    of |error|.

    Args:
        source: what the frames are (held-out flight, encoder), for the title.
        pixel_norm: the encoder's pixel normalisation (names the colour-bar unit).
    """
    n = len(rec["input"])
    err_all = np.where(rec["mask"] > 0, rec["error"], np.nan)
    emax = float(np.nanpercentile(np.abs(err_all), 99)) if np.isfinite(err_all).any() else 1.0
    unit = PIXEL_SCALES.get(pixel_norm, "normalised pixels")
    img_cmap, err_cmap = _bad_grey("inferno"), _bad_grey("RdBu_r")
    fig, axes = plt.subplots(n, 4, figsize=(12, 2.7 * n + 0.6), squeeze=False, layout="constrained")
    for i in range(n):
        vmin, vmax = np.nanpercentile(rec["input"][i], [1, 99])
        panels = (
            (rec["input"][i], "input", img_cmap, vmin, vmax),
            (rec["masked"][i], "masked input (grey: hidden patches)", img_cmap, vmin, vmax),
            (rec["reconstruction"][i], "reconstruction in hidden patches", img_cmap, vmin, vmax),
            (err_all[i], "error in hidden patches (grey: visible)", err_cmap, -emax, emax),
        )
        for j, (img, title, cmap, lo, hi) in enumerate(panels):
            ax = axes[i, j]
            im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 2:
                cb = fig.colorbar(im, ax=axes[i, :3].tolist(), fraction=0.03, pad=0.01)
                cb.set_label("normalised pixel value\n(row's 1st-99th percentile)", fontsize=7)
                cb.ax.tick_params(labelsize=7)
    cb = fig.colorbar(
        plt.cm.ScalarMappable(plt.Normalize(-emax, emax), err_cmap), ax=axes[:, 3].tolist(), fraction=0.08, pad=0.02
    )
    cb.set_label(
        "reconstruction − input (normalised)\none scale for all rows, clipped at 99th pct of |error|", fontsize=7
    )
    cb.ax.tick_params(labelsize=7)
    fig.suptitle(
        "MAE reconstructions"
        + (f" of {label(source)}" if source else " of frames the encoder never saw")
        + f"\n({unit})",
        fontsize=10,
    )
    return save(fig, save_to)
