"""Figures: every function returns the figure and, given ``save``, writes a PNG.

Titles name what is shown, axes carry units, flights are named. No backend is forced:
notebooks show figures inline, scripts save them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cbhlib.campaign import Campaign

FLIGHT_COLORS = plt.get_cmap("tab10").colors


def _save(fig: plt.Figure, save: str | Path | None) -> plt.Figure:
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=110, bbox_inches="tight")
    return fig


def color(k: int) -> tuple[float, float, float]:
    return FLIGHT_COLORS[k % len(FLIGHT_COLORS)]


# --------------------------------------------------------------------------- exploration


def cbh_distributions(camp: Campaign, save: str | Path | None = None) -> plt.Figure:
    """Histogram of lidar CBH per flight."""
    fig, ax = plt.subplots(figsize=(8, 4))
    bins = np.arange(0, float(camp.cbh_km.max()) + 0.1, 0.06)
    for k, name in enumerate(camp.flight_names):
        y = camp.cbh_km[camp.flight == k]
        ax.hist(y, bins=bins, histtype="step", lw=2, color=color(k), density=True, label=f"{name} (n={len(y)})")
    ax.set(xlabel="lidar cloud base height (km)", ylabel="density", title="CBH distribution per flight")
    ax.legend(fontsize=8)
    return _save(fig, save)


def feature_distributions(camp: Campaign, units: dict[str, str], save: str | Path | None = None) -> plt.Figure:
    """Box plot of every physical feature per flight."""
    X, names = camp.feature_matrix()
    n = len(names)
    if n == 0:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "this campaign has no physical features", ha="center", va="center")
        ax.axis("off")
        return _save(fig, save)
    cols = 4
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for j, name in enumerate(names):
        ax = axes[j // cols, j % cols]
        data = [X[(camp.flight == k) & np.isfinite(X[:, j]), j] for k in range(camp.n_flights)]
        bp = ax.boxplot(data, patch_artist=True, showfliers=False)
        for k, box in enumerate(bp["boxes"]):
            box.set_facecolor(color(k))
            box.set_alpha(0.6)
        ax.set_xticks(range(1, camp.n_flights + 1), camp.flight_names, rotation=45, fontsize=7)
        u = units.get(name, "")
        ax.set_title(f"{name}" + (f" ({u})" if u else ""), fontsize=9)
    for j in range(n, rows * cols):
        axes[j // cols, j % cols].axis("off")
    fig.suptitle("Physical features per flight (boxes: quartiles; whiskers: 1.5 IQR)")
    fig.tight_layout()
    return _save(fig, save)


def feature_correlation_bars(corr: pd.DataFrame, save: str | Path | None = None) -> plt.Figure:
    """Pearson and Spearman correlation of each feature with CBH."""
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(corr) + 1.5))
    if len(corr) == 0:
        ax.text(0.5, 0.5, "no physical features", ha="center", va="center")
        ax.axis("off")
        return _save(fig, save)
    y = np.arange(len(corr))
    ax.barh(y - 0.2, corr["pearson_r"], height=0.4, label="Pearson r")
    ax.barh(y + 0.2, corr["spearman_rho"], height=0.4, label="Spearman rho")
    ax.set_yticks(y, corr["feature"], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel="correlation with lidar CBH (all flights pooled)", title="Feature correlation with CBH", xlim=(-1, 1))
    ax.legend(fontsize=8)
    ax.invert_yaxis()
    return _save(fig, save)


def example_images(camp: Campaign, per_flight: int = 3, seed: int = 0, save: str | Path | None = None) -> plt.Figure:
    """A few images per flight (first channel, brightness temperature) titled with CBH."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(camp.n_flights, per_flight, figsize=(2.6 * per_flight, 2.4 * camp.n_flights), squeeze=False)
    for k, name in enumerate(camp.flight_names):
        idx = camp.flight_indices(k)
        pick = np.sort(rng.choice(idx, size=min(per_flight, len(idx)), replace=False))
        imgs = camp.images(pick)
        for j in range(per_flight):
            ax = axes[k, j]
            ax.axis("off")
            if j < len(pick):
                im = ax.imshow(imgs[j, 0], cmap="inferno")
                ax.set_title(f"{name} #{pick[j]}\nCBH {camp.cbh_km[pick[j]]:.2f} km", fontsize=8)
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    fig.suptitle("Example thermal images (channel 0, brightness temperature in file units)")
    fig.tight_layout()
    return _save(fig, save)


