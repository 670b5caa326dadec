"""Figures of the exploration notebook."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from cbhlib.data.campaign import Campaign
from cbhlib.evaluation.explore import lag1
from cbhlib.plots.style import display, flight_color, flight_marker, label, not_drawn, save

SMALL_FLIGHT = 60  # flights with at most this many samples get every sample drawn over their box

# y-axis labels of the image statistics (brightness-temperature images; counts otherwise)
STAT_LABELS = {
    "std": "standard deviation ({u})",
    "p95_p05": "95th − 5th percentile ({u})",
    "p99_p01": "99th − 1st percentile ({u})",
    "p95_p50": "95th − 50th percentile ({u})",
    "p50_p05": "50th − 5th percentile ({u})",
    "p75_p25": "interquartile range ({u})",
    "warm20_cold20": "warmest − coldest 20 % of pixels ({u})",
    "warm50_cold50": "warmer − colder half of pixels ({u})",
    "cold_frac_q25": "cold-pixel fraction\n(below p95 − 0.25 × (p95 − p05))",
    "cold_frac_q50": "cold-pixel fraction\n(below p95 − 0.5 × (p95 − p05))",
    "cold_frac_q75": "cold-pixel fraction\n(below p95 − 0.75 × (p95 − p05))",
    "gradient": "mean neighbour difference ({u} per pixel)",
    "skewness": "pixel skewness (dimensionless)",
}


def _counts(camp: Campaign) -> np.ndarray:
    return np.bincount(camp.flight, minlength=camp.n_flights)


def _flight_ticks(camp: Campaign, sep: str = "\n") -> list[str]:
    n = _counts(camp)
    return [f"{label(name)}{sep}n={n[k]}" for k, name in enumerate(camp.flight_names)]


def _image_unit(camp: Campaign) -> tuple[str, str]:
    """(long, short) unit of the images' channel 0: known for the synthetic campaign (kelvin; uint16 in
    hundredths of a kelvin); a file from elsewhere records none, so its values are named as stored."""
    synthetic = str(camp.source).startswith("synthetic")
    if camp.image_dtype == np.float32:
        return ("brightness temperature (K)", "K") if synthetic else ("pixel value (units not recorded)", "as stored")
    return ("brightness temperature (0.01 K)", "0.01 K") if synthetic else ("camera counts", "counts")


def cbh_distributions(camp: Campaign, save_to: str | Path | None = None) -> plt.Figure:
    """Empirical CDF of lidar CBH per flight (a 24-sample flight cannot squash the others)."""
    counts = _counts(camp)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for k, name in enumerate(camp.flight_names):
        y = np.sort(camp.cbh_km[camp.flight == k].astype(float))
        if len(y) == 0:
            continue
        ax.step(
            np.concatenate([[y[0]], y]),
            np.arange(len(y) + 1) / len(y),
            where="post",
            lw=1.8,
            color=flight_color(k),
            label=f"{label(name)} (n={counts[k]})",
        )
        ax.plot(np.median(y), 0.5, marker=flight_marker(k), color=flight_color(k), ms=6, mec="k", mew=0.5)
    ax.axhline(0.5, color="0.6", lw=0.6, ls=":")
    ax.set(
        xlabel="lidar cloud base height (km)",
        ylabel="fraction of the flight's samples ≤ CBH",
        ylim=(0, 1.02),
        title="CBH distribution per flight (empirical CDF; markers: medians)",
    )
    ax.legend(title="flight", fontsize=8, loc="lower right")
    return save(fig, save_to)


def _strip(ax: plt.Axes, values: np.ndarray, pos: int, k: int, rng: np.random.Generator) -> None:
    """Every sample of a small flight, jittered over its box."""
    ax.scatter(
        pos + rng.uniform(-0.18, 0.18, len(values)),
        values,
        s=9,
        color=flight_color(k),
        marker=flight_marker(k),
        edgecolor="k",
        linewidth=0.3,
        zorder=3,
    )


def feature_distributions(camp: Campaign, save_to: str | Path | None = None) -> plt.Figure:
    """Box plot of every physical feature per flight, in display units (K, hPa, km); every
    sample of small flights is drawn over its box."""
    X, names = camp.feature_matrix()
    if not names:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "this campaign has no physical features", ha="center", va="center")
        ax.axis("off")
        return save(fig, save_to)
    units = {f"{g}/{n}": u for g, fg in camp.features.items() for n, u in zip(fg.names, fg.units, strict=True)}
    counts = _counts(camp)
    rng = np.random.default_rng(0)
    cols = 4
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.0 * rows), squeeze=False)
    for j, name in enumerate(names):
        ax = axes[j // cols, j % cols]
        values, unit = display(name, X[:, j], units.get(name, ""))
        data = [values[(camp.flight == k) & np.isfinite(values)] for k in range(camp.n_flights)]
        bp = ax.boxplot(data, patch_artist=True, showfliers=False, widths=0.6)
        for k, box in enumerate(bp["boxes"]):
            box.set(facecolor=flight_color(k), alpha=0.6)
        for med in bp["medians"]:
            med.set(color="k")
        for k, d in enumerate(data):
            if 0 < counts[k] <= SMALL_FLIGHT:
                _strip(ax, d, k + 1, k, rng)
        ax.set_xticks(range(1, camp.n_flights + 1), _flight_ticks(camp), fontsize=7)
        ax.set_title(f"{name}" + (f" ({unit})" if unit else ""), fontsize=9)
    for j in range(len(names), rows * cols):
        axes[j // cols, j % cols].axis("off")
    fig.suptitle(
        "Physical features per flight (boxes: quartiles; whiskers: 1.5 IQR; outliers hidden; "
        f"points: every sample of flights with n ≤ {SMALL_FLIGHT})"
    )
    fig.tight_layout()
    return save(fig, save_to)


def feature_correlation_bars(corr: pd.DataFrame, save_to: str | Path | None = None) -> plt.Figure:
    """Correlation of each feature with CBH, pooled over flights (black) and mean within flights
    (white), with each feature's missing fraction at the right."""
    fig, ax = plt.subplots(figsize=(8.5, 0.38 * max(len(corr), 1) + 1.6))
    if len(corr) == 0:
        ax.text(0.5, 0.5, "no physical features", ha="center", va="center")
        ax.axis("off")
        return save(fig, save_to)
    y = np.arange(len(corr))
    ax.barh(y - 0.2, corr["pearson_r"], height=0.4, label="pooled over flights", color="k")
    ax.barh(
        y + 0.2, corr["within_flight_r"], height=0.4, label="mean within a flight", color="white", edgecolor="k", lw=0.8
    )
    ax.set_yticks(y, [label(f) for f in corr["feature"]], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set(
        xlabel="Pearson correlation with lidar CBH",
        title="Feature correlation with CBH",
        xlim=(-1, 1),
        ylim=(len(corr) - 0.5, -0.9),
    )
    missing = corr["missing"] if "missing" in corr else pd.Series(np.nan, index=corr.index)
    tr = ax.get_yaxis_transform()
    ax.text(1.02, -0.75, "missing", transform=tr, fontsize=8, ha="left", va="center", weight="bold")
    for yi, m in zip(y, missing, strict=True):
        ax.text(1.02, yi, "n/a" if not np.isfinite(m) else f"{m:.0%}", transform=tr, fontsize=8, ha="left", va="center")
    ax.legend(fontsize=8, loc="lower left")
    return save(fig, save_to)


def example_images(camp: Campaign, per_flight: int = 3, seed: int = 0, save_to: str | Path | None = None) -> plt.Figure:
    """A few images per flight (channel 0) with their CBH, one colour scale per flight."""
    rng = np.random.default_rng(seed)
    unit, _ = _image_unit(camp)
    fig, axes = plt.subplots(
        camp.n_flights,
        per_flight,
        figsize=(2.6 * per_flight + 1.2, 2.5 * camp.n_flights),
        squeeze=False,
        layout="constrained",
    )
    for k, name in enumerate(camp.flight_names):
        idx = camp.flight_indices(k)
        pick = np.sort(rng.choice(idx, size=min(per_flight, len(idx)), replace=False))
        imgs = camp.images(pick)[:, 0] if len(pick) else np.zeros((0, 1, 1))
        lo, hi = np.nanpercentile(imgs, [1, 99]) if imgs.size else (0.0, 1.0)
        im = None
        for j in range(per_flight):
            ax = axes[k, j]
            ax.axis("off")
            if j < len(pick):
                im = ax.imshow(imgs[j], cmap="inferno", vmin=lo, vmax=hi)
                ax.set_title(f"{label(name)} #{pick[j]}\nCBH {camp.cbh_km[pick[j]]:.2f} km", fontsize=8)
        if im is not None:
            cb = fig.colorbar(im, ax=axes[k, :].tolist(), fraction=0.05, pad=0.02)
            cb.set_label(f"{unit}\n{label(name)}: {lo:.1f} to {hi:.1f}", fontsize=8)
            cb.ax.tick_params(labelsize=7)
    fig.suptitle(
        "Example thermal images (channel 0); one colour scale per flight: 1st-99th percentile of its images shown",
        fontsize=10,
    )
    return save(fig, save_to)


def shadow_vs_lidar(camp: Campaign, save_to: str | Path | None = None) -> plt.Figure | None:
    """Shadow-derived height against lidar CBH, coloured by flight; axes from the data (y cut
    at the 99th percentile, points above it counted). Not drawn (a note says why) without a
    ``derived_geometric_H`` feature or any finite value of it."""
    X, names = camp.feature_matrix()
    j = next((i for i, n in enumerate(names) if n.endswith("derived_geometric_H")), None)
    if j is None or not np.isfinite(X[:, j]).any():
        return not_drawn(
            save_to,
            "this campaign has no shadow-derived height (no feature named derived_geometric_H)"
            if j is None
            else "the shadow-derived height (derived_geometric_H) is missing for every sample of this campaign",
        )
    h = X[:, j]
    fig, ax = plt.subplots(figsize=(6, 5.2))
    for k, name in enumerate(camp.flight_names):
        m = (camp.flight == k) & np.isfinite(h)
        ax.scatter(
            camp.cbh_km[m],
            h[m],
            s=9,
            alpha=0.6,
            color=flight_color(k),
            marker=flight_marker(k),
            label=f"{label(name)} (n={m.sum()})",
        )
    xtop = float(np.nanmax(camp.cbh_km)) * 1.05
    ytop = float(np.nanpercentile(h, 99)) * 1.05 if np.isfinite(h).any() else xtop
    hidden = int(np.sum(np.isfinite(h) & (h > ytop)))
    ax.plot([0, min(xtop, ytop)], [0, min(xtop, ytop)], "k--", lw=1, label="1:1")
    ax.set(
        xlim=(0, xtop),
        ylim=(0, ytop),
        xlabel="lidar CBH (km)",
        ylabel="shadow-derived height (km)",
        title=f"Shadow geometry vs lidar ({np.isnan(h).mean():.0%} missing)",
    )
    if hidden:
        ax.text(
            0.98,
            0.98,
            f"{hidden} points > {ytop:.1f} km not shown",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.8, "lw": 0},
        )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save(fig, save_to)


