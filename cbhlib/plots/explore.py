"""Figures of the exploration notebook."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from cbhlib.campaign import Campaign
from cbhlib.plots.style import display, flight_color, label, save


def _palette(camp: Campaign) -> dict[str, tuple[float, float, float]]:
    return {label(n): flight_color(k) for k, n in enumerate(camp.flight_names)}


def _flights(camp: Campaign) -> list[str]:
    return [label(camp.flight_names[k]) for k in camp.flight]


def cbh_distributions(camp: Campaign, save_to: str | Path | None = None) -> plt.Figure:
    """Histogram of lidar CBH per flight (step outlines, density)."""
    counts = np.bincount(camp.flight, minlength=camp.n_flights)
    df = pd.DataFrame({"CBH (km)": camp.cbh_km,
                       "flight": [f"{label(camp.flight_names[k])} (n={counts[k]})" for k in camp.flight]})
    pal = {f"{label(n)} (n={counts[k]})": flight_color(k) for k, n in enumerate(camp.flight_names)}
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.histplot(df, x="CBH (km)", hue="flight", palette=pal, element="step", fill=False, stat="density",
                 common_norm=False, binwidth=0.06, ax=ax, linewidth=1.8)
    ax.set(xlabel="lidar cloud base height (km)", title="CBH distribution per flight")
    return save(fig, save_to)


def feature_distributions(camp: Campaign, save_to: str | Path | None = None) -> plt.Figure:
    """Box plot of every physical feature per flight, in display units (K, hPa, km)."""
    X, names = camp.feature_matrix()
    if not names:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "this campaign has no physical features", ha="center", va="center")
        ax.axis("off")
        return save(fig, save_to)
    units = {f"{g}/{n}": u for g, fg in camp.features.items() for n, u in zip(fg.names, fg.units)}
    cols = 4
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for j, name in enumerate(names):
        ax = axes[j // cols, j % cols]
        values, unit = display(name, X[:, j], units.get(name, ""))
        data = [values[(camp.flight == k) & np.isfinite(values)] for k in range(camp.n_flights)]
        bp = ax.boxplot(data, patch_artist=True, showfliers=False, widths=0.6)
        for k, box in enumerate(bp["boxes"]):
            box.set(facecolor=flight_color(k), alpha=0.75)
        for med in bp["medians"]:
            med.set(color="k")
        ax.set_xticks(range(1, camp.n_flights + 1), [label(n) for n in camp.flight_names], rotation=45, fontsize=7)
        ax.set_title(f"{name}" + (f" ({unit})" if unit else ""), fontsize=9)
    for j in range(len(names), rows * cols):
        axes[j // cols, j % cols].axis("off")
    fig.suptitle("Physical features per flight (boxes: quartiles; whiskers: 1.5 IQR)")
    fig.tight_layout()
    return save(fig, save_to)


def feature_correlation_bars(corr: pd.DataFrame, save_to: str | Path | None = None) -> plt.Figure:
    """Correlation of each feature with CBH, pooled over flights and mean within flights."""
    fig, ax = plt.subplots(figsize=(8, 0.35 * max(len(corr), 1) + 1.5))
    if len(corr) == 0:
        ax.text(0.5, 0.5, "no physical features", ha="center", va="center")
        ax.axis("off")
        return save(fig, save_to)
    y = np.arange(len(corr))
    ax.barh(y - 0.2, corr["pearson_r"], height=0.4, label="pooled over flights", color="#4c72b0")
    ax.barh(y + 0.2, corr["within_flight_r"], height=0.4, label="mean within a flight", color="#dd8452")
    ax.set_yticks(y, corr["feature"], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel="Pearson correlation with lidar CBH", title="Feature correlation with CBH", xlim=(-1, 1))
    ax.legend(fontsize=8)
    ax.invert_yaxis()
    return save(fig, save_to)


def example_images(camp: Campaign, per_flight: int = 3, seed: int = 0, save_to: str | Path | None = None) -> plt.Figure:
    """A few images per flight (channel 0) with their CBH; colour bars in kelvin (or counts)."""
    rng = np.random.default_rng(seed)
    unit = "brightness temperature (K)" if camp.image_dtype == np.float32 else "camera counts"
    fig, axes = plt.subplots(camp.n_flights, per_flight, figsize=(2.7 * per_flight, 2.4 * camp.n_flights), squeeze=False)
    for k, name in enumerate(camp.flight_names):
        idx = camp.flight_indices(k)
        pick = np.sort(rng.choice(idx, size=min(per_flight, len(idx)), replace=False))
        imgs = camp.images(pick)
        for j in range(per_flight):
            ax = axes[k, j]
            ax.axis("off")
            if j < len(pick):
                im = ax.imshow(imgs[j, 0], cmap="inferno")
                ax.set_title(f"{label(name)} #{pick[j]}\nCBH {camp.cbh_km[pick[j]]:.2f} km", fontsize=8)
                cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
                cb.ax.tick_params(labelsize=6)
                if j == per_flight - 1:
                    cb.set_label(unit, fontsize=6)
    fig.suptitle(f"Example thermal images (channel 0; colour: {unit})")
    fig.tight_layout()
    return save(fig, save_to)


def shadow_vs_lidar(camp: Campaign, save_to: str | Path | None = None) -> plt.Figure:
    """Shadow-derived height against lidar CBH, coloured by flight."""
    X, names = camp.feature_matrix()
    j = next((i for i, n in enumerate(names) if n.endswith("derived_geometric_H")), None)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if j is None:
        ax.text(0.5, 0.5, "no derived_geometric_H feature in this campaign", ha="center", transform=ax.transAxes)
        return save(fig, save_to)
    h = X[:, j]
    for k, name in enumerate(camp.flight_names):
        m = (camp.flight == k) & np.isfinite(h)
        ax.scatter(camp.cbh_km[m], h[m], s=8, alpha=0.6, color=flight_color(k), label=f"{label(name)} (n={m.sum()})")
    top = max(float(camp.cbh_km.max()), float(np.nanpercentile(h, 99))) * 1.05
    ax.plot([0, top], [0, top], "k--", lw=1, label="1:1")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="lidar CBH (km)", ylabel="shadow-derived height (km)",
           title=f"Shadow geometry vs lidar ({np.isnan(h).mean():.0%} missing)")
    ax.legend(fontsize=7)
    return save(fig, save_to)


def cbh_along_track(camp: Campaign, save_to: str | Path | None = None, gap_factor: float = 5.0) -> plt.Figure:
    """CBH against minutes since each flight's first sample; the line breaks at sampling gaps
    longer than ``gap_factor`` times the flight's median spacing."""
    fig, axes = plt.subplots(camp.n_flights, 1, figsize=(9, 1.7 * camp.n_flights), sharey=True, squeeze=False)
    for k, name in enumerate(camp.flight_names):
        idx = camp.flight_indices(k)
        t = (camp.time_utc[idx] - camp.time_utc[idx[0]]) / 60
        y = camp.cbh_km[idx].astype(float)
        dt = np.diff(t)
        gaps = np.flatnonzero(dt > gap_factor * np.median(dt)) + 1 if len(dt) else np.array([], int)
        tt, yy = np.insert(t, gaps, np.nan), np.insert(y, gaps, np.nan)
        ax = axes[k, 0]
        ax.plot(tt, yy, lw=0.7, color=flight_color(k))
        ax.plot(t, y, ".", ms=2.5, color=flight_color(k))
        ax.set_ylabel(f"{label(name)}\nCBH (km)", fontsize=8)
    axes[-1, 0].set_xlabel("minutes since the first labelled sample")
    fig.suptitle("CBH along each flight track (strongly autocorrelated: random splits leak)")
    fig.tight_layout()
    return save(fig, save_to)