def shadow_vs_lidar(camp: Campaign, save: str | Path | None = None) -> plt.Figure:
    """Shadow-derived height against lidar CBH, coloured by flight."""
    X, names = camp.feature_matrix()
    j = next((i for i, n in enumerate(names) if n.endswith("derived_geometric_H")), None)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if j is None:
        ax.text(0.5, 0.5, "no derived_geometric_H feature in this campaign", ha="center", transform=ax.transAxes)
        return _save(fig, save)
    h = X[:, j]
    for k, name in enumerate(camp.flight_names):
        m = (camp.flight == k) & np.isfinite(h)
        ax.scatter(camp.cbh_km[m], h[m], s=8, alpha=0.6, color=color(k), label=name)
    lim = [0, max(float(camp.cbh_km.max()), float(np.nanpercentile(h, 99))) * 1.05]
    ax.plot(lim, lim, "k--", lw=1, label="1:1")
    ax.set(xlim=lim, ylim=lim, xlabel="lidar CBH (km)", ylabel="shadow-derived height (km)",
           title=f"Shadow geometry vs lidar ({np.isnan(h).mean():.0%} missing)")
    ax.legend(fontsize=8)
    return _save(fig, save)


def cbh_along_track(camp: Campaign, save: str | Path | None = None) -> plt.Figure:
    """CBH against minutes since each flight's first sample."""
    fig, axes = plt.subplots(camp.n_flights, 1, figsize=(9, 1.7 * camp.n_flights), sharey=True, squeeze=False)
    for k, name in enumerate(camp.flight_names):
        idx = camp.flight_indices(k)
        t = (camp.time_utc[idx] - camp.time_utc[idx[0]]) / 60
        ax = axes[k, 0]
        ax.plot(t, camp.cbh_km[idx], ".-", ms=3, lw=0.6, color=color(k))
        ax.set_ylabel(f"{name}\nCBH (km)", fontsize=8)
    axes[-1, 0].set_xlabel("minutes since first labelled sample")
    fig.suptitle("CBH along each flight track (strongly autocorrelated: random splits leak)")
    fig.tight_layout()
    return _save(fig, save)


def ks_heatmaps(mats: dict[str, np.ndarray], names: list[str], save: str | Path | None = None) -> plt.Figure:
    """Heatmaps of pairwise KS statistics between flights, one panel per quantity."""
    fig, axes = plt.subplots(1, len(mats), figsize=(5 * len(mats), 4.3), squeeze=False)
    for ax, (title, m) in zip(axes[0], mats.items()):
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        for a in range(len(names)):
            for b in range(len(names)):
                if np.isfinite(m[a, b]):
                    ax.text(b, a, f"{m[a, b]:.2f}", ha="center", va="center", fontsize=7,
                            color="w" if m[a, b] < 0.6 else "k")
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, label="KS statistic")
    fig.suptitle("Pairwise Kolmogorov-Smirnov statistics between flights")
    fig.tight_layout()
    return _save(fig, save)


# --------------------------------------------------------------------------- training


def loss_curves(log: pd.DataFrame, mode: str, save: str | Path | None = None) -> plt.Figure:
    """Training and validation loss per epoch for each fold (LOFO, first seed)."""
    log = log[(log["mode"] == mode) & (log["protocol"] == "lofo")]
    folds = sorted(log["fold"].unique())
    fig, axes = plt.subplots(1, max(1, len(folds)), figsize=(3.2 * max(1, len(folds)), 3), sharey=True, squeeze=False)
    for ax, f in zip(axes[0], folds):
        d = log[(log["fold"] == f) & (log["seed"] == log["seed"].min())].sort_values("epoch")
        d = d.drop_duplicates("epoch", keep="last")
        ax.plot(d["epoch"], d["train_loss"], label="train")
        ax.plot(d["epoch"], d["val_loss"], label="validation (training flights)")
        best = d.loc[d["val_loss"].idxmin()]
        ax.axvline(best["epoch"], color="k", ls=":", lw=1)
        ax.set(title=f"fold {f}: {d['test_flight'].iloc[0]} held out", xlabel="epoch", yscale="log")
    axes[0, 0].set_ylabel("Huber loss (standardised CBH)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{mode}: loss curves (dotted: selected epoch)")
    fig.tight_layout()
    return _save(fig, save)