def _gap_breaks(t: np.ndarray, gap_factor: float) -> tuple[np.ndarray, float]:
    """Indices where the line breaks, and the gap threshold (minutes)."""
    dt = np.diff(t)
    if not len(dt):
        return np.array([], int), float("nan")
    thr = gap_factor * float(np.median(dt))
    return np.flatnonzero(dt > thr) + 1, thr


def cbh_along_track(camp: Campaign, save_to: str | Path | None = None, gap_factor: float = 5.0) -> plt.Figure:
    """CBH against minutes since each flight's first sample; the line breaks at sampling gaps
    longer than ``gap_factor`` times the flight's median spacing. Each panel states its
    duration, lag-1 autocorrelation and gap threshold."""
    fig, axes = plt.subplots(camp.n_flights, 1, figsize=(9, 1.9 * camp.n_flights), sharey=True, squeeze=False)
    for k, name in enumerate(camp.flight_names):
        idx = camp.flight_indices(k)
        ax = axes[k, 0]
        ax.set_ylabel(f"{label(name)}\nCBH (km)", fontsize=8)
        if not len(idx):
            continue
        t = (camp.time_utc[idx] - camp.time_utc[idx[0]]) / 60
        y = camp.cbh_km[idx].astype(float)
        gaps, thr = _gap_breaks(t, gap_factor)
        tt, yy = np.insert(t, gaps, np.nan), np.insert(y, gaps, np.nan)
        ax.plot(tt, yy, lw=0.7, color=flight_color(k))
        ax.plot(t, y, ".", ms=2.5, color=flight_color(k))
        gap = f"gaps > {thr * 60:.0f} s" if np.isfinite(thr) else "no gaps"
        ax.set_title(
            f"{label(name)}: n = {len(idx)}; duration {t[-1]:.0f} min; lag-1 autocorrelation "
            f"{lag1(y):.2f}; line breaks at {gap}",
            loc="left",
            fontsize=8,
        )
    axes[-1, 0].set_xlabel("minutes since the first labelled sample")
    fig.suptitle(
        f"CBH along each flight track (strongly autocorrelated: random splits leak); the line breaks "
        f"at gaps > {gap_factor:g}× the flight's median spacing",
        fontsize=10,
    )
    fig.tight_layout()
    return save(fig, save_to)


