"""One look for every figure: a fixed colour, marker and hatch per model (baselines in
greys, each with its own marker and hatch), a colour and marker per flight from hues no
model uses, one model order, display units, clipped-value marks, saving, and a caption
per figure name with the order figures are listed in."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from cbhlib.plots.files import not_drawn, save

__all__ = ["not_drawn", "save"]  # figure files (cbhlib.plots.files), used by every figure module

# the same order as the tables (cbhlib.evaluation.results: baselines first, then the fusion modes)
BASELINES: tuple[str, ...] = (
    "climatology",
    "lcl",
    "gbdt",
    "ridge",
    "image_stats_gbdt",
    "image_stats_mlp",
    "gbdt_all",
    "ridge_all",
    "random_init",
)
MODES: tuple[str, ...] = ("physical_only", "image_only", "concat", "attention")
MODEL_ORDER: tuple[str, ...] = BASELINES + MODES

# fusion modes in colour, baselines in greys (darker = stronger baseline); the same everywhere
MODEL_COLORS: dict[str, str] = {
    "physical_only": "#1f77b4",
    "image_only": "#ff7f0e",
    "concat": "#2ca02c",
    "attention": "#d62728",
    "climatology": "#e6e6e6",
    "lcl": "#cfcfcf",
    "random_init": "#b4b4b4",
    "image_stats_mlp": "#9a9a9a",
    "image_stats_gbdt": "#808080",
    "gbdt": "#676767",
    "gbdt_all": "#4e4e4e",
    "ridge": "#a8a8a8",
    "ridge_all": "#5c5c5c",
}
OTHER_MODEL_COLOR = "#daa520"  # a model outside the list above
# greys alone cannot tell seven baselines apart: each also has a marker (lines, dots) and a hatch (bars)
MODEL_MARKERS: dict[str, str] = {
    "physical_only": "o",
    "image_only": "o",
    "concat": "o",
    "attention": "o",
    "climatology": "s",
    "lcl": "^",
    "gbdt": "v",
    "image_stats_gbdt": "D",
    "image_stats_mlp": "P",
    "gbdt_all": "X",
    "random_init": "*",
    "ridge": "<",
    "ridge_all": ">",
}
MODEL_HATCHES: dict[str, str] = {
    "climatology": "",
    "lcl": "xx",
    "gbdt": "//",
    "image_stats_gbdt": "\\\\",
    "image_stats_mlp": "..",
    "gbdt_all": "++",
    "random_init": "oo",
    "ridge": "||",
    "ridge_all": "--",
}
# flights: tab10's other hues (purple, cyan, olive, pink, brown), none a model colour (first four, greys)
FLIGHT_PALETTE: tuple[str, ...] = (
    "#9467bd",
    "#17becf",
    "#bcbd22",
    "#e377c2",
    "#8c564b",
    "#000080",
    "#4b0082",
    "#008080",
)
FLIGHT_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
DISPLAY_UNITS = {"sp": ("hPa", 0.01)}  # feature -> (unit shown, factor from file units)
UNIT_TEXT = {
    "1": "dimensionless",
    "": "",
    "kg/m2": "kg m⁻²",
    "g/kg/km": "g kg⁻¹ km⁻¹",
    "K/km": "K km⁻¹",
    "m/s": "m s⁻¹",
    "W/m2": "W m⁻²",
}
FLOOR_ARROW = "v"  # marker drawn under a bar cut at the axis floor


def base_model(model: str) -> str:
    """The model a variant belongs to (fine-tuned, flight-normalised, other pretraining scope):
    it shares that model's colour, marker and place; :func:`is_adapted` tells the variants apart."""
    name = model.split("_scope-")[0].removesuffix("_finetuned")
    for suffix in ("_fnrun", "_fn"):
        name = name.removesuffix(suffix)
    return name


def is_adapted(model: str) -> bool:
    """A flight-normalised variant (``_fn``, ``_fnrun``): drawn with a dark edge and dashed lines."""
    name = model.split("_scope-")[0].removesuffix("_finetuned")
    return name.endswith(("_fn", "_fnrun"))


def model_color(model: str) -> str:
    """The colour of a model in every figure (fine-tuned variants share their mode's)."""
    return MODEL_COLORS.get(base_model(model), OTHER_MODEL_COLOR)