def pred_vs_true(pred: pd.DataFrame, title: str, save: str | Path | None = None) -> plt.Figure:
    """Predicted against lidar CBH, one panel per held-out flight plus all together."""
    flights = list(dict.fromkeys(pred["flight"]))
    fig, axes = plt.subplots(1, len(flights) + 1, figsize=(3.1 * (len(flights) + 1), 3.2), squeeze=False)
    lim = [0, max(pred["true_km"].max(), pred["pred_km"].max()) * 1.05]
    for i, fl in enumerate(flights + ["all"]):
        ax = axes[0, i]
        d = pred if fl == "all" else pred[pred["flight"] == fl]
        for k, f2 in enumerate(flights):
            dd = d[d["flight"] == f2]
            ax.scatter(dd["true_km"], dd["pred_km"], s=6, alpha=0.6, color=color(k), label=f2 if fl == "all" else None)
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set(xlim=lim, ylim=lim, title=fl, xlabel="lidar CBH (km)")
    axes[0, 0].set_ylabel("predicted CBH (km)")
    axes[0, -1].legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, save)


def fold_bars(folds: list[dict[str, Any]], clim: list[dict[str, Any]], title: str,
              save: str | Path | None = None) -> plt.Figure:
    """R2, MAE and RMSE per held-out flight, model beside climatology."""
    names = [f["test_flight"] for f in folds]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, lab in zip(axes, ("r2", "mae_km", "rmse_km"), ("R2", "MAE (m)", "RMSE (m)")):
        scale = 1 if key == "r2" else 1000
        ax.bar(x - 0.2, [f[key] * scale for f in folds], 0.4, label="model")
        ax.bar(x + 0.2, [c[key] * scale for c in clim], 0.4, label="climatology", color="0.6")
        ax.set_xticks(x, names, rotation=30, fontsize=8)
        ax.set_title(lab)
        if key == "r2":
            ax.axhline(0, color="k", lw=0.8)
            lo = min(-1.0, min(f[key] for f in folds))
            ax.set_ylim(max(lo, -5), 1)
    axes[0].legend(fontsize=8)
    fig.suptitle(title + "  (R2 axis clipped at -5)")
    fig.tight_layout()
    return _save(fig, save)


def attention_weights(units: list[dict[str, Any]], tokens: list[str], n_phys: int,
                      grid: tuple[int, int] | None, save: str | Path | None = None) -> plt.Figure:
    """Mean attention per physical variable (per fold) and per image region (all folds)."""
    A = np.array([u["attention_mean"] for u in units])  # [folds, T]
    spread = np.array([np.std(np.array(u["attention_test"]), axis=0) for u in units]).mean(0)
    n_cols = 2 if grid and A.shape[1] > n_phys else 1
    fig, axes = plt.subplots(1, n_cols, figsize=(7 * n_cols, 4), squeeze=False)
    ax = axes[0, 0]
    x = np.arange(n_phys)
    for i, u in enumerate(units):
        ax.plot(x, A[i, :n_phys], "o-", ms=3, label=f"{u['test_flight']} held out")
    ax.errorbar(x, A[:, :n_phys].mean(0), yerr=spread[:n_phys], fmt="k_", lw=1, label="mean +- sample std")
    ax.set_xticks(x, tokens[:n_phys], rotation=60, fontsize=7)
    ax.set(ylabel="attention weight (mean over test samples and heads)", title="Attention per physical variable")
    ax.legend(fontsize=6)
    if n_cols == 2:
        reg = A[:, n_phys:].mean(0).reshape(grid)
        im = axes[0, 1].imshow(reg, cmap="magma")
        axes[0, 1].set_title("Attention per image region (mean over folds)")
        axes[0, 1].set_xlabel("region column")
        axes[0, 1].set_ylabel("region row")
        fig.colorbar(im, ax=axes[0, 1])
    fig.tight_layout()
    return _save(fig, save)


def reconstructions(images: np.ndarray, masked: np.ndarray, recon: np.ndarray, save: str | Path | None = None) -> plt.Figure:
    """Rows of (input, masked input, reconstruction), channel 0. Arrays [n, H, W]."""
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.4 * n), squeeze=False)
    for i in range(n):
        vmin, vmax = np.percentile(images[i], [1, 99])
        for j, (img, title) in enumerate(((images[i], "input"), (masked[i], "masked (75 %)"), (recon[i], "reconstruction"))):
            axes[i, j].imshow(img, cmap="inferno", vmin=vmin, vmax=vmax)
            axes[i, j].set_title(title, fontsize=8)
            axes[i, j].axis("off")
    fig.suptitle("MAE: masked inputs and reconstructions (normalised units)")
    fig.tight_layout()
    return _save(fig, save)


