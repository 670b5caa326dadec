# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Train one model under leave-one-flight-out cross-validation
#
# One fusion mode (`train_mode`: image_only, physical_only, concat, attention) or one of
# the neural baselines trained the same way (random_init: an untrained encoder;
# image_stats_mlp: image statistics into the same head). Per fold and seed: early
# stopping on time blocks of the training flights; scalers and imputers fitted on the
# training samples; the held-out flight is touched only for scoring. The encoders come
# from the pretraining notebook (run it first). Every number is shown beside the
# climatology baseline on the same folds, as mean ± sd over seeds.

# %% tags=["parameters"] sections=["encoder", "pretrain", "train", "head", "adapt", "figures"]
campaign: str = 'data/synthetic_default.h5'  # campaign HDF5 file (relative paths: from the project root)
run_dir: str = 'runs/interactive'  # run folder: reports, checkpoints, encoders, figures, logs
seeds: list[int] = [0, 1, 2, 3, 4]  # one unit per fold and seed; a seed drives its encoder and its head
protocols: list[str] = ['lofo', 'random', 'within_flight']  # lofo (honest), within_flight, random (leaky, for contrast)
val_fraction: float = 0.2  # validation share of the training flights (contiguous time blocks)
feature_groups: list[str] = []  # physical feature groups to use; empty: every group in the file
device: str = 'auto'  # torch device: auto (CUDA when present), cpu, cuda or cuda:N
threads: int = 0  # torch CPU threads; 0 keeps the torch default
progress: bool = True  # progress bars (headless pipeline runs turn them off)
encoder_name: str = 'mae2d'  # mae2d: 2-D patches of the whole image; mae1d: the seed's column encoder
encoder_patch: int = 8  # patch size in pixels (square for mae2d, along the column for mae1d)
encoder_embed_dim: int = 64  # encoder token width
encoder_depth: int = 1  # encoder transformer blocks
encoder_heads: int = 4  # encoder attention heads (must divide embed_dim)
encoder_mlp_ratio: float = 4.0  # transformer MLP width / token width
encoder_decoder_dim: int = 64  # decoder token width
encoder_decoder_depth: int = 1  # decoder transformer blocks
encoder_decoder_heads: int = 4  # decoder attention heads (must divide decoder_dim)
encoder_norm_pix_loss: bool = False  # reconstruct per-patch normalised pixels (MAE paper) instead of image pixels
encoder_pixel_norm: str = 'image'  # image: subtract each image's mean (calibration-free); global: one mean
encoder_columns: str = 'all'  # mae1d: all (every column_stride-th column) or middle (the seed's single column)
encoder_column_stride: int = 4  # mae1d: encode every n-th column
pretrain_scope: str = 'fold'  # fold: one encoder per held-out flight, trained without that flight's frames; transductive: also its unlabelled frames (no labels); all: one encoder on every frame
pretrain_epochs: int = 8  # epochs of max_frames frames each
pretrain_batch_size: int = 32  # frames per step
pretrain_lr: float = 0.006  # AdamW peak learning rate (linear warm-up, then cosine to 0)
pretrain_weight_decay: float = 0.05  # AdamW weight decay
pretrain_warmup: float = 0.1  # fraction of steps spent warming up the learning rate
pretrain_mask_ratio: float = 0.75  # fraction of patches hidden from the encoder
pretrain_unlabelled: bool = True  # also pretrain on the campaign's unlabelled frames of the allowed flights
pretrain_max_frames: int = 1024  # frames drawn per epoch from the allowed ones (0: all of them)
pretrain_columns_per_image: int = 8  # mae1d: random columns drawn per image per step
pretrain_seed: int = -1  # pretraining seed; -1: each unit's own seed (encoder and head follow one seed)
pretrain_eval_frames: int = 256  # frames on which the final loss and its floors are measured
pretrain_memory_limit_mb: int = 1024  # hold pretraining frames in memory below this size, else stream them
pretrain_missing: str = 'fail'  # when a training step finds no encoder: fail (name the pretrain step) or pretrain
train_mode: str = 'concat'  # image_only, physical_only, concat or attention; or a neural baseline: random_init (untrained encoder), image_stats_mlp (image statistics)
train_epochs: int = 50  # maximum epochs
train_batch_size: int = 32  # samples per step (capped by the smallest training split, with a logged note)
train_lr: float = 0.001  # AdamW learning rate (cosine annealed per epoch)
train_weight_decay: float = 0.0001  # AdamW weight decay
train_patience: int = 15  # epochs without validation improvement before early stopping
train_huber_delta_km: float = 0.3  # Huber loss delta, km
train_finetune: bool = False  # fine-tune the encoder end to end per unit (slow; default frozen and cached)
train_finetune_lr: float = 0.0001  # encoder learning rate when fine-tuning
train_regions: int = 4  # image regions per side: the attention mode's image tokens
train_nested: bool = True  # under LOFO also train, per fold (first seed), one head without each training flight (nested leave-one-flight-out): their residuals calibrate flight-aware prediction intervals
train_flight_norm: str = 'none'  # label-free flight adaptation: none; flight (inputs standardised within their own flight, the within-flight anomaly learnt, the training level added: model name + _fn); running (the same from each flight's samples up to each time, for use during a flight: + _fnrun)
head_phys_hidden: list[int] = [128, 64]  # physical encoder widths: K -> 128 -> 64
head_phys_dropout: float = 0.1  # dropout in the physical encoder
head_hidden: list[int] = [256, 128]  # regression head widths: in -> 256 -> 128 -> 1
head_dropout: float = 0.2  # dropout in the regression head
head_attn_dim: int = 64  # attention mode: token width (divisible by attn_heads)
head_attn_heads: int = 4  # attention mode: heads
adapt_level: str = 'training'  # level added to a new flight's predicted anomaly: training (the training samples' mean, climatology's level) or inputs (ridge of the training flights' mean labels on their mean inputs; few flights: unstable)
adapt_warmup: int = 10  # running normalisation: a flight's first samples before its statistics are used
figures_dpi: int = 110  # resolution of the PNG files (dots per inch; 300 for print)
figures_formats: list[str] = []  # vector files written beside each PNG (the pages show the PNG): pdf, svg

