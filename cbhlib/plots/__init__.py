"""Figures: every function returns the figure and, given ``save_to``, writes a PNG (and the vector
formats of ``figures.formats``); a figure with nothing to show returns None and leaves a note saying why.

Titles name what is shown, axes carry units, flights are named, each model keeps one
colour, marker and hatch in every figure (``style``; baselines in greys, told apart by
marker and hatch), models come in one order (baselines first), values cut at an axis
carry their true value. No backend is forced: notebooks show figures inline, scripts
save them.

May import: ``evaluation`` and the layers below it (figures draw tables; they compute nothing).
"""

from cbhlib.plots.adapt import coverage_dots, few_shot_plot, intervals_along_track
from cbhlib.plots.compare import (
    best_pred_vs_true,
    differences,
    pca_scatter,
    protocol_inflation,
    regime_box,
    shift_heatmap,
)
from cbhlib.plots.explore import (
    cbh_along_track,
    cbh_distributions,
    example_images,
    feature_correlation_bars,
    feature_distributions,
    image_stats_scatter,
    ks_heatmaps,
    shadow_vs_lidar,
)
from cbhlib.plots.flights import per_flight_bars, track_error_map
from cbhlib.plots.pretrain import pretrain_curves, reconstructions
from cbhlib.plots.style import (
    CAPTIONS,
    MODEL_COLORS,
    MODEL_ORDER,
    caption,
    figure_rank,
    flight_color,
    model_color,
    not_drawn,
    order_models,
)
from cbhlib.plots.sweep import sweep_lines
from cbhlib.plots.train import attention_weights, fold_bars, loss_curves, mean_predictor_loss, pred_vs_true

__all__ = [
    "CAPTIONS",
    "MODEL_COLORS",
    "MODEL_ORDER",
    "attention_weights",
    "best_pred_vs_true",
    "caption",
    "cbh_along_track",
    "cbh_distributions",
    "coverage_dots",
    "differences",
    "example_images",
    "feature_correlation_bars",
    "feature_distributions",
    "few_shot_plot",
    "figure_rank",
    "flight_color",
    "fold_bars",
    "intervals_along_track",
    "image_stats_scatter",
    "ks_heatmaps",
    "loss_curves",
    "mean_predictor_loss",
    "model_color",
    "not_drawn",
    "order_models",
    "pca_scatter",
    "per_flight_bars",
    "pred_vs_true",
    "pretrain_curves",
    "protocol_inflation",
    "reconstructions",
    "regime_box",
    "shadow_vs_lidar",
    "shift_heatmap",
    "sweep_lines",
    "track_error_map",
]