def pretrain_curves(histories: dict[str, list[float]], save: str | Path | None = None) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, h in histories.items():
        ax.plot(np.arange(1, len(h) + 1), h, "o-", ms=3, label=key)
    ax.set(xlabel="epoch", ylabel="masked-patch MSE (normalised)", title="MAE pretraining loss per encoder")
    ax.legend(fontsize=7)
    return _save(fig, save)


# --------------------------------------------------------------------------- comparison


def per_flight_bars(long: pd.DataFrame, protocol: str, ceiling: dict[str, float] | None = None,
                    save: str | Path | None = None) -> plt.Figure:
    """R2 and MAE per flight for every model under one protocol; climatology as a line."""
    d = long[long["protocol"] == protocol]
    flights = list(dict.fromkeys(d["flight"]))
    models = [m for m in dict.fromkeys(d["model"]) if m != "climatology"]
    x = np.arange(len(flights))
    width = 0.8 / max(1, len(models))
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2))
    for ax, key, lab in ((axes[0], "r2", "R2"), (axes[1], "mae_m", "MAE (m)")):
        for i, m in enumerate(models):
            dm = d[d["model"] == m].set_index("flight").reindex(flights)
            ax.bar(x - 0.4 + width * (i + 0.5), dm[key], width, label=m)
        clim = d[d["model"] == "climatology"].set_index("flight").reindex(flights)
        if len(clim.dropna(how="all")):
            ax.hlines(clim[key], x - 0.45, x + 0.45, colors="k", lw=2, label="climatology")
        if key == "r2" and ceiling:
            ax.hlines([ceiling.get(f, np.nan) for f in flights], x - 0.45, x + 0.45, colors="tab:green",
                      linestyles="--", lw=1.5, label="best achievable (truth)")
        ax.set_xticks(x, flights)
        ax.set_title(f"{lab} per held-out flight ({protocol})")
        if key == "r2":
            ax.axhline(0, color="0.4", lw=0.6)
            ax.set_ylim(max(-3, float(np.nanmin(d["r2"])) - 0.1), 1.05)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("Per-flight skill (R2 axis clipped at -3)")
    fig.tight_layout()
    return _save(fig, save)


def protocol_inflation(wide: pd.DataFrame, save: str | Path | None = None) -> plt.Figure:
    """Pooled R2 of every model under each protocol: the random split's inflation."""
    models = list(dict.fromkeys(wide["model"]))
    protos = [p for p in ("lofo", "within_flight", "random") if p in set(wide["protocol"])]
    x = np.arange(len(models))
    w = 0.8 / max(1, len(protos))
    fig, ax = plt.subplots(figsize=(10, 4))
    labels = {"lofo": "leave-one-flight-out (honest)", "within_flight": "time blocks within flight",
              "random": "pooled random K-fold (leaky)"}
    for i, p in enumerate(protos):
        d = wide[wide["protocol"] == p].set_index("model").reindex(models)
        ax.bar(x - 0.4 + w * (i + 0.5), d["pooled R2"].clip(lower=-1), w, label=labels[p])
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, models, rotation=20)
    ax.set(ylabel="R2 pooled over held-out predictions (clipped at -1)", ylim=(-1, 1.05),
           title="Same models, different splits: what a random split hides")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, save)


def regime_box(err: pd.DataFrame, save: str | Path | None = None) -> plt.Figure:
    """Absolute error per CBH regime for each model (LOFO)."""
    models = list(dict.fromkeys(err["model"]))
    regimes = [r for r in ("low (< 0.5 km)", "mid (0.5-1 km)", "high (> 1 km)") if r in set(err["regime"])]
    fig, ax = plt.subplots(figsize=(11, 4))
    w = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        data = [err[(err["model"] == m) & (err["regime"] == r)]["abs_error_m"] for r in regimes]
        pos = np.arange(len(regimes)) - 0.4 + w * (i + 0.5)
        bp = ax.boxplot(data, positions=pos, widths=w * 0.9, patch_artist=True, showfliers=False)
        for b in bp["boxes"]:
            b.set_facecolor(color(i))
            b.set_alpha(0.7)
        ax.plot([], [], color=color(i), lw=6, label=m)
    ax.set_xticks(range(len(regimes)), regimes)
    ax.set(ylabel="absolute error (m)", title="Error against cloud-base regime (leave-one-flight-out)")
    ax.legend(fontsize=7, ncol=3)
    return _save(fig, save)


