"""Figures of the pretraining and training notebooks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from cbhlib.evaluation.metrics import fmt_r2, regression_metrics
from cbhlib.plots.style import (
    bar_style,
    flight_color,
    flight_marker,
    label,
    mark_clipped,
    model_color,
    model_patch,
    not_drawn,
    save,
    sd_bars,
)
from cbhlib.plots.style import r2_floor as axis_floor


def _grid(n: int, ncols: int, w: float, h: float, **kw: Any) -> tuple[plt.Figure, np.ndarray]:
    """A rows x ncols grid for n panels (flattened axes; the spare ones are turned off by the caller)."""
    ncols = max(1, min(ncols, n))
    rows = int(np.ceil(max(n, 1) / ncols))
    fig, axes = plt.subplots(rows, ncols, figsize=(w * ncols, h * rows), squeeze=False, **kw)
    return fig, axes.ravel()


def huber(err: np.ndarray, delta: float) -> np.ndarray:
    """Elementwise Huber loss (as the training loop's)."""
    a = np.abs(err)
    return np.where(a <= delta, 0.5 * err * err, delta * (a - 0.5 * delta))


def mean_predictor_loss(cbh_km: np.ndarray, folds: Sequence[Any], huber_delta_km: float) -> dict[int, float]:
    """Per fold: the validation Huber loss (standardised CBH, as in training) of predicting the
    training samples' mean: the level a head must beat to have learned anything."""
    y = np.asarray(cbh_km, float)
    out: dict[int, float] = {}
    for f in folds:
        tr = y[np.asarray(f.train_idx, int)]
        if not len(tr):
            continue
        val = np.asarray(f.val_idx if len(f.val_idx) else f.train_idx, int)
        sd = max(float(tr.std()), 1e-3)
        out[int(f.fold_id)] = float(huber((y[val] - tr.mean()) / sd, huber_delta_km / sd).mean())
    return out


def _plain(v: float, minor: bool) -> str:
    """0.2, not 2 x 10^-1; minor ticks labelled at 2, 3 and 5 only."""
    if v <= 0:
        return ""
    lead = round(v / 10 ** np.floor(np.log10(v)), 6)
    return f"{v:g}" if not minor or lead in (2, 3, 5) else ""


def _plain_log(ax: plt.Axes) -> None:
    """Log axis with plain tick labels."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _plain(v, False)))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: _plain(v, True)))
    ax.tick_params(axis="y", which="both", labelsize=9)


def loss_curves(
    log: pd.DataFrame,
    model: str,
    save_to: str | Path | None = None,
    reference: dict[int, float] | None = None,
    ncols: int = 3,
) -> plt.Figure | None:
    """Training (black dashed) and validation loss per epoch for each LOFO fold (first seed).
    Not drawn (a note says why) when no fold logged two epochs: one point is no curve.

    Args:
        reference: fold -> validation loss of predicting the training mean (grey line).
    """
    d0 = log[(log["model"] == model) & (log["protocol"] == "lofo")] if len(log) else log
    folds = sorted(d0["fold"].unique()) if len(d0) else []
    first = d0[d0["seed"] == d0["seed"].min()] if len(d0) else d0
    epochs = int(first.groupby("fold")["epoch"].nunique().max()) if len(first) else 0
    if epochs < 2:
        why = "no leave-one-flight-out training log" if not epochs else "every fold trained for one epoch"
        return not_drawn(save_to, f"{model}: {why}; a loss curve needs at least two epochs (train_epochs)")
    fig, axes = _grid(len(folds) + 1, ncols, 3.8, 3.0, sharey=True)
    for ax, f in zip(axes, folds, strict=False):  # the grid may hold more axes than folds
        d = (
            d0[(d0["fold"] == f) & (d0["seed"] == d0["seed"].min())]
            .sort_values("epoch")
            .drop_duplicates("epoch", keep="last")
        )
        ax.plot(d["epoch"], d["train_loss"], color="k", ls="--", lw=1.2)
        ax.plot(d["epoch"], d["val_loss"], color=model_color(model), lw=1.6)
        if reference and int(f) in reference:
            ax.axhline(reference[int(f)], color="k", lw=1.0, ls="-.")
        ax.axvline(d.loc[d["val_loss"].idxmin(), "epoch"], color="k", ls=":", lw=1)
        ax.set_yscale("log")
        _plain_log(ax)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"fold {f}: {label(d['test_flight'].iloc[0])} held out", fontsize=10)
        ax.set_xlabel("epoch")
    for i, ax in enumerate(axes):
        if i % max(1, min(ncols, len(axes))) == 0 and i < len(folds):
            ax.set_ylabel("Huber loss (standardised CBH)")
    key = axes[len(folds)]
    key.axis("off")
    handles = [
        Line2D([], [], color="k", ls="--", label="train (training batches)"),
        Line2D(
            [], [], color=model_color(model), lw=1.6, label="validation (time blocks of the\nheld-in training flights)"
        ),
        Line2D([], [], color="k", ls=":", label="epoch early stopping selected"),
    ]
    if reference:
        handles.append(Line2D([], [], color="k", lw=1.0, ls="-.", label="predict the training mean\n(validation loss)"))
    key.legend(handles=handles, loc="center", fontsize=9, frameon=False)
    for ax in axes[len(folds) + 1 :]:
        ax.axis("off")
    fig.suptitle(f"{model}: loss curves per held-out flight (first seed)")
    fig.tight_layout()
    return save(fig, save_to)


def _seed_view(d: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Rows to draw, samples per seed, and distinct seeds: a deterministic model's identical
    seeds are drawn (and counted) once."""
    seeds = sorted(d["seed"].unique()) if "seed" in d and len(d) else []
    if len(seeds) <= 1:
        return d, len(d), max(1, len(seeds))
    wide = d.pivot_table(index=["fold", "sample"], columns="seed", values="pred_km", aggfunc="first")
    same = wide.notna().all(axis=None) and bool(np.allclose(wide.to_numpy(), wide.to_numpy()[:, :1], atol=1e-9))
    first = d[d["seed"] == seeds[0]]
    return (first, len(first), 1) if same else (d, len(first), len(seeds))


def axis_limits(pred: pd.DataFrame) -> tuple[float, float]:
    """Shared axis range: from min(0, data) (negative predictions stay visible) to the top."""
    lo = min(0.0, float(pred["pred_km"].min()), float(pred["truth_km"].min()))
    hi = max(float(pred["truth_km"].max()), float(pred["pred_km"].max()))
    pad = 0.05 * (hi - lo or 1.0)
    return (lo - pad if lo < 0 else 0.0), hi + pad


def pred_panel(ax: plt.Axes, d: pd.DataFrame, flights: list[str], lims: tuple[float, float], title: str) -> None:
    """One predicted-vs-true panel: flights coloured, 1:1 line, n / R2 / MAE / bias."""
    view, n, seeds = _seed_view(d)
    for k, f2 in enumerate(flights):
        dd = view[view["flight"] == f2]
        ax.scatter(
            dd["truth_km"], dd["pred_km"], s=6, alpha=0.5, color=flight_color(k), marker=flight_marker(k), linewidths=0
        )
    m = regression_metrics(d["truth_km"].to_numpy(), d["pred_km"].to_numpy())
    ax.plot(lims, lims, "k--", lw=0.8)
    if lims[0] < 0:
        ax.axhline(0, color="0.6", lw=0.6)
    nn = f"n = {n} (×{seeds} seeds)" if seeds > 1 else f"n = {n}"
    ax.text(
        0.03,
        0.97,
        f"{nn}\nR2 = {fmt_r2(m['r2'])}\nMAE = {1000 * m['mae_km']:.0f} m\nbias = {1000 * m['bias_km']:+.0f} m",
        transform=ax.transAxes,
        va="top",
        fontsize=9,
        bbox={"facecolor": "white", "alpha": 0.75, "lw": 0},
    )
    ax.set(xlim=lims, ylim=lims, title=title, xlabel="lidar CBH (km)", ylabel="predicted CBH (km)")
    ax.set_aspect("equal")


def pred_vs_true(pred: pd.DataFrame, title: str, save_to: str | Path | None = None, ncols: int = 3) -> plt.Figure:
    """Predicted against lidar CBH per held-out flight plus all together, on a grid; each panel
    states n (samples; "×3 seeds" where seeds differ), R2, MAE and bias (seeds pooled)."""
    flights = list(dict.fromkeys(pred["flight"]))
    lims = axis_limits(pred)
    fig, axes = _grid(len(flights) + 1, ncols, 3.7, 3.7)
    for ax, fl in zip(axes, flights + ["all"], strict=False):  # the grid may hold more axes than panels
        pred_panel(
            ax,
            pred if fl == "all" else pred[pred["flight"] == fl],
            flights,
            lims,
            "all flights" if fl == "all" else f"{label(fl)} held out",
        )
    for ax in axes[len(flights) + 1 :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, save_to)


def fold_bars(
    per_flight: pd.DataFrame, model: str, save_to: str | Path | None = None, r2_floor: float = -3.0
) -> plt.Figure:
    """MAE (headline) and R2 per held-out flight, model beside climatology, mean ± sd over seeds.

    R2 below ``r2_floor`` is cut at the axis floor for every series alike; cut bars get an
    arrow and their value. Error bars only where seeds differ. Tick labels carry each flight's n.
    """
    flights = list(dict.fromkeys(per_flight["flight"]))
    n = per_flight.drop_duplicates("flight").set_index("flight")["n"]
    x = np.arange(len(flights))
    floor = axis_floor(per_flight["r2"], r2_floor)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    series = ((model, -0.2), ("climatology", 0.2))
    for ax, key in ((axes[0], "mae_m"), (axes[1], "r2")):
        for name, off in series:
            d = per_flight[per_flight["model"] == name].set_index("flight").reindex(flights)
            vals = d[key].to_numpy(float)
            sd = d[f"{key}_sd"].to_numpy(float) if f"{key}_sd" in d else None
            shown = np.clip(vals, floor, None) if key == "r2" else vals
            ax.bar(x + off, np.nan_to_num(shown), 0.4, **bar_style(name))
            if key == "r2":
                mark_clipped(ax, x + off, vals, floor)
                for xi, v in zip(x + off, vals, strict=True):
                    if not np.isfinite(v):
                        ax.annotate("n/a", (xi, 0), ha="center", va="bottom", fontsize=7)
            sd_bars(ax, x + off, shown, sd, keep=np.isfinite(vals) & (vals >= floor) if key == "r2" else None)
        ax.set_xticks(x, [f"{label(f)}\nn={n[f]}" for f in flights], fontsize=8)
    sd_mae = per_flight["mae_m_sd"].fillna(0) if "mae_m_sd" in per_flight else 0.0
    top = float(np.nanmax((per_flight["mae_m"] + sd_mae).to_numpy(float)))
    axes[0].set(ylim=(0, 1.3 * top), ylabel="MAE (m)", title="MAE (m), mean ± sd over seeds")
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set(
        ylim=(floor - 0.04 * (1 - floor), 1),
        ylabel="R2",
        title=f"R2 (bars below {floor:g} cut: arrow and value)" if floor <= r2_floor else "R2",
    )
    axes[0].legend(
        handles=[model_patch(model, f"{model} (error bars: sd over seeds)"), model_patch("climatology")],
        fontsize=8,
        loc="upper left",
        ncol=2,
    )
    fig.suptitle(f"{model} vs climatology per held-out flight (leave-one-flight-out)")
    fig.tight_layout()
    return save(fig, save_to)


def attention_weights(
    att: np.ndarray,
    tokens: list[str],
    n_phys: int,
    grid: tuple[int, int] | None,
    flights: list[str],
    save_to: str | Path | None = None,
) -> plt.Figure:
    """Mean attention per physical variable (a marker per held-out flight, no lines: the variables
    are categories; a grey bar at their mean) and per image region, on a scale from 0 with the
    uniform weight 1/T marked (line and colour-bar tick).

    Args:
        att: [folds, T] mean attention over test samples and heads, per fold.
    """
    T = att.shape[1]
    uniform = 1.0 / T
    has_regions = grid is not None and T > n_phys
    fig, axes = plt.subplots(
        1,
        2 if has_regions else 1,
        figsize=(13 if has_regions else 7.5, 4.6),
        squeeze=False,
        layout="constrained",
        width_ratios=[1.6, 1] if has_regions else None,
    )
    ax = axes[0, 0]
    x = np.arange(n_phys)
    folds = min(len(att), len(flights))
    ax.bar(x, att[:, :n_phys].mean(0), 0.8, color="0.88", edgecolor="0.6", lw=0.5, label="mean over held-out flights")
    for i, fl in enumerate(flights[:folds]):  # markers only: the variables are categories, not a sequence
        off = (i - (folds - 1) / 2) * min(0.12, 0.7 / max(folds, 1))
        ax.plot(x + off, att[i, :n_phys], ls="none", marker=flight_marker(i), ms=5, mec="k", mew=0.3,
                color=flight_color(i), label=f"{label(fl)} held out")  # fmt: skip
    ax.axhline(uniform, color="k", ls="--", lw=1, label=f"uniform weight 1/{T}")
    ax.set_xticks(x, [label(t) for t in tokens[:n_phys]], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, max(float(att.max()) * 1.6, uniform * 2.0))  # room for the legend above the markers
    ax.set(ylabel="attention weight\n(mean over test samples and heads)", title="Attention per physical variable")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    if has_regions:
        reg = att[:, n_phys:].mean(0).reshape(grid)  # type: ignore[arg-type]
        vmax = max(float(reg.max()), uniform * 1.5)
        im = axes[0, 1].imshow(reg, cmap="magma", vmin=0, vmax=vmax)
        for (r, c), v in np.ndenumerate(reg):
            axes[0, 1].text(
                c, r, f"{v / uniform:.2f}×", ha="center", va="center", fontsize=8, color="w" if v < 0.6 * vmax else "k"
            )
        axes[0, 1].set(
            title="Attention per image region\n(mean over folds; text: × uniform)",
            xlabel="region column",
            ylabel="region row",
            xticks=range(reg.shape[1]),
            yticks=range(reg.shape[0]),
        )
        cb = fig.colorbar(im, ax=axes[0, 1], label="attention weight (from 0)", shrink=0.85)
        cb.ax.axhline(uniform, color="c", lw=2)
        ticks = [t for t in cb.get_ticks() if 0 <= t <= vmax and abs(t - uniform) > 0.1 * vmax]
        cb.set_ticks(ticks + [uniform], labels=[f"{t:.2f}" for t in ticks] + [f"uniform 1/{T}"])
    return save(fig, save_to)
