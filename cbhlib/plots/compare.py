"""Figures of the comparison notebook (and the shift sweep)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from cbhlib.plots.style import flight_color, label, model_color, save

PROTOCOL_NAMES = {"lofo": "leave-one-flight-out (honest)", "within_flight": "time blocks within flight",
                  "random": "pooled random K-fold (leaky)"}


def protocol_inflation(headline: pd.DataFrame, save_to: str | Path | None = None) -> plt.Figure:
    """Pooled R2 of every model under each protocol (mean ± sd over seeds), models coloured."""
    models = list(dict.fromkeys(headline["model"]))
    protos = [p for p in PROTOCOL_NAMES if p in set(headline["protocol"])]
    x = np.arange(len(models))
    w = 0.8 / max(1, len(protos))
    fig, ax = plt.subplots(figsize=(11, 4))
    hatches = {"lofo": "", "within_flight": "//", "random": ".."}
    for i, p in enumerate(protos):
        d = headline[headline["protocol"] == p].set_index("model").reindex(models)
        ax.bar(x - 0.4 + w * (i + 0.5), d["r2_pooled"].clip(lower=-1), w, yerr=d["r2_pooled_sd"], capsize=2,
               color=[model_color(m) for m in models], hatch=hatches[p], edgecolor="k", lw=0.4)
        ax.bar(0, 0, 0, color="white", edgecolor="k", hatch=hatches[p], label=PROTOCOL_NAMES[p])
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, models, rotation=25)
    ax.set(ylabel="R2 pooled over held-out predictions\n(clipped at -1; mean ± sd over seeds)", ylim=(-1, 1.05),
           title="Same models, different splits: what a random split hides")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, save_to)


def per_flight_bars(per_flight: pd.DataFrame, protocol: str = "lofo", ceiling: dict[str, float] | None = None,
                    save_to: str | Path | None = None, r2_floor: float = -3.0) -> plt.Figure:
    """Per-flight MAE (headline) and R2 of every model under one protocol, n under each flight."""
    d = per_flight[per_flight["protocol"] == protocol]
    flights = list(dict.fromkeys(d["flight"]))
    models = list(dict.fromkeys(d["model"]))
    n = d.drop_duplicates("flight").set_index("flight")["n"]
    x = np.arange(len(flights))
    width = 0.84 / max(1, len(models))
    fig, axes = plt.subplots(2, 1, figsize=(13, 7.5), sharex=True)
    for ax, key, lab in ((axes[0], "mae_m", "MAE (m)"), (axes[1], "r2", "R2")):
        for i, m in enumerate(models):
            dm = d[d["model"] == m].set_index("flight").reindex(flights)
            vals = dm[key].to_numpy(float)
            ax.bar(x - 0.42 + width * (i + 0.5), np.clip(vals, r2_floor, None) if key == "r2" else vals, width,
                   yerr=dm[f"{key}_sd"] if key == "mae_m" else None, capsize=1.5, color=model_color(m),
                   edgecolor="k", lw=0.3, label=m)
        if key == "r2":
            ax.axhline(0, color="0.3", lw=0.6)
            ax.set_ylim(r2_floor, 1.05)
            if ceiling:
                ax.hlines([ceiling.get(f, np.nan) for f in flights], x - 0.45, x + 0.45, colors="tab:green",
                          linestyles="--", lw=1.2, label="best achievable (truth)")
            ax.set_ylabel(f"R2 (clipped at {r2_floor:g})")
        else:
            ax.set_ylabel("MAE (m), mean ± sd over seeds")
        ax.set_title(f"{lab} per held-out flight ({PROTOCOL_NAMES.get(protocol, protocol)})")
    axes[1].set_xticks(x, [f"{label(f)}\nn={n[f]}" for f in flights])
    axes[0].legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return save(fig, save_to)


def differences(comp: pd.DataFrame, save_to: str | Path | None = None) -> plt.Figure:
    """Forest plot of paired pooled-MAE differences with 95 % intervals."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(comp), 1) + 1.5))
    y = np.arange(len(comp))
    for i, r in enumerate(comp.itertuples()):
        color = model_color(r.model) if r.verdict != "not resolved" else "0.6"
        ax.errorbar(r.diff_m, i, xerr=[[r.diff_m - r.ci_lo_m], [r.ci_hi_m - r.diff_m]], fmt="o", color=color, capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [f"{r.model} - {r.reference}" for r in comp.itertuples()], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="pooled MAE difference (m); negative: the first model is better",
           title="Paired 95 % intervals (grey: not resolved)")
    fig.tight_layout()
    return save(fig, save_to)


def regime_box(err: pd.DataFrame, save_to: str | Path | None = None) -> plt.Figure:
    """Absolute error per CBH regime for each model (LOFO, all seeds)."""
    models = list(dict.fromkeys(err["model"]))
    order = [r for r in ("low (< 0.5 km)", "mid (0.5-1 km)", "high (> 1 km)") if r in set(err["regime"])]
    fig, ax = plt.subplots(figsize=(12, 4))
    sns.boxplot(err, x="regime", y="abs_error_m", hue="model", order=order, hue_order=models,
                palette={m: model_color(m) for m in models}, showfliers=False, ax=ax, linewidth=0.6)
    ax.set(ylabel="absolute error (m)", xlabel="lidar cloud-base regime",
           title="Error against cloud-base regime (leave-one-flight-out)")
    ax.legend(fontsize=7, ncol=4)
    return save(fig, save_to)