def ks_heatmaps(mats: dict[str, np.ndarray], names: list[str], save_to: str | Path | None = None) -> plt.Figure:
    """Heatmaps of pairwise KS statistics between flights, one panel per quantity."""
    fig, axes = plt.subplots(1, len(mats), figsize=(5.2 * len(mats), 4.4), squeeze=False)
    ticks = [label(n) for n in names]
    for ax, (title, m) in zip(axes[0], mats.items()):
        sns.heatmap(pd.DataFrame(m, index=ticks, columns=ticks), vmin=0, vmax=1, cmap="viridis", annot=True, fmt=".2f",
                    annot_kws={"fontsize": 7}, cbar_kws={"label": "KS statistic"}, ax=ax, square=True)
        ax.set_title(title, fontsize=10)
    fig.suptitle("Pairwise Kolmogorov-Smirnov statistics between flights (0: same distribution)")
    fig.tight_layout()
    return save(fig, save_to)


def image_stats_scatter(stats: np.ndarray, names: list[str], camp: Campaign, which: tuple[str, ...] = (
        "p95_p05", "warm20_cold20", "cold_frac_q50"), save_to: str | Path | None = None) -> plt.Figure:
    """A few calibration-free image statistics against CBH, by flight."""
    fig, axes = plt.subplots(1, len(which), figsize=(4.2 * len(which), 3.6), squeeze=False)
    for ax, stat in zip(axes[0], which):
        j = names.index(stat)
        for k, name in enumerate(camp.flight_names):
            m = camp.flight == k
            ax.scatter(camp.cbh_km[m], stats[m, j], s=5, alpha=0.5, color=flight_color(k), label=label(name))
        ax.set(xlabel="lidar CBH (km)", title=stat)
    axes[0, 0].legend(fontsize=7, markerscale=2)
    fig.suptitle("Image statistics that carry height (through brightness-temperature contrast)")
    fig.tight_layout()
    return save(fig, save_to)