def ks_heatmaps(
    mats: dict[str, np.ndarray],
    names: list[str],
    save_to: str | Path | None = None,
    n: list[int] | np.ndarray | None = None,
) -> plt.Figure:
    """Heatmaps of pairwise KS statistics between flights, one panel per quantity; the trivial
    diagonal is masked; ``n`` (samples per flight) goes into the tick labels."""
    fig, axes = plt.subplots(1, len(mats), figsize=(5.4 * len(mats), 4.6), squeeze=False)
    ticks = [label(f) + (f" (n={n[k]})" if n is not None else "") for k, f in enumerate(names)]
    for ax, (title, m) in zip(axes[0], mats.items(), strict=True):
        sns.heatmap(
            pd.DataFrame(m, index=ticks, columns=ticks),
            mask=np.eye(len(names), dtype=bool),
            vmin=0,
            vmax=1,
            cmap="viridis",
            annot=True,
            fmt=".2f",
            annot_kws={"fontsize": 7},
            cbar_kws={"label": "KS statistic"},
            ax=ax,
            square=True,
        )
        ax.set_title(title, fontsize=10)
        ax.set(xlabel="flight", ylabel="flight")
        ax.tick_params(labelsize=8)
    fig.suptitle("Pairwise Kolmogorov-Smirnov statistics between flights (0: same distribution; diagonal masked)")
    fig.tight_layout()
    return save(fig, save_to)