def line_color(model: str) -> str:
    """A model's colour for a line on white: the light greys of the weaker baselines darkened."""
    c = model_color(model)
    return "#6e6e6e" if c.startswith("#") and int(c[1:3], 16) > 0xB0 and c[1:3] == c[3:5] == c[5:7] else c


def model_marker(model: str) -> str:
    return MODEL_MARKERS.get(base_model(model), "o")


def model_hatch(model: str) -> str:
    return MODEL_HATCHES.get(base_model(model), "")


def is_baseline(model: str) -> bool:
    return base_model(model) in BASELINES


def model_rank(model: str) -> tuple[int, str]:
    """Sort key: baselines first, then the fusion modes (as in every table), then anything else."""
    base = base_model(model)
    return (MODEL_ORDER.index(base) if base in MODEL_ORDER else len(MODEL_ORDER), model)


def order_models(models: object) -> list[str]:
    """Distinct model names in the shared order."""
    return sorted(dict.fromkeys(models), key=model_rank)  # type: ignore[call-overload]


def bar_style(model: str) -> dict[str, object]:
    """Keyword arguments of ``ax.bar`` for a model: colour, hatch, black edge."""
    return {"color": model_color(model), "hatch": model_hatch(model), "edgecolor": "k", "linewidth": 0.4}


def model_patch(model: str, text: str | None = None) -> Patch:
    """A legend entry for a model's bars (colour and hatch)."""
    return Patch(
        facecolor=model_color(model),
        hatch=model_hatch(model),
        edgecolor="k",
        linewidth=0.4,
        label=label(text if text is not None else model),
    )


def flight_color(k: int) -> str:
    return FLIGHT_PALETTE[k % len(FLIGHT_PALETTE)]


def flight_marker(k: int) -> str:
    return FLIGHT_MARKERS[k % len(FLIGHT_MARKERS)]


def unit_text(unit: str) -> str:
    """A unit as printed on an axis ("1" -> "dimensionless", "kg/m2" -> "kg m⁻²")."""
    return UNIT_TEXT.get(unit, unit)


def display(name: str, values: np.ndarray, unit: str) -> tuple[np.ndarray, str]:
    """Values and unit as shown (surface pressure in hPa, not Pa; units typeset)."""
    short = name.split("/")[-1]
    if short in DISPLAY_UNITS and unit in ("Pa", ""):
        shown, factor = DISPLAY_UNITS[short]
        return values * factor, shown
    return values, unit_text(unit)


def label(text: str) -> str:
    """Text safe for matplotlib's mathtext (a flight named ``$\\foo$`` must not crash a plot)."""
    return str(text).replace("$", r"\$")


