"""The sweep figure: each model's error against a swept setting, with seed spread."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cbhlib.plots.style import BASELINES, label, mark_clipped, model_color, model_marker, order_models, save
from cbhlib.plots.style import r2_floor as axis_floor


def sweep_lines(table: pd.DataFrame, x: str = "shift_strength", save_to: str | Path | None = None) -> plt.Figure:
    """LOFO pooled MAE and mean-of-fold R2 of each model against a swept setting, ± sd over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.3))
    floor = axis_floor(table["r2_folds"], -5.0)
    models = order_models(table["model"])
    xs = table[x].to_numpy(float)
    dodge = 0.02 * (
        (np.nanmax(xs) - np.nanmin(xs)) or 1.0
    )  # R2 panel: models side by side, so cut labels don't overlap
    cut = 0
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
        r2 = d["r2_folds"].to_numpy(float)
        xr = d[x].to_numpy(float) + (k - (len(models) - 1) / 2) * dodge
        axes[1].errorbar(xr, np.maximum(r2, floor), yerr=np.where(r2 < floor, 0, d["r2_folds_sd"]), **style)
        cut += mark_clipped(axes[1], xr, r2, floor)
    axes[0].set(xlabel=x.replace("_", " "), ylabel="pooled MAE (m)", title="Leave-one-flight-out pooled MAE")
    axes[1].set(
        xlabel=x.replace("_", " "),
        ylabel="mean of fold R2",
        title="Mean of fold R2 (the seed's convention)" + (f"; below {floor:g} cut: arrow and value" if cut else ""),
    )
    axes[1].set_ylim(floor - 0.3, 1)
    axes[1].axhline(0, color="0.5", lw=0.6)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save(fig, save_to)
