"""The sections of the settings tree (:class:`cbhlib.config.Config`): one dataclass each, every
field declared once with its default, help and allowed values (:func:`cbhlib.fields.opt`)."""

from __future__ import annotations

from dataclasses import dataclass

from cbhlib.constants import FLIGHT_LEVELS, FLIGHT_NORMS
from cbhlib.fields import opt
from cbhlib.models.fusion import MODES

PRETRAIN_SCOPES = ("fold", "transductive", "all")
NEURAL_BASELINES = ("random_init", "image_stats_mlp")  # trained like the modes, scored as baselines
MODELS = MODES + NEURAL_BASELINES
BASELINES = (
    "climatology",
    "lcl",
    "gbdt",
    "gbdt_all",
    "image_stats_gbdt",
    "ridge",
    "ridge_all",
    "image_stats_mlp",
    "random_init",
)


@dataclass
class PretrainConfig:
    """Self-supervised MAE pretraining (no labels are used)."""

    scope: str = opt(
        "fold",
        "fold: one encoder per held-out flight, trained without that flight's frames; "
        "transductive: also its unlabelled frames (no labels); all: one encoder on every frame",
        choices=PRETRAIN_SCOPES,
    )
    epochs: int = opt(8, "epochs of max_frames frames each", min=0, max=10000)
    batch_size: int = opt(32, "frames per step", min=1, max=65536)
    lr: float = opt(6e-3, "AdamW peak learning rate (linear warm-up, then cosine to 0)", above=0, max=10)
    weight_decay: float = opt(0.05, "AdamW weight decay", min=0, max=10)
    warmup: float = opt(0.1, "fraction of steps spent warming up the learning rate", min=0, max=0.9)
    mask_ratio: float = opt(0.75, "fraction of patches hidden from the encoder", above=0, max=0.95)
    unlabelled: bool = opt(True, "also pretrain on the campaign's unlabelled frames of the allowed flights")
    max_frames: int = opt(1024, "frames drawn per epoch from the allowed ones (0: all of them)", min=0)
    columns_per_image: int = opt(8, "mae1d: random columns drawn per image per step", min=1, max=4096)
    seed: int = opt(-1, "pretraining seed; -1: each unit's own seed (encoder and head follow one seed)", min=-1)
    eval_frames: int = opt(256, "frames on which the final loss and its floors are measured", min=8, max=100000)
    memory_limit_mb: int = opt(1024, "hold pretraining frames in memory below this size, else stream them", min=0)
    missing: str = opt(
        "fail",
        "when a training step finds no encoder: fail (name the pretrain step) or pretrain",
        choices=("fail", "pretrain"),
    )


@dataclass
class TrainConfig:
    """Fusion-head training (the seed's settings)."""

    mode: str = opt(
        "concat",
        "image_only, physical_only, concat or attention; or a neural baseline: random_init "
        "(untrained encoder), image_stats_mlp (image statistics)",
        choices=MODELS,
    )
    epochs: int = opt(50, "maximum epochs", min=1, max=100000)
    batch_size: int = opt(
        32, "samples per step (capped by the smallest training split, with a logged note)", min=1, max=65536
    )
    lr: float = opt(1e-3, "AdamW learning rate (cosine annealed per epoch)", above=0, max=10)
    weight_decay: float = opt(1e-4, "AdamW weight decay", min=0, max=10)
    patience: int = opt(15, "epochs without validation improvement before early stopping", min=1)
    huber_delta_km: float = opt(0.3, "Huber loss delta, km", above=0, max=100)
    finetune: bool = opt(False, "fine-tune the encoder end to end per unit (slow; default frozen and cached)")
    finetune_lr: float = opt(1e-4, "encoder learning rate when fine-tuning", above=0, max=10)
    regions: int = opt(4, "image regions per side: the attention mode's image tokens", min=1, max=64)
    nested: bool = opt(
        True,
        "under LOFO also train, per fold (first seed), one head without each training flight (nested "
        "leave-one-flight-out): their residuals calibrate flight-aware prediction intervals",
    )
    flight_norm: str = opt(
        "none",
        "label-free flight adaptation: none; flight (inputs standardised within their own flight, the "
        "within-flight anomaly learnt, the training level added: model name + _fn); running (the same from "
        "each flight's samples up to each time, for use during a flight: + _fnrun)",
        choices=FLIGHT_NORMS,
    )


