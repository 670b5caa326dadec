"""Figures of the pretraining and training notebooks."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cbhlib.metrics import fmt_r2, regression_metrics
from cbhlib.plots.style import flight_color, label, model_color, save


def pretrain_curves(encoders: pd.DataFrame, histories: dict[str, list[float]], save_to: str | Path | None = None) -> plt.Figure:
    """Training loss per epoch of each encoder with its two floors (measured on held-in frames).

    Args:
        encoders: one row per encoder with ``name``, ``floor_predict_zero``, ``floor_interpolation``, ``loss_final``.
        histories: name -> training loss per epoch.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    cmap = plt.get_cmap("viridis")
    for i, (name, h) in enumerate(histories.items()):
        ax.plot(np.arange(1, len(h) + 1), h, "-", lw=1.2, color=cmap(i / max(1, len(histories) - 1)), alpha=0.8,
                label=name if len(histories) <= 8 else None)
    zero = float(encoders["floor_predict_zero"].mean())
    interp = float(encoders["floor_interpolation"].mean())
    final = float(encoders["loss_final"].mean())
    ax.axhline(zero, color="k", ls="--", lw=1.2, label=f"floor: predict zero ({zero:.3f})")
    ax.axhline(interp, color="tab:red", ls=":", lw=1.5, label=f"floor: interpolate visible patches ({interp:.3f})")
    ax.axhline(final, color="tab:green", ls="-.", lw=1.2, label=f"final, held-in evaluation frames ({final:.3f})")
    ax.set(xlabel="epoch", ylabel="masked-patch MSE (training batches)",
           title=f"MAE pretraining: {len(histories)} encoders (final/zero floor = {final / zero:.2f})")
    ax.legend(fontsize=7, ncol=2)
    return save(fig, save_to)


def reconstructions(rec: dict[str, np.ndarray], save_to: str | Path | None = None) -> plt.Figure:
    """Rows of (input, masked input, reconstruction, error inside masked patches), channel 0."""
    n = len(rec["input"])
    fig, axes = plt.subplots(n, 4, figsize=(10, 2.5 * n), squeeze=False)
    for i in range(n):
        vmin, vmax = np.nanpercentile(rec["input"][i], [1, 99])
        err = np.where(rec["mask"][i] > 0, rec["error"][i], np.nan)
        emax = float(np.nanpercentile(np.abs(err), 99)) if np.isfinite(err).any() else 1.0
        panels = ((rec["input"][i], "input", "inferno", vmin, vmax), (rec["masked"][i], "visible patches", "inferno", vmin, vmax),
                  (rec["reconstruction"][i], "reconstruction (masked patches)", "inferno", vmin, vmax),
                  (err, "error in masked patches", "RdBu_r", -emax, emax))
        for j, (img, title, cmap, lo, hi) in enumerate(panels):
            ax = axes[i, j]
            im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
            if j in (2, 3):
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    fig.suptitle("MAE on frames of the held-out flight (normalised units; grey = masked)")
    fig.tight_layout()
    return save(fig, save_to)


def loss_curves(log: pd.DataFrame, model: str, save_to: str | Path | None = None) -> plt.Figure:
    """Training and validation loss per epoch for each LOFO fold (first seed)."""
    d0 = log[(log["model"] == model) & (log["protocol"] == "lofo")] if len(log) else log
    folds = sorted(d0["fold"].unique()) if len(d0) else []
    fig, axes = plt.subplots(1, max(1, len(folds)), figsize=(3.2 * max(1, len(folds)), 3), sharey=True, squeeze=False)
    for ax, f in zip(axes[0], folds):
        d = d0[(d0["fold"] == f) & (d0["seed"] == d0["seed"].min())].sort_values("epoch").drop_duplicates("epoch", keep="last")
        ax.plot(d["epoch"], d["train_loss"], label="train", color="0.4")
        ax.plot(d["epoch"], d["val_loss"], label="validation (training flights)", color=model_color(model))
        ax.axvline(d.loc[d["val_loss"].idxmin(), "epoch"], color="k", ls=":", lw=1)
        ax.set(title=f"fold {f}: {label(d['test_flight'].iloc[0])} held out", xlabel="epoch", yscale="log")
    axes[0, 0].set_ylabel("Huber loss (standardised CBH)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{model}: loss curves (dotted: the epoch early stopping selected)")
    fig.tight_layout()
    return save(fig, save_to)