def r2_floor(values: object, floor: float) -> float:
    """The axis floor of an R2 panel: ``floor`` when some value lies below it, else just under the data."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    lo = float(v.min()) if len(v) else 0.0
    return floor if lo < floor else min(0.0, np.floor((lo - 0.05) * 10) / 10)


def mark_clipped(ax: plt.Axes, x: np.ndarray, values: np.ndarray, floor: float, fontsize: float = 7) -> int:
    """Mark bars cut at ``floor``: an arrow under the bar and its true value written inside.

    The axis must reach below ``floor`` (the arrow sits there). Returns how many were cut.
    """
    cut = np.isfinite(values) & (values < floor)
    for xi, v in zip(np.asarray(x)[cut], np.asarray(values)[cut], strict=True):
        ax.plot(xi, floor, marker=FLOOR_ARROW, color="k", ms=4, clip_on=False, zorder=5)
        ax.annotate(
            f"{v:.1f}",
            (xi, floor),
            xytext=(0, 5),
            textcoords="offset points",
            ha="center",
            va="bottom",
            rotation=90,
            fontsize=fontsize,
            zorder=6,
            bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "alpha": 0.85, "lw": 0},
        )
    return int(cut.sum())


def sd_bars(
    ax: plt.Axes,
    x: np.ndarray,
    values: np.ndarray,
    sd: np.ndarray | None,
    keep: np.ndarray | None = None,
    capsize: float = 2,
    lw: float = 1.0,
) -> None:
    """Error bars of ± sd over seeds, only where sd > 0 (deterministic models have none) and ``keep``."""
    if sd is None:
        return
    sd = np.asarray(sd, float)
    ok = np.isfinite(sd) & (sd > 0) & np.isfinite(values)
    if keep is not None:
        ok &= keep
    if ok.any():
        ax.errorbar(
            np.asarray(x)[ok],
            np.asarray(values)[ok],
            yerr=sd[ok],
            fmt="none",
            ecolor="k",
            capsize=capsize,
            lw=lw,
            zorder=4,
        )


# figures in the order of the pipeline (index.html lists them so); train_* figures go per mode
FIGURE_ORDER: tuple[str, ...] = (
    "explore_cbh_per_flight",
    "explore_features_per_flight",
    "explore_feature_correlation",
    "explore_example_images",
    "explore_image_stats",
    "explore_shadow_vs_lidar",
    "explore_cbh_along_track",
    "explore_ks_heatmap",
    "pretrain_loss",
    "pretrain_reconstructions",
    "train_",
    "compare_protocol_inflation",
    "compare_per_flight_lofo",
    "compare_differences_climatology",
    "compare_differences",
    "compare_best_pred_vs_true",
    "compare_pred_along_track",
    "compare_track_error_map",
    "compare_error_by_regime",
    "compare_few_shot",
    "compare_conformal_coverage",
    "compare_intervals_along_track",
    "compare_shift_ks",
    "compare_pca",
    "sweep_shift",
)
TRAIN_KINDS: tuple[str, ...] = ("_loss", "_pred_vs_true", "_fold_bars", "_attention_weights")

CAPTIONS: dict[str, str] = {
    "explore_cbh_per_flight": "Cumulative distribution of lidar cloud base height per flight (n per flight in the "
    "legend; an ECDF does not let a small flight squash the others).",
    "explore_features_per_flight": "Physical features per flight (boxes: quartiles; whiskers: 1.5 IQR; outliers "
    "hidden; every sample drawn for small flights): the shift a new flight brings.",
    "explore_feature_correlation": "Pearson correlation of each feature with CBH: pooled over flights (black) vs the "
    "mean within flights (white); the missing fraction per feature on the right.",
    "explore_example_images": "Example thermal images per flight with their lidar CBH; one colour scale per flight "
    "(1st-99th percentile of its images shown).",
    "explore_image_stats": "Calibration-free image statistics (brightness-temperature spreads, cold-pixel fraction) "
    "against lidar CBH, per flight.",
    "explore_shadow_vs_lidar": "Shadow-derived height against lidar CBH, per flight (y-axis cut at the 99th "
    "percentile; points above it counted in the figure).",
    "explore_cbh_along_track": "CBH along each track with each flight's duration and lag-1 autocorrelation; the line "
    "breaks at gaps longer than the threshold stated in the figure.",
    "explore_ks_heatmap": "Pairwise Kolmogorov-Smirnov distances between flights (diagonal masked; n per flight in "
    "the tick labels).",
    "pretrain_loss": "MAE pretraining loss per encoder (coloured by held-out flight; black: mean) beside its floors "
    "(predict-zero, interpolation) and the final held-in loss, each a mean over encoders.",
    "pretrain_reconstructions": "Masked inputs (grey: hidden patches), reconstructions inside the hidden patches, and "
    "their error (reconstruction − input; grey: visible patches, not scored).",
    "compare_protocol_inflation": "Pooled R2 of each model under each protocol, mean ± sd over seeds (bars cut at the "
    "axis floor carry their value; 'not run': a model trained under LOFO only).",
    "compare_per_flight_lofo": "Every model on every held-out flight under leave-one-flight-out: MAE (left) and R2 "
    "(right), a marker per flight (± sd over seeds), a black bar at the mean over flights; baselines (grey italics) "
    "and flight-normalised variants in blocks of their own; R2 below the floor drawn there as an arrow, its values "
    "(and a mean below it) written in the shaded margin; the best "
    "R2 the label noise allows where the campaign records its truth.",
    "compare_differences_climatology": "Every model against climatology: paired differences of pooled MAE (left) "
    "and per-flight MAE (right) with 95 % intervals (moving-block bootstrap within flights over samples and seeds); "
    "filled where the interval clears 0 by the drift margin (grey band), in the winner's colour; right: the verdict, "
    "flights won, sign-flip p.",
    "compare_differences": "Paired differences of pooled MAE (left) and per-flight MAE (right) with 95 % intervals "
    "from a moving-block bootstrap within flights over samples and seeds (block chosen per comparison); filled where "
    "the interval excludes 0, in the winner's colour; right: the verdict (a ranking needs both metrics), flights "
    "won and the sign-flip p over flights.",
    "compare_best_pred_vs_true": "Held-out predictions of the model with the lowest leave-one-flight-out pooled MAE "
    "(mean over seeds) and, when that is climatology (a constant), of the best model "
    "other than climatology; n counts samples (×seeds where seeds differ).",
    "compare_pred_along_track": "Predicted and lidar CBH against time along each held-out flight, for the best "
    "models and climatology (leave-one-flight-out, first seed).",
    "compare_track_error_map": "Each held-out flight's track (latitude, longitude) coloured by the error of the best "
    "model other than climatology (predicted − lidar, mean over seeds; ring: where the track starts).",
    "compare_error_by_regime": "Absolute error by cloud-base regime under leave-one-flight-out (seeds pooled; n per "
    "regime; whiskers: 1.5 IQR; outliers hidden; y cut above 90 % of the whisker tops, "
    "longer whiskers labelled with their top).",
    "compare_few_shot": "Few-shot recalibration on the first k samples in time (the headline draw): mean per-flight "
    "MAE against k, by method and model group; faint: the optimistic random draw.",
    "compare_conformal_coverage": "Coverage of 90 % prediction intervals per model and held-out flight, one panel "
    "per method: the training flights' validation residuals, flight-aware residuals (nested leave-one-flight-out), "
    "the flight-level maximum, a random-effects interval (Student t over flights; what cbh predict --intervals "
    "writes), the first k labels of the new flight, and three online ACI variants (every label, k labels, "
    "recentred and rescaled: what --intervals online writes); ringed: the worst "
    "flight; dotted: the most a flight-level method can promise, (F-1)/F of new flights with F flights.",
    "compare_intervals_along_track": "The model with the lowest pooled MAE (other than climatology): its prediction, "
    "the lidar truth, the label-free random-effects interval (grey band; the method of cbh predict --intervals) and "
    "the online interval recentred on the labels so far (purple lines) along each held-out flight (first seed); "
    "dotted: where the later half scored by the online check starts.",
    "compare_shift_ks": "Each held-out flight against the other flights: KS distance per feature (n per flight in "
    "the tick labels).",
    "compare_pca": "Where each flight sits: PCA of the standardised, median-imputed physical features, and of image "
    "embeddings when an encoder trained on all flights exists (the figure says when it does not).",
    "sweep_shift": "Leave-one-flight-out pooled MAE and mean of fold R2 against the swept setting, ± sd over seeds "
    "(R2 on a symmetric-log axis: linear within ±1, every value in view).",
}
TRAIN_CAPTIONS: dict[str, str] = {
    "_loss": "training (black dashed) and validation loss per fold, first seed; validation = time blocks of the "
    "held-in training flights; dash-dot: Huber loss of predicting the training mean",
    "_pred_vs_true": "predicted against lidar CBH per held-out flight (leave-one-flight-out)",
    "_fold_bars": "MAE and R2 per held-out flight beside climatology, mean ± sd over seeds",
    "_attention_weights": "attention weights per physical variable (a marker per held-out flight, grey bar: their "
    "mean) and per image region, against the uniform weight",
}


def caption(name: str) -> str:
    """The caption of a figure file stem (``train_<model>_...`` figures included)."""
    if name in CAPTIONS:
        return CAPTIONS[name]
    for suffix, text in TRAIN_CAPTIONS.items():
        if name.startswith("train_") and name.endswith(suffix):
            return f"{name[6 : -len(suffix)]}: {text}."
    return name.replace("_", " ")


def figure_rank(name: str, steps: list[str] | None = None) -> tuple[int, int, int, str]:
    """Sort key of a figure stem: pipeline order (explore, pretrain, train per mode in step
    order, compare, sweep), then the notebook's order; unknown figures last."""
    if name.startswith("train_"):
        kind = next((i for i, s in enumerate(TRAIN_KINDS) if name.endswith(s)), len(TRAIN_KINDS))
        model = name[6 : -len(TRAIN_KINDS[kind])] if kind < len(TRAIN_KINDS) else name[6:]
        steps = steps or []
        step = steps.index(model) if model in steps else len(steps) + model_rank(model)[0]
        return (FIGURE_ORDER.index("train_"), step, kind, name)
    if name in FIGURE_ORDER:
        return (FIGURE_ORDER.index(name), 0, 0, name)
    return (len(FIGURE_ORDER), 0, 0, name)