@dataclass
class AdaptConfig:
    """Label-free flight adaptation (``train.flight_norm``, ``compare.flight_norms``)."""

    level: str = opt(
        "training",
        "level added to a new flight's predicted anomaly: training (the training samples' mean, climatology's "
        "level) or inputs (ridge of the training flights' mean labels on their mean inputs; few flights: unstable)",
        choices=FLIGHT_LEVELS,
    )
    warmup: int = opt(10, "running normalisation: a flight's first samples before its statistics are used", min=0)


@dataclass
class CompareConfig:
    """The cross-flight comparison: baselines, adaptation, uncertainty, paired intervals."""

    baselines: list[str] = opt(list(BASELINES), "baselines scored on the same folds as the models", choices=BASELINES)
    flight_norms: list[str] = opt(
        ["none", "flight"],
        "the sklearn baselines are scored plain (none) and flight-normalised (flight: _fn, running: _fnrun)",
        choices=FLIGHT_NORMS,
    )
    few_shot_ks: list[int] = opt(
        [0, 5, 10, 20, 50], "labelled samples of the held-out flight used to recalibrate", min=0, max=100000
    )
    few_shot_draw: str = opt(
        "first",
        "headline draw of the k samples: first (in time, as used) or random (optimistic); both are tabulated",
        choices=("first", "random"),
    )
    few_shot_repeats: int = opt(5, "random draws per k (the first-in-time draw has one)", min=1, max=1000)
    linear_shrinkage: float = opt(
        10.0, "linear recalibration: ridge weight pulling the slope to 1 (in samples)", min=0, max=1e6
    )
    conformal_alpha: float = opt(0.1, "1 - nominal coverage of split-conformal intervals", above=0, max=0.5)
    conformal_k: int = opt(20, "labelled samples of the held-out flight calibrating its intervals", min=1)
    aci_gamma: float = opt(
        0.05,
        "plain online intervals (ACI): step of the miscoverage level after each label of the new flight (the "
        "recentred method chooses its own by replaying the training flights)",
        above=0,
        max=1,
    )
    drift_margin_m: float = opt(
        20.0,
        "a difference is resolved only where its interval clears 0 by this much (m): float sums differ between "
        "CPU instruction sets (kernels) and, for the heads, thread counts; 20 m is sized for the default campaign "
        "(its errors: README results): with smaller errors, measure yours (README: Use your own data) and lower it",
        min=0,
        max=10000,
    )
    bootstrap_reps: int = opt(1000, "paired bootstrap replicates for model differences", min=50, max=100000)
    bootstrap_block: int = opt(
        0, "moving-block length along each track; 0: chosen from the data per comparison (Politis-White)", min=0
    )


@dataclass
class ExploreConfig:
    """The exploration notebook."""

    images_per_flight: int = opt(3, "example images shown per flight", min=1, max=20)


@dataclass
class SweepConfig:
    """The sweep notebook."""

    file: str = opt("params/sweep_shift.yaml", "sweep file: the grid, the models and the shared settings")
    workers: int = opt(0, "run the grid points on a local Dask cluster of this many processes (0: serially)", min=0)


@dataclass
class FiguresConfig:
    """Figure files (every figure is also shown in its notebook)."""

    dpi: int = opt(110, "resolution of the PNG files (dots per inch; 300 for print)", min=50, max=1200)
    formats: list[str] = opt(
        [], "vector files written beside each PNG (the pages show the PNG): pdf, svg", choices=("pdf", "svg")
    )