def few_shot_plot(curve: pd.DataFrame, save: str | Path | None = None) -> plt.Figure:
    """Mean per-flight R2 and MAE against k labelled target-flight samples (+- std over repeats)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for i, (m, d) in enumerate(curve.groupby("model", sort=False)):
        axes[0].errorbar(d["k"], d["r2_mean"], yerr=d["r2_std"], marker="o", ms=4, capsize=3, label=m, color=color(i))
        axes[1].errorbar(d["k"], d["mae_km_mean"] * 1000, yerr=d["mae_km_std"] * 1000, marker="o", ms=4, capsize=3,
                         color=color(i))
    axes[0].set(xlabel="k labelled samples from the held-out flight", ylabel="mean of per-flight R2",
                title="Few-shot recalibration (k = 0: plain leave-one-flight-out)")
    axes[0].set_ylim(max(-3, float(curve["r2_mean"].min()) - 0.2), 1)
    axes[0].axhline(0, color="0.5", lw=0.6)
    axes[1].set(xlabel="k", ylabel="mean of per-flight MAE (m)", title="MAE")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, save)


def coverage_plot(conf: pd.DataFrame, nominal: float = 0.9, save: str | Path | None = None) -> plt.Figure:
    """Coverage of 90 % conformal intervals per flight: cross-flight vs target-flight calibration."""
    models = list(dict.fromkeys(conf["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.8), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], models):
        d = conf[conf["model"] == m]
        flights = list(dict.fromkeys(d["flight"]))
        x = np.arange(len(flights))
        for i, (cal, dd) in enumerate(d.groupby("calibration", sort=False)):
            dd = dd.set_index("flight").reindex(flights)
            ax.bar(x - 0.2 + 0.4 * i, dd["coverage"], 0.4, label=cal)
        ax.axhline(nominal, color="k", ls="--", lw=1)
        ax.set_xticks(x, flights, rotation=45, fontsize=7)
        ax.set_title(m, fontsize=9)
        ax.set_ylim(0, 1.05)
    axes[0, 0].set_ylabel(f"coverage of {nominal:.0%} intervals")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Split-conformal coverage per held-out flight (dashed: nominal)")
    fig.tight_layout()
    return _save(fig, save)


def shift_heatmap(ks: pd.DataFrame, save: str | Path | None = None) -> plt.Figure:
    """KS statistic of each feature: held-out flight vs its training flights."""
    fig, ax = plt.subplots(figsize=(1.2 * ks.shape[1] + 3, 0.35 * ks.shape[0] + 1.5))
    im = ax.imshow(ks.to_numpy(float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(ks.shape[1]), ks.columns)
    ax.set_yticks(range(ks.shape[0]), ks.index, fontsize=8)
    for i in range(ks.shape[0]):
        for j in range(ks.shape[1]):
            v = ks.iat[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=ax, label="KS statistic")
    ax.set_title("Domain shift: each flight against the other flights (KS, per feature)")
    fig.tight_layout()
    return _save(fig, save)


def pca_scatter(projections: dict[str, tuple[np.ndarray, np.ndarray]], flight: np.ndarray, names: list[str],
                save: str | Path | None = None) -> plt.Figure:
    """2-D PCA projections (one panel each), coloured by flight."""
    fig, axes = plt.subplots(1, len(projections), figsize=(5.5 * len(projections), 4.5), squeeze=False)
    for ax, (title, (Z, evr)) in zip(axes[0], projections.items()):
        for k, name in enumerate(names):
            m = flight == k
            ax.scatter(Z[m, 0], Z[m, 1], s=6, alpha=0.6, color=color(k), label=name)
        ax.set(xlabel=f"PC1 ({evr[0]:.0%})", ylabel=f"PC2 ({evr[1]:.0%})", title=title)
    axes[0, 0].legend(fontsize=7, markerscale=2)
    fig.suptitle("Where each flight sits: PCA of image embeddings and of physical features")
    fig.tight_layout()
    return _save(fig, save)
