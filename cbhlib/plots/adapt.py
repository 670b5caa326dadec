"""Figures of adaptation to a new flight: few-shot curves and interval coverage per flight."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from cbhlib.evaluation.intervals import bounds
from cbhlib.plots.style import (
    flight_color,
    flight_marker,
    is_adapted,
    is_baseline,
    label,
    line_color,
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
                    ls="--" if is_adapted(m) else "-",  # a flight-normalised variant: dashed, hollow
                    mfc="white" if is_adapted(m) else model_color(m),
                    mec="k" if is_baseline(m) else model_color(m),
                    mew=0.5 if is_baseline(m) or not is_adapted(m) else 1.2,
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
    table: pd.DataFrame,
    nominal: float = 0.9,
    save_to: str | Path | None = None,
    flight_level: float | None = None,
    methods: dict[str, str] | None = None,
) -> plt.Figure:
    """Coverage per model (rows, shared order) and held-out flight (markers), one panel per
    interval method (:mod:`cbhlib.evaluation.intervals`), mean over seeds; the worst flight of
    each model is ringed. Dashed: nominal; dotted: the flight-level bound (F-1)/F (``flight_level``)."""
    from cbhlib.evaluation.intervals import SHORT

    methods = methods or SHORT
    per = (
        table.groupby(["model", "method", "flight"], sort=False)
        .agg(coverage=("coverage", "mean"), n_scored=("n_scored", "max"))
        .reset_index()
    )
    models = order_models(per["model"])
    shown = [m for m in methods if m in set(per["method"])]
    flights = list(dict.fromkeys(per["flight"]))
    ypos = {m: i for i, m in enumerate(models)}
    offset = {fl: (j - (len(flights) - 1) / 2) * 0.12 for j, fl in enumerate(flights)}  # flights side by side
    ncols = min(4, len(shown))
    nrows = -(-len(shown) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.6 * ncols + 2.6, nrows * (0.36 * len(models) + 1.2) + 1.0),
        sharey=True,
        squeeze=False,
    )
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    for ax, method in zip(axes.flat, shown, strict=False):
        dm = per[per["method"] == method]
        for j, fl in enumerate(flights):
            d = dm[dm["flight"] == fl]
            ax.scatter(d["coverage"], d["model"].map(ypos).to_numpy(float) + offset[fl], marker=flight_marker(j),
                       s=26, color=flight_color(j), zorder=3)  # fmt: skip
        worst = dm.loc[dm.groupby("model")["coverage"].idxmin()]  # ringed where its flight's marker sits
        ax.scatter(worst["coverage"], worst["model"].map(ypos) + worst["flight"].map(offset), s=150,
                   facecolors="none", edgecolors="k", lw=1.0, zorder=4)  # fmt: skip
        ax.axvline(nominal, color="k", ls="--", lw=1)
        if flight_level:
            ax.axvline(flight_level, color="C3", ls=":", lw=1.4)
        ax.set(xlim=(-0.03, 1.03), xlabel=f"coverage of {nominal:.0%} intervals")
        ax.set_title(label(methods[method]), fontsize=8.5)
        ax.set_yticks(np.arange(len(models)), [label(m) for m in models], fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_ylim(len(models) - 0.5, -0.5)
    n_total = per.groupby("flight")["n_scored"].max()
    handles = [
        Line2D([], [], ls="", marker=flight_marker(j), color=flight_color(j), ms=6,
               label=f"{label(fl)} (n = {n_total[fl]})")
        for j, fl in enumerate(flights)
    ]  # fmt: skip
    handles += [
        Line2D([], [], ls="", marker="o", mfc="none", mec="k", ms=10, label="worst flight (the headline)"),
        Line2D([], [], color="k", ls="--", label=f"nominal {nominal:.0%}"),
    ]
    if flight_level:
        handles.append(
            Line2D([], [], color="C3", ls=":", label=f"flight-level bound (F-1)/F = {flight_level:.0%} (F flights)")
        )
    axes[0, -1].legend(handles=handles, fontsize=8, title="held-out flight", title_fontsize=8, loc="upper left",
                       bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # fmt: skip
    fig.suptitle(
        "Coverage of prediction intervals on each held-out flight (leave-one-flight-out, mean over seeds); "
        "online methods and first-k scored on the samples after the first k"
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the suptitle
    return save(fig, save_to)


def intervals_along_track(
    pred: pd.DataFrame,
    model: str | Sequence[str],
    half_widths: dict[str, dict[str, np.ndarray]] | None = None,
    shifts: dict[str, dict[str, np.ndarray]] | None = None,
    save_to: str | Path | None = None,
    ncols: int = 3,
    title: str | None = None,
) -> plt.Figure:
    """One panel per held-out flight: lidar CBH and the prediction of each model along the track
    (first seed), with the interval band of each method given around the first model's.

    Args:
        pred: tidy LOFO predictions (one seed is drawn).
        model: a model, or several (the first carries the bands; baselines dashed).
        half_widths: method -> flight -> (n,) half-widths in km, in time order; none: no bands.
        shifts: method -> flight -> (n,) centre shifts in km of bands not centred on the prediction.
    """
    models = [model] if isinstance(model, str) else list(model)
    d0 = pred[pred["model"].isin(models)]
    d0 = d0[d0["seed"] == d0["seed"].min()]
    flights = list(dict.fromkeys(d0["flight"]))
    n = len(flights)
    rows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(rows, min(ncols, n), figsize=(5.2 * min(ncols, n), 3.3 * rows), squeeze=False)
    lines = ["#9467bd", "#8c564b"]  # the methods after the first: edges only (no model colour), nothing blends
    for ax, fl in zip(axes.flat, flights, strict=False):
        for i, m in enumerate(models):
            d = d0[(d0["flight"] == fl) & (d0["model"] == m)].sort_values("time_utc")
            t = pd.to_datetime(d["time_utc"])
            minutes = ((t - t.min()).dt.total_seconds() / 60.0).to_numpy()
            p = d["pred_km"].to_numpy(float)
            if i == 0:
                for k, (method, per) in enumerate((half_widths or {}).items()):
                    hw = per.get(fl)
                    if hw is None or len(hw) != len(p):
                        continue
                    ok = np.isfinite(hw)
                    lo, hi = bounds(p + (shifts or {}).get(method, {}).get(fl, 0.0), hw)
                    if k == 0:  # the first method as a grey band, the others as coloured edges over it
                        ax.fill_between(minutes[ok], lo[ok], hi[ok], color="0.55", alpha=0.25, lw=0, label=method)
                    else:
                        c = lines[(k - 1) % len(lines)]
                        ax.plot(minutes[ok], lo[ok], color=c, lw=1.0, label=method)
                        ax.plot(minutes[ok], hi[ok], color=c, lw=1.0)
                if half_widths and len(minutes) > 1:
                    ax.axvline(minutes[len(minutes) // 2], color="0.3", ls=":", lw=0.8,
                               label="later half starts (the online check)")  # fmt: skip
                ax.plot(minutes, d["truth_km"], "k.", ms=3, label="lidar CBH")
                ax.set_title(f"{label(fl)} (n = {len(d)})")
            ax.plot(minutes, p, ("-", "--", ":", "-.")[i % 4], color=line_color(m), lw=1.3,
                    label=f"{label(m)} prediction")  # fmt: skip
        ax.set(xlabel="minutes since the flight's first sample", ylabel="CBH (km)")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if n < axes.size:  # the legend fills the first empty panel instead of covering a track
        axes.flat[n].legend(handles, labels, loc="center", fontsize=8, frameon=False)
    else:
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    what = "prediction, lidar truth and interval bands" if half_widths else "prediction and lidar truth"
    names = ", ".join(label(m) for m in models)
    fig.suptitle(title or f"{names}: {what} along each held-out flight (first seed)")
    fig.tight_layout(rect=(0, 0 if n < axes.size else 0.06 * (1 + (len(labels) - 1) // 3) / rows, 1, 1))
    return save(fig, save_to)