def image_stats_scatter(
    stats: np.ndarray,
    names: list[str],
    camp: Campaign,
    which: tuple[str, ...] = ("p95_p05", "warm20_cold20", "cold_frac_q50"),
    save_to: str | Path | None = None,
) -> plt.Figure:
    """A few calibration-free image statistics against CBH, by flight, with units on the y-axes."""
    _, short = _image_unit(camp)
    fig, axes = plt.subplots(1, len(which), figsize=(4.5 * len(which), 3.9), squeeze=False)
    for ax, stat in zip(axes[0], which, strict=True):
        j = names.index(stat)
        for k, name in enumerate(camp.flight_names):
            m = camp.flight == k
            ax.scatter(
                camp.cbh_km[m],
                stats[m, j],
                s=6,
                alpha=0.5,
                color=flight_color(k),
                marker=flight_marker(k),
                label=f"{label(name)} (n={m.sum()})",
            )
        ax.set(xlabel="lidar CBH (km)", title=stat)
        ax.set_ylabel(STAT_LABELS.get(stat, stat).format(u=short), fontsize=9)
    axes[0, 0].legend(fontsize=7, markerscale=2)
    fig.suptitle("Image statistics that carry height (through brightness-temperature contrast)")
    fig.tight_layout()
    return save(fig, save_to)
