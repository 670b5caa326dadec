"""One look for every figure: a fixed colour per model (baselines in greys), a colour per
flight, display units, saving, and a one-line caption per figure name."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

# fusion modes in colour, baselines in greys (darker = stronger baseline); the same everywhere
MODEL_COLORS: dict[str, str] = {
    "physical_only": "#1f77b4", "image_only": "#ff7f0e", "concat": "#2ca02c", "attention": "#d62728",
    "climatology": "#d9d9d9", "lcl": "#bdbdbd", "random_init": "#a6a6a6", "image_stats_mlp": "#8c8c8c",
    "image_stats_gbdt": "#6e6e6e", "gbdt": "#525252", "gbdt_all": "#252525",
}
FLIGHT_PALETTE = plt.get_cmap("Dark2").colors  # flights: a palette no model uses
DISPLAY_UNITS = {"sp": ("hPa", 0.01)}  # feature -> (unit shown, factor from file units)


def model_color(model: str) -> str:
    """The colour of a model in every figure (fine-tuned variants share their mode's)."""
    return MODEL_COLORS.get(model.removesuffix("_finetuned"), "#9467bd")


def flight_color(k: int) -> tuple[float, float, float]:
    return FLIGHT_PALETTE[k % len(FLIGHT_PALETTE)]


def display(name: str, values: np.ndarray, unit: str) -> tuple[np.ndarray, str]:
    """Values and unit as shown (surface pressure in hPa, not Pa)."""
    short = name.split("/")[-1]
    if short in DISPLAY_UNITS and unit in ("Pa", ""):
        shown, factor = DISPLAY_UNITS[short]
        return values * factor, shown
    return values, unit


def save(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    """Write a PNG (the notebook still shows the figure inline)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def label(text: str) -> str:
    """Text safe for matplotlib's mathtext (a flight named ``$\\foo$`` must not crash a plot)."""
    return str(text).replace("$", r"\$")


CAPTIONS: dict[str, str] = {
    "explore_cbh_per_flight": "Lidar cloud base height per flight (n per flight in the legend).",
    "explore_features_per_flight": "Physical features per flight: the flight-to-flight shift a new flight brings.",
    "explore_feature_correlation": "Correlation of each feature with CBH: pooled over flights vs within flights.",
    "explore_example_images": "Example thermal images per flight with their lidar CBH.",
    "explore_shadow_vs_lidar": "Shadow-derived height against lidar CBH, per flight.",
    "explore_cbh_along_track": "CBH along each track; gaps in sampling break the line.",
    "explore_ks_heatmap": "Pairwise Kolmogorov-Smirnov distances between flights.",
    "explore_image_stats": "Calibration-free image statistics against CBH.",
    "pretrain_loss": "MAE pretraining loss per encoder beside its floors (predict-zero, interpolation).",
    "pretrain_reconstructions": "Masked inputs, reconstructions inside the masked patches, and their error.",
    "compare_protocol_inflation": "Pooled R2 of each model under each protocol: what a random split hides.",
    "compare_per_flight_lofo": "Per-flight MAE (and R2) under leave-one-flight-out, mean ± sd over seeds.",
    "compare_differences": "Paired 95 % intervals of pooled-MAE differences (negative: the model is better).",
    "compare_best_pred_vs_true": "Predictions of the best model on each held-out flight.",
    "compare_error_by_regime": "Absolute error by cloud-base regime (leave-one-flight-out).",
    "compare_few_shot": "Few-shot recalibration: per-flight MAE and R2 against k labelled samples.",
    "compare_conformal_coverage": "Coverage of 90 % conformal intervals per model and held-out flight.",
    "compare_shift_ks": "Each flight against the others: KS distance per feature.",
    "compare_pca": "Where each flight sits: PCA of physical features and of image embeddings.",
    "sweep_shift": "Leave-one-flight-out skill against the strength of flight-level shifts.",
}


def caption(name: str) -> str:
    """The caption of a figure file stem (``train_<model>_...`` figures included)."""
    if name in CAPTIONS:
        return CAPTIONS[name]
    for suffix, text in (("_loss", "training and validation loss per fold (first seed)"),
                         ("_pred_vs_true", "predicted against lidar CBH per held-out flight"),
                         ("_fold_bars", "MAE and R2 per held-out flight beside climatology"),
                         ("_attention_weights", "attention weights per variable and image region")):
        if name.startswith("train_") and name.endswith(suffix):
            return f"{name[6:-len(suffix)]}: {text}."
    return name.replace("_", " ")
