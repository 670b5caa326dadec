"""Figures of adaptation to a new flight: few-shot curves and interval coverage per flight."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from cbhlib.plots.style import (
    flight_color,
    flight_marker,
    is_baseline,
    label,
    model_color,
    model_marker,
    order_models,
    save,
)


def few_shot_plot(curve: pd.DataFrame, draw: str = "first", save_to: str | Path | None = None) -> plt.Figure:
    """Mean per-flight MAE against k labelled samples of the held-out flight, for the headline
    ``draw`` only: rows = recalibration method (offset, linear), columns = baselines and
    fusion modes. The other draw appears as one faint reference line per panel (the mean over
    the panel's models). R2 per k stays in the table (unstable on small flights)."""
    methods = [m for m in ("offset", "linear") if m in set(curve["method"])] or list(dict.fromkeys(curve["method"]))
    groups = (
        ("baselines", [m for m in order_models(curve["model"]) if is_baseline(m)]),
        ("fusion modes", [m for m in order_models(curve["model"]) if not is_baseline(m)]),
    )
    groups = tuple(g for g in groups if g[1])
    fig, axes = plt.subplots(
        len(methods),
        len(groups),
        figsize=(6.2 * len(groups), 3.3 * len(methods) + 1.2),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    other = next((d for d in dict.fromkeys(curve["draw"]) if d != draw), None)
    for r, meth in enumerate(methods):
        for c, (gname, models) in enumerate(groups):
            ax = axes[r, c]
            d = curve[(curve["method"] == meth) & curve["model"].isin(models)]
            for m in models:
                dm = d[(d["model"] == m) & (d["draw"] == draw)].sort_values("k")
                ax.plot(
                    dm["k"],
                    dm["mae_m"],
                    color=model_color(m),
                    marker=model_marker(m),
                    ms=5,
                    lw=1.4,
                    mec="k" if is_baseline(m) else model_color(m),
                    mew=0.5,
                    label=label(m),
                )
            if other is not None:
                ref = d[d["draw"] == other].groupby("k")["mae_m"].mean()
                ax.plot(
                    ref.index,
                    ref.to_numpy(),
                    color="k",
                    ls=":",
                    lw=1.2,
                    alpha=0.45,
                    label=f"{other} k (optimistic): mean of these models",
                )
            ax.set_title(f"{meth} recalibration: {gname}", fontsize=10)
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel("mean of per-flight MAE (m)")
            if r == len(methods) - 1:
                ax.set_xlabel("k labelled samples of the held-out flight")
                ax.legend(fontsize=7.5, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    fig.suptitle(
        f"Few-shot recalibration on the {draw} k samples in time (the headline draw); offset: add their "
        "mean residual, linear: also correct the slope\n(R2 per k: table comparison_few_shot)",
        fontsize=10,
    )
    fig.tight_layout()
    return save(fig, save_to)


def coverage_dots(
    conf: pd.DataFrame, nominal: float = 0.9, save_to: str | Path | None = None, headline_draw: str = "first"
) -> plt.Figure:
    """Coverage per model (rows, shared order) and held-out flight, one panel per calibration;
    target-flight calibration split by draw: filled = first k in time (headline), hollow = k
    random (optimistic). Mean over seeds (and random repeats)."""
    c = conf.assign(draw=conf["draw"].fillna("") if "draw" in conf else "")
    per = (
        c.groupby(["model", "calibration", "draw", "flight"], sort=False)
        .agg(coverage=("coverage", "mean"), n_scored=("n_scored", "max"))
        .reset_index()
    )
    models = order_models(per["model"])
    cals = list(dict.fromkeys(per["calibration"]))
    flights = list(dict.fromkeys(per["flight"]))
    n_total = per.groupby("flight")["n_scored"].max()
    ypos = {m: i for i, m in enumerate(models)}
    fig, axes = plt.subplots(
        1, len(cals), figsize=(5.8 * len(cals) + 2.4, 0.42 * len(models) + 2.0), sharey=True, squeeze=False
    )
    for ax, cal in zip(axes[0], cals, strict=True):
        dc = per[per["calibration"] == cal]
        for j, fl in enumerate(flights):
            df = dc[dc["flight"] == fl]
            off = (j - (len(flights) - 1) / 2) * 0.13
            draws = list(dict.fromkeys(df["draw"]))
            for dr in draws:
                d = df[df["draw"] == dr]
                ys = d["model"].map(ypos).to_numpy(float) + off
                hollow = dr not in ("", headline_draw)
                ax.scatter(
                    d["coverage"],
                    ys,
                    marker=flight_marker(j),
                    s=30,
                    zorder=3,
                    facecolors="white" if hollow else flight_color(j),
                    edgecolors=flight_color(j),
                    linewidths=1.2,
                )
            if len(draws) > 1:
                wide = df.pivot_table(index="model", columns="draw", values="coverage")
                for m, row in wide.iterrows():
                    ax.plot(
                        row.to_numpy(float),
                        [ypos[m] + off] * len(row),
                        color=flight_color(j),
                        lw=0.6,
                        alpha=0.6,
                        zorder=2,
                    )
        ax.axvline(nominal, color="k", ls="--", lw=1)
        scored = dc.groupby("flight")["n_scored"].max()
        ax.set(xlim=(-0.03, 1.03), title=f"calibration: {cal}", xlabel=f"coverage of {nominal:.0%} intervals")
        ax.text(
            0.01,
            -0.13,
            "scored: " + ", ".join(f"{label(f)} {scored.get(f, 0)}" for f in flights),
            transform=ax.transAxes,
            fontsize=7,
            va="top",
        )
        ax.set_yticks(np.arange(len(models)), [label(m) for m in models], fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_ylim(len(models) - 0.5, -0.5)
    fl_handles = [
        Line2D(
            [],
            [],
            ls="",
            marker=flight_marker(j),
            color=flight_color(j),
            ms=6,
            label=f"{label(fl)} (n = {n_total[fl]})",
        )
        for j, fl in enumerate(flights)
    ]
    draw_handles = [
        Line2D([], [], ls="", marker="o", mfc="k", mec="k", label=f"{headline_draw} k in time (headline)"),
        Line2D([], [], ls="", marker="o", mfc="white", mec="k", label="k random (optimistic)"),
        Line2D([], [], color="k", ls="--", label=f"nominal {nominal:.0%}"),
    ]
    leg = axes[0, -1].legend(
        handles=fl_handles,
        fontsize=8,
        title="held-out flight",
        title_fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0,
    )
    axes[0, -1].add_artist(leg)
    axes[0, -1].legend(
        handles=draw_handles,
        fontsize=8,
        title="target-flight calibration",
        title_fontsize=8,
        loc="lower left",
        bbox_to_anchor=(1.02, 0.0),
        borderaxespad=0,
    )
    fig.suptitle("Split-conformal coverage per model and held-out flight (mean over seeds and random draws)")
    fig.tight_layout()
    return save(fig, save_to)
