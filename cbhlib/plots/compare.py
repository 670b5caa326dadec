"""Figures of the comparison notebook (and the shift sweep)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch

from cbhlib.plots.style import (
    bar_style,
    flight_color,
    flight_marker,
    is_baseline,
    label,
    mark_clipped,
    model_color,
    model_marker,
    model_patch,
    order_models,
    save,
    sd_bars,
)
from cbhlib.plots.style import r2_floor as axis_floor
from cbhlib.plots.train import axis_limits, pred_panel

PROTOCOL_NAMES = {
    "lofo": "leave-one-flight-out (honest)",
    "within_flight": "time blocks within flight",
    "random": "pooled random K-fold (leaky)",
}
PROTOCOL_HATCHES = {"lofo": "", "within_flight": "///", "random": "..."}


def _legend_right(ax: plt.Axes, handles: list, title: str | None = None, fontsize: float = 8) -> None:
    ax.legend(
        handles=handles,
        fontsize=fontsize,
        title=title,
        title_fontsize=fontsize,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0,
    )


def protocol_inflation(headline: pd.DataFrame, save_to: str | Path | None = None, r2_floor: float = -1.0) -> plt.Figure:
    """Pooled R2 of every model under each protocol (mean ± sd over seeds), models coloured,
    protocols hatched. Bars below ``r2_floor`` are cut there and carry their value (no error
    bar); a protocol a model was not run under says so."""
    models = order_models(headline["model"])
    protos = [p for p in PROTOCOL_NAMES if p in set(headline["protocol"])]
    x = np.arange(len(models))
    w = 0.8 / max(1, len(protos))
    floor = axis_floor(headline["r2_pooled"], r2_floor)
    fig, ax = plt.subplots(figsize=(12, 4.6))
    for i, p in enumerate(protos):
        d = headline[headline["protocol"] == p].set_index("model").reindex(models)
        vals = d["r2_pooled"].to_numpy(float)
        xs = x - 0.4 + w * (i + 0.5)
        shown = np.clip(vals, floor, None)
        ax.bar(
            xs,
            np.nan_to_num(shown),
            w,
            color=[model_color(m) for m in models],
            hatch=PROTOCOL_HATCHES[p],
            edgecolor="k",
            lw=0.4,
        )
        mark_clipped(ax, xs, vals, floor)
        sd_bars(ax, xs, shown, d["r2_pooled_sd"].to_numpy(float), keep=np.isfinite(vals) & (vals >= floor))
        for xi, v in zip(xs, vals, strict=True):
            if not np.isfinite(v):
                ax.text(xi, 0.03, "not run", rotation=90, ha="center", va="bottom", fontsize=7, color="0.35")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, [label(m) for m in models], rotation=25, ha="right", rotation_mode="anchor")
    ax.set(
        ylabel="R2 pooled over held-out predictions\n(mean ± sd over seeds)",
        ylim=(floor - 0.05 * (1.05 - floor), 1.05),
        title="Same models, different splits: what a random split hides"
        + (
            f"\n(bars below {floor:g} are cut: arrow and true value; 'not run': trained under LOFO only)"
            if np.nanmin(headline["r2_pooled"]) < floor
            else ""
        ),
    )
    ax.title.set_fontsize(10)
    _legend_right(
        ax,
        [Patch(facecolor="white", edgecolor="k", hatch=PROTOCOL_HATCHES[p], label=PROTOCOL_NAMES[p]) for p in protos],
        title="protocol (hatch)",
    )
    fig.tight_layout()
    return save(fig, save_to)


def differences(
    comp: pd.DataFrame, save_to: str | Path | None = None, reps: int | None = None, margin: float = 0.0
) -> plt.Figure:
    """Forest plot of paired MAE differences under both headline metrics (left: pooled MAE,
    right: per-flight MAE), 95 % intervals from the paired moving-block bootstrap over samples
    and seeds. An interval that excludes zero is filled in the winner's colour and marker,
    one that includes zero is hollow black; the combined verdict (a ranking only when both
    metrics agree) and the flight-level evidence sit at the right edge."""
    n = max(len(comp), 1)
    fig, axes = plt.subplots(1, 2, figsize=(13.5, 0.42 * n + 2.2), sharey=True)
    bounds = np.abs(comp[[f"{m}_{b}_m" for m in ("pooled", "flight") for b in ("lo", "hi")]].to_numpy(float))
    better = -comp[["pooled_diff_m", "flight_diff_m"]].to_numpy(float)  # > 0: the first model is better
    # a far interval does not squash the rest (it is cut, with its values at the edge), but every point
    # estimate where the first model is better stays on the axis (on a campaign with small errors those
    # are the winners, and they sat beyond the axis)
    finite = bounds[np.isfinite(bounds)]
    spans = np.array([np.quantile(finite, 0.9) if finite.size else np.nan, *better[better > 0]], float)
    lim = 1.15 * float(np.nanmax(spans)) if np.isfinite(spans).any() else 1.0
    lim = lim if lim > 0 else 1.0
    for ax, metric, name in zip(axes, ("pooled", "flight"), ("pooled MAE", "per-flight MAE"), strict=True):
        ax.set_xlim(-lim, lim)
        if margin:
            ax.axvspan(-margin, margin, color="0.9", zorder=0)  # the drift margin an interval must clear
        for i, r in enumerate(comp.to_dict("records")):
            d, lo, hi = r[f"{metric}_diff_m"], r[f"{metric}_lo_m"], r[f"{metric}_hi_m"]
            if abs(d) > lim:  # beyond the axis: an arrow at the edge with the value
                ax.annotate(f"{d:+.0f} [{lo:+.0f}, {hi:+.0f}]", (np.sign(d) * lim, i), xytext=(-np.sign(d) * 4, 0),
                            textcoords="offset points", ha="right" if d > 0 else "left", va="center", fontsize=7,
                            arrowprops={"arrowstyle": "->", "lw": 0.8})  # fmt: skip
                continue
            resolved = r.get(f"{metric}_verdict", "not resolved") != "not resolved" if margin else not lo <= 0 <= hi
            for end in (e for e in (lo, hi) if abs(e) > lim):  # a cut whisker: its end's value at the edge
                ax.annotate(f"{end:+.0f}", (np.sign(end) * lim, i), xytext=(-np.sign(end) * 2, 4),
                            textcoords="offset points", ha="right" if end > 0 else "left", fontsize=6.5)  # fmt: skip
            d, lo, hi = d, max(lo, -lim), min(hi, lim)
            err = [[d - lo], [hi - d]]
            if not resolved:
                ax.errorbar(d, i, xerr=err, fmt="o", mfc="white", mec="k", color="k", capsize=3, ms=6)
            else:
                win = r["model"] if d < 0 else r["reference"]
                ax.errorbar(
                    d, i, xerr=err, fmt=model_marker(win), color=model_color(win), mec="k", mew=0.6,
                    ecolor=model_color(win) if not is_baseline(win) else "0.25", capsize=3, ms=7, lw=1.6,
                )  # fmt: skip
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"{name} difference (m); < 0: first model better")
        ax.set_title(name, fontsize=10)
    for i, r in enumerate(comp.to_dict("records")):
        resolved = r["status"] == "resolved"
        note = r["verdict"] if resolved else r["status"]
        note += (
            f"; first better on {int(r['flights_better'])}/{int(r['n_flights'])} flights, p = {r['sign_flip_p']:.3g}"
        )
        note += "" if r["holds_at_2x_block"] else "; changes at 2x block"
        axes[1].text(1.02, i, label(note), transform=axes[1].get_yaxis_transform(), va="center", fontsize=7.5,
                     color="k" if resolved else "0.4")  # fmt: skip
    axes[0].set_yticks(
        np.arange(len(comp)),
        [f"{label(r['model'])} − {label(r['reference'])}  (block {int(r['block'])})" for r in comp.to_dict("records")],
        fontsize=8,
    )
    axes[0].set_ylim(len(comp) - 0.5, -0.5)
    first = comp.iloc[0] if len(comp) else None
    sub = f"; n = {first.n_samples} samples × {first.n_seeds} seeds" if first is not None else ""
    fig.suptitle(
        f"95 % intervals of paired MAE differences (moving-block bootstrap within flights over samples and seeds"
        f"{f', {reps} replicates' if reps else ''}, block chosen per comparison{sub})\nfilled: the interval "
        f"clears 0{f' by the drift margin (grey, ±{margin:g} m)' if margin else ''}, in the winner's colour; "
        "hollow: it does not. A ranking needs both metrics; p: exact sign-flip test over flights",
        fontsize=9,
    )
    fig.tight_layout()
    return save(fig, save_to)


def _upper_whisker(v: np.ndarray) -> float:
    q1, q3 = np.percentile(v, [25, 75])
    inside = v[v <= q3 + 1.5 * (q3 - q1)]
    return float(inside.max()) if len(inside) else float(q3)


def regime_box(err: pd.DataFrame, save_to: str | Path | None = None) -> plt.Figure:
    """Absolute error per CBH regime for each model (LOFO, seeds pooled): boxes in each model's
    colour and hatch, n per regime, the y-axis cut above most whiskers (longer ones labelled)."""
    models = order_models(err["model"])
    order = [r for r in ("low (< 0.5 km)", "mid (0.5-1 km)", "high (> 1 km)") if r in set(err["regime"])]
    order += [r for r in dict.fromkeys(err["regime"]) if r not in order and r]
    width = 0.84 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(13, 4.6))
    tops: list[tuple[float, float]] = []
    for i, m in enumerate(models):
        dm = err[err["model"] == m]
        data = [dm.loc[dm["regime"] == r, "abs_error_m"].to_numpy(float) for r in order]
        pos = np.arange(len(order)) - 0.42 + width * (i + 0.5)
        keep = [j for j, v in enumerate(data) if len(v)]
        if not keep:
            continue
        bp = ax.boxplot(
            [data[j] for j in keep],
            positions=pos[keep],
            widths=width * 0.9,
            patch_artist=True,
            showfliers=False,
            whis=1.5,
            manage_ticks=False,
        )
        for box in bp["boxes"]:
            box.set(**{k: v for k, v in bar_style(m).items() if k != "color"}, facecolor=model_color(m))
        for part in ("medians", "whiskers", "caps"):
            for line in bp[part]:
                line.set(color="k", lw=0.8 if part != "medians" else 1.4)
        tops += [(float(pos[j]), _upper_whisker(data[j])) for j in keep]
    whiskers = np.array([t for _, t in tops]) if tops else np.array([1.0])
    ylim = 1.08 * float(np.percentile(whiskers, 90))
    for xp, t in tops:
        if t > ylim:
            ax.annotate(
                f"↑ {t:.0f}",
                (xp, ylim),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                annotation_clip=False,
            )
    n = [_regime_n(err, r) for r in order]
    ax.set_xticks(np.arange(len(order)), [f"{r}\nn = {k} samples" for r, k in zip(order, n, strict=True)])
    ax.set_ylim(0, ylim)
    ax.set(ylabel="absolute error (m)", xlabel="lidar cloud-base regime")
    ax.set_title(
        "Error against cloud-base regime (leave-one-flight-out; seeds pooled; boxes: quartiles; whiskers: "
        "1.5 IQR; outliers hidden;\ny cut above most whiskers, longer ones carry their top in m)",
        pad=34,
        fontsize=10,
    )
    _legend_right(ax, [model_patch(m) for m in models], title="model")
    fig.tight_layout()
    return save(fig, save_to)


def _regime_n(err: pd.DataFrame, regime: str) -> int:
    """Distinct samples in a regime (one model, one seed)."""
    d = err[err["regime"] == regime]
    if "sample" in d:
        return int(d["sample"].nunique())
    per = d.groupby(["model", "seed"]).size() if "seed" in d else d.groupby("model").size()
    return int(per.max()) if len(per) else 0


def shift_heatmap(
    ks: pd.DataFrame, save_to: str | Path | None = None, n: Mapping[str, int] | None = None
) -> plt.Figure:
    """KS statistic of each feature: held-out flight (columns, n in the tick labels) vs its training flights."""
    fig, ax = plt.subplots(figsize=(1.3 * ks.shape[1] + 3.2, 0.35 * ks.shape[0] + 1.9))
    cols = {c: label(c) + (f"\n(n={n[c]})" if n and c in n else "") for c in ks.columns}
    sns.heatmap(
        ks.rename(columns=cols),
        vmin=0,
        vmax=1,
        cmap="viridis",
        annot=True,
        fmt=".2f",
        annot_kws={"fontsize": 7},
        cbar_kws={"label": "KS statistic"},
        ax=ax,
    )
    ax.set(
        title="Domain shift: each held-out flight against the other flights (KS, per feature)",
        xlabel="held-out flight",
        ylabel="feature",
    )
    fig.tight_layout()
    return save(fig, save_to)


def pca_scatter(
    projections: dict[str, tuple[np.ndarray, np.ndarray]],
    flight: np.ndarray,
    names: list[str],
    save_to: str | Path | None = None,
    note: str | None = None,
) -> plt.Figure:
    """2-D PCA projections (one panel each) of standardised, median-imputed inputs, coloured by
    flight; ``note`` says in the figure what is missing (e.g. no image-embedding panel)."""
    fig, axes = plt.subplots(1, len(projections), figsize=(5.5 * len(projections) + 2, 4.8), squeeze=False)
    for ax, (title, (Z, evr)) in zip(axes[0], projections.items(), strict=True):
        for k, name in enumerate(names):
            m = flight == k
            ax.scatter(
                Z[m, 0],
                Z[m, 1],
                s=7,
                alpha=0.6,
                color=flight_color(k),
                marker=flight_marker(k),
                label=f"{label(name)} (n={m.sum()})",
            )
        ax.set(xlabel=f"PC1 ({evr[0]:.0%} of variance)", ylabel=f"PC2 ({evr[1]:.0%} of variance)", title=title)
    axes[0, -1].legend(fontsize=8, markerscale=2, title="flight", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Where each flight sits: PCA of standardised, median-imputed inputs")
    if note:
        fig.text(0.5, -0.02, note, ha="center", va="top", fontsize=8, style="italic", wrap=True)
    fig.tight_layout()
    return save(fig, save_to)


def best_pred_vs_true(
    pred: pd.DataFrame,
    rows: Sequence[tuple[str, str]],
    save_to: str | Path | None = None,
    title: str = "Leave-one-flight-out predictions",
) -> plt.Figure:
    """Predicted against lidar CBH, one row per (model, heading), columns per held-out flight plus all."""
    rows = [(m, h) for m, h in rows if (pred["model"] == m).any()]
    flights = list(dict.fromkeys(pred["flight"]))
    d_all = pred[pred["model"].isin([m for m, _ in rows])]
    lims = axis_limits(d_all) if len(d_all) else (0.0, 1.0)
    ncol = len(flights) + 1
    fig = plt.figure(figsize=(3.2 * ncol, 3.9 * max(1, len(rows)) + 0.5), layout="constrained")
    subs = np.atleast_1d(fig.subfigures(max(1, len(rows)), 1))
    for sub, (m, heading) in zip(subs, rows, strict=False):  # an empty figure keeps one subfigure
        d = pred[pred["model"] == m]
        axes = sub.subplots(1, ncol)
        for c, fl in enumerate(flights + ["all"]):
            pred_panel(
                axes[c],
                d if fl == "all" else d[d["flight"] == fl],
                flights,
                lims,
                "all flights" if fl == "all" else f"{label(fl)} held out",
            )
            if c:
                axes[c].set_ylabel("")
        sub.suptitle(label(heading), fontsize=11, weight="bold", x=0.01, ha="left")
    fig.suptitle(title, fontsize=11)
    return save(fig, save_to)
