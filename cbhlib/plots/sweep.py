"""The sweep figure: each model's error against a swept setting, with seed spread."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from cbhlib.plots.style import BASELINES, label, model_color, model_marker, order_models, save

R2_TICKS = (1.0, 0.5, 0.0, -0.5, -1.0, -3.0, -10.0, -30.0, -100.0, -300.0, -1000.0, -3000.0)


def _r2_axis(ax: plt.Axes, values: np.ndarray) -> None:
    """R2 on a symmetric-log axis, linear within ±1 (where skill is read) and logarithmic below,
    so every value is drawn where it is: no value is cut, however negative."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    low = float(v.min()) if len(v) else 0.0
    ax.set_yscale("symlog", linthresh=1.0, linscale=1.5)
    bottom = min(-1.0, low * 1.25 if low < 0 else -1.0)
    ax.set_ylim(bottom, 1.0)
    ticks = [t for t in R2_TICKS if t >= bottom]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda t, _: f"{t:g}"))


def sweep_lines(table: pd.DataFrame, x: str = "shift_strength", save_to: str | Path | None = None) -> plt.Figure:
    """LOFO pooled MAE and mean-of-fold R2 of each model against a swept setting, ± sd over seeds;
    R2 on a symmetric-log axis (linear within ±1), so strongly negative values stay in view."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.3))
    models = order_models(table["model"])
    xs = table[x].to_numpy(float)
    dodge = 0.01 * ((np.nanmax(xs) - np.nanmin(xs)) or 1.0)  # R2 panel: models side by side, error bars apart
    for k, m in enumerate(models):
        d = table[table["model"] == m].sort_values(x)
        style = {
            "color": model_color(m),
            "marker": model_marker(m),
            "ms": 5,
            "capsize": 2,
            "mec": "k" if m in BASELINES else model_color(m),
            "mew": 0.5,
        }
        axes[0].errorbar(d[x], d["pooled_mae_m"], yerr=d["pooled_mae_m_sd"], label=label(m), **style)
        xr = d[x].to_numpy(float) + (k - (len(models) - 1) / 2) * dodge
        axes[1].errorbar(xr, d["r2_folds"], yerr=d["r2_folds_sd"], **style)
    axes[0].set(xlabel=x.replace("_", " "), ylabel="pooled MAE (m)", title="Leave-one-flight-out pooled MAE")
    _r2_axis(axes[1], table["r2_folds"].to_numpy(float) - table["r2_folds_sd"].fillna(0).to_numpy(float))
    axes[1].set(
        xlabel=x.replace("_", " "),
        ylabel="mean of fold R2 (linear within ±1, log below)",
        title="Mean of fold R2 (the seed's convention)",
    )
    axes[1].axhline(0, color="0.5", lw=0.6)
    axes[1].grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save(fig, save_to)
