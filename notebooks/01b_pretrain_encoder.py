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
# # Pretrain the image encoders (masked autoencoder, no labels)
#
# One encoder per held-out flight and seed (`pretrain_scope: fold`): each sees the
# labelled and unlabelled camera frames of the *training* flights only, never the
# held-out flight's. One encoder per seed on every frame serves the pooled protocols.
# A unit's seed is its encoder's seed, so the spread over seeds includes pretraining.
# The training notebooks reuse these checkpoints; they never pretrain on the side.
#
# An encoder is worth its place only if its masked-patch loss falls below two floors
# measured on the same frames and masks: predicting zero (each patch's mean) and
# interpolating the visible patches.

# %% tags=["parameters"] sections=["encoder", "pretrain", "figures"]
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
figures_dpi: int = 110  # resolution of the PNG files (dots per inch; 300 for print)
figures_formats: list[str] = []  # vector files written beside each PNG (the pages show the PNG): pdf, svg

# %%
from IPython.display import display

from cbhlib import plots
from cbhlib.data.campaign import Campaign
from cbhlib.pipeline.notebook import environment_report, setup
from cbhlib.store.checkpoints import load_checkpoint
from cbhlib.training import encoders
from cbhlib.training.pretrain import reconstruct_examples

cfg, run, rng = setup(globals(), "pretrain")
camp = Campaign(cfg.campaign)
print(camp)
print("encoders needed:", [f"{sc.key}_seed{s}" for sc, s in encoders.required(cfg, camp)])

# %%
table, paths = encoders.pretrain_step(cfg, camp, run)
table.to_csv(run.table("pretrain_encoders"), index=False)
display(table.round(3))

# %% [markdown]
# ## Loss against its floors
# `frames_of_held_out` counts the held-out flight's frames an encoder saw: 0 under the
# default scope (`transductive` allows its unlabelled frames, never its labels).

# %%
histories = {f"{sc}_seed{s}": load_checkpoint(p)["history"] for (sc, s), p in paths.items()}
plots.pretrain_curves(table, histories, save_to=run.figure("pretrain_loss"), flights=camp.flight_names);
print(f"mean final loss {table['loss_final'].mean():.3f}; floors: predict-zero {table['floor_predict_zero'].mean():.3f}, "
      f"interpolation {table['floor_interpolation'].mean():.3f}; final / predict-zero = "
      f"{table['loss_final'].mean() / table['floor_predict_zero'].mean():.2f}; final / interpolation = "
      f"{table['loss_final'].mean() / table['floor_interpolation'].mean():.2f}")

# %% [markdown]
# ## Masked inputs and reconstructions
# Frames of a held-out flight, through an encoder that never saw them.

# %%
(scope, seed), path = next(iter(paths.items()))
ck = load_checkpoint(path)
held = camp.flight_names.index(ck["held_out_flight"]) if ck["held_out_flight"] else 0
pick = rng.choice(camp.flight_indices(held), size=min(3, len(camp.flight_indices(held))), replace=False)
rec = reconstruct_examples(camp, path, sorted(pick), cfg.pretrain.mask_ratio, seed=cfg.seed)
frames = (f"held-out flight {ck['held_out_flight']}" if ck["held_out_flight"]
          else f"flight {camp.flight_names[held]} (seen in pretraining)")
plots.reconstructions(rec, save_to=run.figure("pretrain_reconstructions"),
                      source=f"{frames} frames through encoder {scope}_seed{seed}",
                      pixel_norm=ck.get("config", {}).get("pixel_norm", "image"));

# %%
print(environment_report())