# %%
import pandas as pd
from IPython.display import display

from cbhlib import plots
from cbhlib.data.campaign import Campaign
from cbhlib.data.folds import make_folds
from cbhlib.evaluation.flightnorm import variant
from cbhlib.evaluation.results import headline_table, per_flight_table
from cbhlib.pipeline.notebook import environment_report, setup
from cbhlib.training.loops import read_jsonl
from cbhlib.training.runner import run_mode

cfg, run, rng = setup(globals(), "train_" + variant(train_mode, train_flight_norm))
camp = Campaign(cfg.campaign)
print(f"model {cfg.train.mode}; protocols {cfg.protocols}; seeds {cfg.seeds}")

# %%
result = run_mode(cfg, camp=camp)
model = next(iter(result.reports.values()))["model_variant"]
pred = result.predictions(camp)

# %% [markdown]
# ## Per held-out flight, beside climatology
# MAE in metres and R2, mean ± sd over seeds; n is the flight's number of samples.

# %%
flights = per_flight_table(pred[pred["protocol"] == "lofo"])
flights.to_csv(run.table(f"train_{model}_per_flight"), index=False)
display(flights.round(3))

# %% [markdown]
# ## Every protocol
# Pooled MAE over all held-out predictions, the mean of per-flight MAE, and R2 as the
# seed's mean of folds and pooled. Only leave-one-flight-out answers "will it work on a
# new flight"; the others are shown to measure what they inflate.

# %%
display(headline_table(pred).round(3))

# %% [markdown]
# ## Loss curves per fold
# Validation: time blocks of the held-in training flights (never the held-out flight).
# The dash-dot line is the validation loss of predicting the training mean.

# %%
log = pd.DataFrame(read_jsonl(result.log_path))
mean_loss = plots.mean_predictor_loss(camp.cbh_km, make_folds(camp, "lofo", cfg.val_fraction), cfg.train.huber_delta_km)
plots.loss_curves(log, model, save_to=run.figure(f"train_{model}_loss"), reference=mean_loss);

# %% [markdown]
# ## Predicted against lidar CBH per held-out flight (all seeds)

# %%
lofo = pred[(pred["model"] == model) & (pred["protocol"] == "lofo")]
plots.pred_vs_true(lofo, f"{model}: leave-one-flight-out predictions", save_to=run.figure(f"train_{model}_pred_vs_true"));

# %%
plots.fold_bars(flights, model, save_to=run.figure(f"train_{model}_fold_bars"));

# %% [markdown]
# ## Attention weights (attention mode)
# Which physical variables and image regions the image query attended to, against the
# uniform weight; the seed's single-key "attention" always weighed 1.

# %%
att = result.attention()
if att is not None:
    tokens = result.reports["lofo"]["attention_tokens"]
    plots.attention_weights(att, tokens, len(result.phys_names), result.region_grid, camp.flight_names,
                            save_to=run.figure(f"train_{model}_attention_weights"))
else:
    print("not the attention mode")

# %%
print(environment_report())