def few_shot_plot(curve: pd.DataFrame, draw: str = "first", save_to: str | Path | None = None) -> plt.Figure:
    """Per-flight MAE (left, the steady read) and R2 (right) against k; offset solid, linear dashed;
    the headline draw in full colour, the other draw faint."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.3))
    for (m, dr, meth), d in curve.groupby(["model", "draw", "method"], sort=False):
        style = dict(color=model_color(m), ls="-" if meth == "offset" else "--", alpha=1.0 if dr == draw else 0.3,
                     marker="o", ms=3, lw=1.2)
        axes[0].plot(d["k"], d["mae_m"], **style, label=m if (dr == draw and meth == "offset") else None)
        axes[1].plot(d["k"], d["r2"], **style)
    axes[0].set(xlabel="k labelled samples of the held-out flight", ylabel="mean of per-flight MAE (m)",
                title=f"Recalibration on the {draw} k samples (solid: offset, dashed: linear)")
    axes[1].set(xlabel="k", ylabel="mean of per-flight R2", title="R2 (faint: the other draw)")
    lo = float(np.nanmin(curve["r2"])) if len(curve) else -1
    axes[1].set_ylim(max(-3, lo - 0.2), 1)
    axes[1].axhline(0, color="0.5", lw=0.6)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save(fig, save_to)


def coverage_dots(conf: pd.DataFrame, nominal: float = 0.9, save_to: str | Path | None = None) -> plt.Figure:
    """Coverage per model (rows) and held-out flight, by calibration: one dot plot."""
    per = conf.groupby(["model", "calibration", "flight"], sort=False)["coverage"].mean().reset_index()
    models = list(dict.fromkeys(per["model"]))
    cals = list(dict.fromkeys(per["calibration"]))
    flights = list(dict.fromkeys(per["flight"]))
    markers = ["o", "s", "^", "D", "v", "P"]
    fig, axes = plt.subplots(1, len(cals), figsize=(5.5 * len(cals), 0.45 * len(models) + 1.8), sharey=True,
                             squeeze=False)
    for ax, cal in zip(axes[0], cals):
        for j, fl in enumerate(flights):
            d = per[(per["calibration"] == cal) & (per["flight"] == fl)].set_index("model").reindex(models)
            ax.scatter(d["coverage"], np.arange(len(models)) + (j - len(flights) / 2) * 0.08, marker=markers[j % 6],
                       color=flight_color(j), s=22, label=label(fl))
        ax.axvline(nominal, color="k", ls="--", lw=1)
        ax.set(xlim=(0, 1.02), title=cal, xlabel=f"coverage of {nominal:.0%} intervals")
        ax.set_yticks(np.arange(len(models)), models, fontsize=8)
    axes[0, 0].invert_yaxis()
    axes[0, -1].legend(fontsize=7, title="held-out flight")
    fig.suptitle("Split-conformal coverage per model and flight (dashed: nominal)")
    fig.tight_layout()
    return save(fig, save_to)


def shift_heatmap(ks: pd.DataFrame, save_to: str | Path | None = None) -> plt.Figure:
    """KS statistic of each feature: held-out flight vs its training flights."""
    fig, ax = plt.subplots(figsize=(1.2 * ks.shape[1] + 3, 0.35 * ks.shape[0] + 1.5))
    sns.heatmap(ks.rename(columns=label), vmin=0, vmax=1, cmap="viridis", annot=True, fmt=".2f",
                annot_kws={"fontsize": 7}, cbar_kws={"label": "KS statistic"}, ax=ax)
    ax.set(title="Domain shift: each flight against the other flights (KS, per feature)", xlabel="", ylabel="")
    fig.tight_layout()
    return save(fig, save_to)


def pca_scatter(projections: dict[str, tuple[np.ndarray, np.ndarray]], flight: np.ndarray, names: list[str],
                save_to: str | Path | None = None) -> plt.Figure:
    """2-D PCA projections (one panel each), coloured by flight."""
    fig, axes = plt.subplots(1, len(projections), figsize=(5.5 * len(projections), 4.5), squeeze=False)
    for ax, (title, (Z, evr)) in zip(axes[0], projections.items()):
        for k, name in enumerate(names):
            m = flight == k
            ax.scatter(Z[m, 0], Z[m, 1], s=6, alpha=0.6, color=flight_color(k), label=label(name))
        ax.set(xlabel=f"PC1 ({evr[0]:.0%})", ylabel=f"PC2 ({evr[1]:.0%})", title=title)
    axes[0, 0].legend(fontsize=7, markerscale=2)
    fig.suptitle("Where each flight sits")
    fig.tight_layout()
    return save(fig, save_to)


def sweep_lines(table: pd.DataFrame, x: str = "shift_strength", save_to: str | Path | None = None) -> plt.Figure:
    """LOFO pooled MAE and mean-of-fold R2 of each model against a swept setting, ± sd over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.3))
    for m, d in table.groupby("model", sort=False):
        d = d.sort_values(x)
        axes[0].errorbar(d[x], d["pooled_mae_m"], yerr=d["pooled_mae_m_sd"], color=model_color(m), marker="o", ms=3,
                         capsize=2, label=m)
        axes[1].errorbar(d[x], d["r2_folds"], yerr=d["r2_folds_sd"], color=model_color(m), marker="o", ms=3, capsize=2)
    axes[0].set(xlabel=x.replace("_", " "), ylabel="pooled MAE (m)", title="Leave-one-flight-out pooled MAE")
    axes[1].set(xlabel=x.replace("_", " "), ylabel="mean of fold R2", title="Mean of fold R2 (the seed's convention)")
    axes[1].set_ylim(max(-5, float(np.nanmin(table["r2_folds"])) - 0.3), 1)
    axes[1].axhline(0, color="0.5", lw=0.6)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save(fig, save_to)