def pred_vs_true(pred: pd.DataFrame, title: str, save_to: str | Path | None = None) -> plt.Figure:
    """Predicted against lidar CBH per held-out flight plus all together; each panel states
    n, R2, MAE and bias (all seeds pooled)."""
    flights = list(dict.fromkeys(pred["flight"]))
    fig, axes = plt.subplots(1, len(flights) + 1, figsize=(3.1 * (len(flights) + 1), 3.4), squeeze=False)
    top = max(float(pred["truth_km"].max()), float(pred["pred_km"].max())) * 1.05
    for i, fl in enumerate(flights + ["all"]):
        ax = axes[0, i]
        d = pred if fl == "all" else pred[pred["flight"] == fl]
        for k, f2 in enumerate(flights):
            dd = d[d["flight"] == f2]
            ax.scatter(dd["truth_km"], dd["pred_km"], s=5, alpha=0.5, color=flight_color(k))
        m = regression_metrics(d["truth_km"].to_numpy(), d["pred_km"].to_numpy())
        ax.plot([0, top], [0, top], "k--", lw=0.8)
        ax.text(0.03, 0.97, f"n = {m['n']}\nR2 = {fmt_r2(m['r2'])}\nMAE = {1000 * m['mae_km']:.0f} m\n"
                f"bias = {1000 * m['bias_km']:+.0f} m", transform=ax.transAxes, va="top", fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.7, "lw": 0})
        ax.set(xlim=(0, top), ylim=(0, top), title=label(fl), xlabel="lidar CBH (km)")
    axes[0, 0].set_ylabel("predicted CBH (km)")
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, save_to)


def fold_bars(per_flight: pd.DataFrame, model: str, save_to: str | Path | None = None, r2_floor: float = -3.0) -> plt.Figure:
    """MAE (headline) and R2 per held-out flight, model beside climatology, mean ± sd over seeds.

    R2 is clipped at ``r2_floor`` for every series alike; clipped bars are annotated with
    their value. Tick labels carry each flight's n.
    """
    flights = list(dict.fromkeys(per_flight["flight"]))
    n = per_flight.drop_duplicates("flight").set_index("flight")["n"]
    x = np.arange(len(flights))
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, key, lab in ((axes[0], "mae_m", "MAE (m)"), (axes[1], "r2", "R2")):
        for i, (name, off) in enumerate(((model, -0.2), ("climatology", 0.2))):
            d = per_flight[per_flight["model"] == name].set_index("flight").reindex(flights)
            vals = d[key].to_numpy(float)
            sd = d[f"{key}_sd"].to_numpy(float) if f"{key}_sd" in d else None
            shown = np.clip(vals, r2_floor, None) if key == "r2" else vals
            ax.bar(x + off, shown, 0.4, yerr=sd if key == "mae_m" else None, capsize=3, color=model_color(name),
                   edgecolor="k", lw=0.4, label=f"{name} (mean ± sd over seeds)" if name == model else name)
            if key == "r2":
                for xi, v in zip(x + off, vals):
                    if np.isfinite(v) and v < r2_floor:
                        ax.annotate(f"{v:.1f}", (xi, r2_floor), xytext=(0, 3), textcoords="offset points",
                                    ha="center", fontsize=7, rotation=90)
                    elif not np.isfinite(v):
                        ax.annotate("n/a", (xi, 0), ha="center", fontsize=7)
        ax.set_xticks(x, [f"{label(f)}\nn={n[f]}" for f in flights], fontsize=8)
        ax.set_title(lab + (f" (clipped at {r2_floor:g}; clipped bars annotated)" if key == "r2" else ""))
        if key == "r2":
            ax.axhline(0, color="k", lw=0.8)
            ax.set_ylim(r2_floor, 1)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{model} vs climatology per held-out flight (leave-one-flight-out)")
    fig.tight_layout()
    return save(fig, save_to)


def attention_weights(att: np.ndarray, tokens: list[str], n_phys: int, grid: tuple[int, int] | None,
                      flights: list[str], save_to: str | Path | None = None) -> plt.Figure:
    """Mean attention per physical variable (per held-out flight) and per image region, on a
    scale from 0 with the uniform weight 1/T marked.

    Args:
        att: [folds, T] mean attention over test samples and heads, per fold.
    """
    T = att.shape[1]
    uniform = 1.0 / T
    has_regions = grid is not None and T > n_phys
    fig, axes = plt.subplots(1, 2 if has_regions else 1, figsize=(13 if has_regions else 7, 4), squeeze=False)
    ax = axes[0, 0]
    x = np.arange(n_phys)
    for i, fl in enumerate(flights):
        ax.plot(x, att[i, :n_phys], "o-", ms=3, lw=1, color=flight_color(i), label=f"{label(fl)} held out")
    ax.axhline(uniform, color="k", ls="--", lw=1, label=f"uniform weight 1/{T}")
    ax.set_xticks(x, tokens[:n_phys], rotation=60, fontsize=7)
    ax.set_ylim(0, max(float(att.max()) * 1.15, uniform * 1.5))
    ax.set(ylabel="attention weight (mean over test samples and heads)", title="Attention per physical variable")
    ax.legend(fontsize=6)
    if has_regions:
        reg = att[:, n_phys:].mean(0).reshape(grid)  # type: ignore[arg-type]
        im = axes[0, 1].imshow(reg, cmap="magma", vmin=0, vmax=max(float(reg.max()), uniform * 1.5))
        for (r, c), v in np.ndenumerate(reg):
            axes[0, 1].text(c, r, f"{v / uniform:.2f}x", ha="center", va="center", fontsize=7, color="w")
        axes[0, 1].set(title="Attention per image region (mean over folds; text: x uniform)",
                       xlabel="region column", ylabel="region row")
        fig.colorbar(im, ax=axes[0, 1], label="attention weight (from 0)")
    fig.tight_layout()
    return save(fig, save_to)
