"""Figures: every function returns the figure and, given ``save_to``, writes a PNG.

Titles name what is shown, axes carry units, flights are named, each model keeps one
colour in every figure (``style.MODEL_COLORS``; baselines in greys). No backend is
forced: notebooks show figures inline, scripts save them.
"""

from cbhlib.plots.compare import (coverage_dots, differences, few_shot_plot, pca_scatter, per_flight_bars,
                                  protocol_inflation, regime_box, shift_heatmap, sweep_lines)
from cbhlib.plots.explore import (cbh_along_track, cbh_distributions, example_images, feature_correlation_bars,
                                  feature_distributions, image_stats_scatter, ks_heatmaps, shadow_vs_lidar)
from cbhlib.plots.style import CAPTIONS, MODEL_COLORS, caption, flight_color, model_color
from cbhlib.plots.train import attention_weights, fold_bars, loss_curves, pred_vs_true, pretrain_curves, reconstructions

__all__ = ["CAPTIONS", "MODEL_COLORS", "attention_weights", "caption", "cbh_along_track", "cbh_distributions",
           "coverage_dots", "differences", "example_images", "feature_correlation_bars", "feature_distributions",
           "few_shot_plot", "flight_color", "fold_bars", "image_stats_scatter", "ks_heatmaps", "loss_curves",
           "model_color", "pca_scatter", "per_flight_bars", "pred_vs_true", "pretrain_curves", "protocol_inflation",
           "reconstructions", "regime_box", "shadow_vs_lidar", "shift_heatmap", "sweep_lines"]
