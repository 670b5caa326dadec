"""Figures per held-out flight: every model's skill on each flight (one row per model, however
many a run has), and each flight's track on a map coloured by a model's error."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from cbhlib.plots.style import (
    flight_color,
    flight_marker,
    is_adapted,
    is_baseline,
    label,
    model_color,
    not_drawn,
    order_models,
    save,
)
from cbhlib.plots.style import r2_floor as axis_floor

GROUPS = ("baselines", "flight-normalised baselines (_fn)", "models", "flight-normalised models (_fn)")
PROTOCOL_NAMES = {
    "lofo": "leave-one-flight-out (honest)",
    "within_flight": "time blocks within flight",
    "random": "pooled random K-fold (leaky)",
}


def model_group(model: str) -> str:
    """Which block of rows a model sits in: baselines, then models, each plain then flight-normalised."""
    return GROUPS[2 * (not is_baseline(model)) + is_adapted(model)]


def grouped_models(models: object) -> list[str]:
    """Distinct models in the shared order, grouped as :data:`GROUPS`."""
    ordered = order_models(models)
    return sorted(ordered, key=lambda m: (GROUPS.index(model_group(m)), ordered.index(m)))


def _short(v: float) -> str:
    """A cut R2 as written beside its arrow: one decimal below 10, whole numbers above."""
    return f"{v:.1f}" if abs(v) < 10 else f"{v:.0f}"


def _dots(
    ax: plt.Axes, d: pd.DataFrame, key: str, rows: dict[str, int], flights: list[str], floor: float | None
) -> int:
    """One marker per (model, flight) at its row, ± sd where seeds differ, and a black bar at the
    mean over flights; values under ``floor`` drawn at the floor as an arrow, their values (and a
    mean under the floor) written once per row. Returns how many values were cut."""
    cut: dict[int, list[str]] = {}
    for j, fl in enumerate(flights):
        df = d[d["flight"] == fl]
        y = df["model"].map(rows).to_numpy(float) + (j - (len(flights) - 1) / 2) * min(0.12, 0.6 / len(flights))
        v = df[key].to_numpy(float)
        sd = df[f"{key}_sd"].to_numpy(float) if f"{key}_sd" in df else np.zeros_like(v)
        low = np.isfinite(v) & (v < floor) if floor is not None else np.zeros(len(v), bool)
        shown = np.where(low, floor if floor is not None else 0.0, v)
        ok = ~low & np.isfinite(sd) & (sd > 0)
        if ok.any():
            ax.errorbar(shown[ok], y[ok], xerr=sd[ok], fmt="none", ecolor=flight_color(j), lw=0.7, zorder=2)
        ax.scatter(shown[~low], y[~low], marker=flight_marker(j), color=flight_color(j), s=24, lw=0.3,
                   edgecolors="k", zorder=3)  # fmt: skip
        if low.any():
            ax.scatter(shown[low], y[low], marker="<", color=flight_color(j), s=30, edgecolors="k", lw=0.3, zorder=3)
            for m, vv in zip(df["model"][low], v[low], strict=True):
                cut.setdefault(rows[m], []).append(_short(vv))
    mean = d.groupby("model")[key].mean()
    rows_of_mean = mean.index.map(rows).to_numpy(float)
    x = mean.to_numpy(float)
    shown = np.ones(len(x), bool) if floor is None else ~(x < floor)
    for row, value in zip(rows_of_mean[~shown], x[~shown], strict=True):  # a mean under the floor: written
        cut.setdefault(int(row), []).append(f"mean {_short(value)}")
    for row, values in cut.items():
        ax.annotate(", ".join(values), (floor, row), xytext=(-8, 0), textcoords="offset points", va="center",
                    ha="right", fontsize=6, zorder=6)  # fmt: skip
    ax.scatter(x[shown], rows_of_mean[shown], marker="|", s=260, color="k", lw=2, zorder=5)
    return sum(not v.startswith("mean") for values in cut.values() for v in values)


def per_flight_bars(
    per_flight: pd.DataFrame,
    protocol: str = "lofo",
    ceiling: dict[str, float] | None = None,
    save_to: str | Path | None = None,
    r2_floor: float = -3.0,
) -> plt.Figure:
    """Per-flight MAE (headline) and R2 of every model under one protocol: one row per model in
    blocks (baselines, in grey italics, then the models; flight-normalised variants in blocks of
    their own), one marker per held-out flight (± sd over seeds), a black bar at the mean over
    flights. R2 below ``r2_floor`` is drawn at the floor as an arrow and its value written; the
    best R2 the label noise allows (``ceiling``, from a campaign's truth) is a row of its own."""
    d = per_flight[per_flight["protocol"] == protocol]
    flights = list(dict.fromkeys(d["flight"]))
    labels: list[tuple[str, str]] = [("best achievable R2", "ceiling")] if ceiling else []
    for m in grouped_models(d["model"]):
        if not labels or labels[-1][1] == "ceiling" or model_group(m) != model_group(labels[-1][1]):
            labels.append((model_group(m), "header"))
        labels.append((label(m), m))
    rows = {m: i for i, (_, m) in enumerate(labels)}
    n = d.drop_duplicates("flight").set_index("flight")["n"]
    floor = axis_floor(d["r2"], r2_floor)
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.27 * len(labels) + 1.6), sharey=True, layout="constrained")
    _dots(axes[0], d, "mae_m", rows, flights, None)
    cut = _dots(axes[1], d, "r2", rows, flights, floor)
    if ceiling:
        for j, fl in enumerate(flights):
            if np.isfinite(ceiling.get(fl, np.nan)):
                axes[1].scatter(ceiling[fl], 0, marker=flight_marker(j), s=30, facecolors="none",
                                edgecolors=flight_color(j), lw=1.2)  # fmt: skip
        axes[0].text(0.5, 0, "(R2 only)", transform=axes[0].get_yaxis_transform(), ha="center", va="center",
                     fontsize=7, color="0.4")  # fmt: skip
    axes[0].set_yticks(np.arange(len(labels)), [t for t, _ in labels], fontsize=8)
    for i, (tick, (_, m)) in enumerate(zip(axes[0].get_yticklabels(), labels, strict=True)):
        if m == "header":
            tick.set(weight="bold", fontsize=8.5)
            for ax in axes:
                ax.axhspan(i - 0.5, i + 0.5, color="0.93", lw=0, zorder=0)
        elif m != "ceiling":
            tick.set(color="0.3", style="italic") if is_baseline(m) else tick.set(color=model_color(m))
    axes[0].set_ylim(len(labels) - 0.5, -0.5)
    axes[0].set_xlim(0, None)
    axes[0].set(xlabel="MAE (m), mean ± sd over seeds", title="MAE per held-out flight (headline)")
    axes[1].axvline(0, color="0.3", lw=0.6)
    if cut or (d.groupby("model")["r2"].mean() < floor).any():  # room left of the floor for the values
        axes[1].set_xlim(floor - 0.55 * (1.05 - floor), 1.05)
        axes[1].set_xticks([t for t in axes[1].get_xticks() if floor <= t <= 1.05])
        axes[1].axvspan(axes[1].get_xlim()[0], floor, color="0.96", lw=0, zorder=0)
    else:
        axes[1].set_xlim(floor - 0.05 * (1.05 - floor), 1.05)
    axes[1].set(
        xlabel="R2, mean ± sd over seeds",
        title="R2 per held-out flight" + (f" (below {floor:g}: arrow, values written left)" if cut else ""),
    )
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    handles = [
        Line2D([], [], ls="", marker=flight_marker(j), color=flight_color(j), mec="k", mew=0.3, ms=6,
               label=f"{label(fl)} (n = {n[fl]})")
        for j, fl in enumerate(flights)
    ]  # fmt: skip
    handles.append(Line2D([], [], ls="", marker="|", color="k", ms=12, mew=2, label="mean over flights"))
    if ceiling:
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="k", label="best achievable R2 (truth)"))
    axes[1].legend(handles=handles, fontsize=8, title="held-out flight", title_fontsize=8, loc="upper left",
                   bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # fmt: skip
    fig.suptitle(f"Every model on every held-out flight: {PROTOCOL_NAMES.get(protocol, protocol)}", fontsize=11)
    return save(fig, save_to)


def track_error_map(
    pred: pd.DataFrame, model: str, save_to: str | Path | None = None, ncols: int = 3
) -> plt.Figure | None:
    """Each held-out flight's track (longitude, latitude; one panel each, as flights lie apart),
    coloured by the model's signed error (prediction − lidar, mean over seeds) on one shared,
    symmetric scale; a ring marks where each track starts. Not drawn without positions."""
    d = pred[pred["model"] == model]
    if d.empty or not {"lat", "lon"} <= set(d) or not np.isfinite(d[["lat", "lon"]].to_numpy(float)).any():
        not_drawn(save_to, f"no latitude and longitude for {model}'s predictions: the campaign records no positions")
        return None
    per = (
        d.assign(err_m=1000 * (d["pred_km"] - d["truth_km"]))
        .groupby(["flight", "sample"], sort=False)
        .agg(lat=("lat", "first"), lon=("lon", "first"), err_m=("err_m", "mean"), time=("time_utc", "first"))
        .reset_index()
    )
    flights = list(dict.fromkeys(per["flight"]))
    lim = float(np.nanpercentile(np.abs(per["err_m"]), 95)) or 1.0
    cols = max(1, min(ncols, len(flights)))
    rows = int(np.ceil(len(flights) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols + 1.2, 3.9 * rows), squeeze=False, layout="constrained")
    sc = None
    for ax, fl in zip(axes.flat, flights, strict=False):
        f = per[per["flight"] == fl].sort_values("time")
        ax.plot(f["lon"], f["lat"], color="0.75", lw=0.8, zorder=1)
        sc = ax.scatter(f["lon"], f["lat"], c=f["err_m"], cmap="RdBu_r", vmin=-lim, vmax=lim, s=12, zorder=2)
        ax.scatter(f["lon"].iloc[:1], f["lat"].iloc[:1], s=90, facecolors="none", edgecolors="k", lw=1.2, zorder=3)
        mae = float(np.abs(f["err_m"]).mean())
        ax.set_title(f"{label(fl)} (n = {len(f)}; MAE {mae:.0f} m)", fontsize=9)
        ax.set_xlabel("longitude (°E)")
        ax.set_ylabel("latitude (°N)")
        lat0 = float(np.nanmean(f["lat"]))
        ax.set_aspect(1 / max(np.cos(np.radians(lat0)), 0.05), adjustable="datalim")
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(4))
    for ax in list(axes.flat)[len(flights) :]:
        ax.axis("off")
    if sc is not None:
        fig.colorbar(sc, ax=axes, shrink=0.8, label="error: predicted − lidar CBH (m), mean over seeds;\n"
                     f"colour scale cut at ±{lim:.0f} m (95th percentile of |error|)")  # fmt: skip
    fig.suptitle(f"{label(model)}: error along each held-out flight's track (leave-one-flight-out; ring: start)")
    return save(fig, save_to)
