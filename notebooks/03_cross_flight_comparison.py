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
# # Will it work on the next flight? Cross-flight comparison
#
# Every model of this run (the fusion modes and the baselines) under three protocols:
# **leave-one-flight-out** (the honest answer), time blocks **within** each flight, and a
# **pooled random** K-fold that leaks along the track, shown only to measure that leak.
# Then: which differences are resolved (paired intervals over samples and seeds), what
# k labelled samples of a new flight buy, whether 90 % intervals hold on a new flight,
# and how far each flight sits from the others. The notebook ends with what this run
# shows and what it does not, computed from the tables above it.

# %% tags=["parameters"] sections=["encoder", "pretrain", "adapt", "compare", "figures"]
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
adapt_level: str = 'training'  # level added to a new flight's predicted anomaly: training (the training samples' mean, climatology's level) or inputs (ridge of the training flights' mean labels on their mean inputs; few flights: unstable)
adapt_warmup: int = 10  # running normalisation: a flight's first samples before its statistics are used
compare_baselines: list[str] = ['climatology', 'lcl', 'gbdt', 'gbdt_all', 'image_stats_gbdt', 'ridge', 'ridge_all', 'image_stats_mlp', 'random_init']  # baselines scored on the same folds as the models
compare_flight_norms: list[str] = ['none', 'flight']  # the sklearn baselines are scored plain (none) and flight-normalised (flight: _fn, running: _fnrun)
compare_few_shot_ks: list[int] = [0, 5, 10, 20, 50]  # labelled samples of the held-out flight used to recalibrate
compare_few_shot_draw: str = 'first'  # headline draw of the k samples: first (in time, as used) or random (optimistic); both are tabulated
compare_few_shot_repeats: int = 5  # random draws per k (the first-in-time draw has one)
compare_linear_shrinkage: float = 10.0  # linear recalibration: ridge weight pulling the slope to 1 (in samples)
compare_conformal_alpha: float = 0.1  # 1 - nominal coverage of split-conformal intervals
compare_conformal_k: int = 20  # labelled samples of the held-out flight calibrating its intervals
compare_aci_gamma: float = 0.05  # plain online intervals (ACI): step of the miscoverage level after each label of the new flight (the recentred method chooses its own by replaying the training flights)
compare_drift_margin_m: float = 20.0  # a difference is resolved only where its interval clears 0 by this much (m): float sums differ between CPU instruction sets (kernels) and, for the heads, thread counts; 20 m is sized for the default campaign (its errors: README results): with smaller errors, measure yours (README: Use your own data) and lower it
compare_bootstrap_reps: int = 1000  # paired bootstrap replicates for model differences
compare_bootstrap_block: int = 0  # moving-block length along each track; 0: chosen from the data per comparison (Politis-White)
figures_dpi: int = 110  # resolution of the PNG files (dots per inch; 300 for print)
figures_formats: list[str] = []  # vector files written beside each PNG (the pages show the PNG): pdf, svg

# %%
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from cbhlib import plots
from cbhlib.data.campaign import Campaign
from cbhlib.evaluation import adapt, compare, explore, intervals, results
from cbhlib.evaluation.reports import write_json, write_predictions
from cbhlib.pipeline.notebook import environment_report, setup
from cbhlib.pipeline.render import escape_markdown, findings_markdown
from cbhlib.training import encoders

cfg, run, rng = setup(globals(), "compare")
camp = Campaign(cfg.campaign)
ceiling = explore.ceiling(camp)
camp

# %% [markdown]
# ## Baselines on exactly the same folds
# Climatology, Espy's LCL with a fitted offset, gradient-boosted trees on the physical
# features, on calibration-free image statistics, and on both. The neural baselines
# (an untrained encoder, `random_init`; image statistics into the MLP head,
# `image_stats_mlp`) were trained by the pipeline's training steps.

# %%
scored = compare.run_baselines(cfg, camp, run)
pred = results.load_predictions(run, camp)
models = sorted(pred.loc[pred["protocol"] == "lofo", "model"].unique())
if absent := compare.absent_baselines(cfg, models):
    display(Markdown(absent))
cal = compare.flight_residuals(run, camp, models)  # out-of-flight residuals: the label-free intervals' calibration
write_predictions(intervals.with_bounds(pred, cal, cfg.compare.conformal_alpha), run.predictions_csv,
                  run.predictions_parquet)
print(f"{len(pred):,} held-out predictions of {pred['model'].nunique()} models under {sorted(pred['protocol'].unique())}"
      f"; in {run.predictions_csv.name} the leave-one-flight-out rows also carry the label-free interval "
      "cbh predict --intervals writes (lower_km, upper_km)")

# %% [markdown]
# ## Models x protocols
# Headline columns first: pooled MAE (all held-out predictions together), the mean of
# per-flight MAE, then R2 as the seed's mean of folds and pooled; each mean ± sd over
# seeds, with n samples. Baselines first. Deterministic baselines have sd 0.

# %%
headline = results.headline_table(pred)
headline.to_csv(run.table("comparison_headline"), index=False)
display(results.pretty(headline))

# %% [markdown]
# ## What a random split hides
# Neighbouring samples along a track are alike (this campaign's lag-1 autocorrelation is
# printed below): the closer it is to 1, the more a pooled random split scores
# interpolation rather than transfer to a new flight.

# %%
print(f"pooled within-flight lag-1 autocorrelation of CBH in this campaign: {explore.pooled_lag1(camp):.2f}")
plots.protocol_inflation(headline, save_to=run.figure("compare_protocol_inflation"));

# %% [markdown]
# ## Per held-out flight
# MAE per flight and R2 per flight (mean ± sd over seeds), n samples each. Dashed black:
# the best R2 the label noise allows (synthetic campaigns record their truth).

# %%
display(Markdown(escape_markdown(explore.quiet_flight_note(camp))))
per_flight = results.per_flight_table(pred)
per_flight.to_csv(run.table("comparison_per_flight"), index=False)
display(results.pretty(per_flight[per_flight["protocol"] == "lofo"]))
plots.per_flight_bars(per_flight, "lofo", ceiling, save_to=run.figure("compare_per_flight_lofo"));

# %% [markdown]
# ## Which differences are resolved, and do they hold?
# Every model against climatology (a new flight predicted by the training flights' mean)
# and against the strongest simple baseline, every flight-normalised model against its
# plain version, and the ablations (pretraining vs an untrained encoder and vs image
# statistics; fusion vs physics). For each pair, paired 95 % intervals of the difference
# (model minus reference; negative: the model is better) under **both** headline
# metrics: pooled MAE and per-flight MAE. The bootstrap resamples seeds and moving
# blocks of samples along each track; the block length is chosen per comparison from
# the data (Politis-White) and each verdict is rechecked at twice that block. A ranking
# is stated only where both intervals clear zero on the same side by a drift margin
# (`compare_drift_margin_m`: how far float sums move between machines; its 20 m default is
# sized for the default campaign's errors, so measure and lower it for a campaign with
# smaller errors, as the README's "Use your own data" says). Beside it, the
# flight-level evidence: on how many flights the model wins, and an exact sign-flip test
# over flights (with few flights its p cannot be small: the floor is printed).

# %%
comp = compare.comparisons(pred, cfg, headline=headline)
comp.to_csv(run.table("comparison_verdicts"), index=False)
display(compare.verdict_view(comp))
vs_clim, others = compare.split_verdicts(comp, headline)
if len(vs_clim):
    plots.differences(vs_clim, save_to=run.figure("compare_differences_climatology"), reps=cfg.compare.bootstrap_reps,
                      margin=cfg.compare.drift_margin_m);

# %% [markdown]
# Flight-normalised models against their plain versions, and the ablations (the comparisons
# with the strongest simple baseline are in the table above).

# %%
if len(others):
    plots.differences(others, save_to=run.figure("compare_differences"), reps=cfg.compare.bootstrap_reps,
                      margin=cfg.compare.drift_margin_m);

# %% [markdown]
# ## The best model's predictions, and errors by cloud-base regime
# Best: the lowest leave-one-flight-out pooled MAE (mean over seeds). When that is
# climatology (a constant per held-out flight), the best model other than climatology is
# shown beneath it.

# %%
lofo = pred[pred["protocol"] == "lofo"]
lofo_head = headline[headline["protocol"] == "lofo"].sort_values("pooled_mae_m")
best = lofo_head.iloc[0]
rows = [(best["model"], f"{best['model']}: lowest pooled MAE ({best['pooled_mae_m']:.0f} m)"
         + (", a constant per held-out flight" if best["model"] == "climatology" else ""))]
learned = lofo_head[lofo_head["model"] != "climatology"]
if best["model"] == "climatology" and len(learned):
    rows.append((learned.iloc[0]["model"], f"{learned.iloc[0]['model']}: best other than climatology "
                 f"({learned.iloc[0]['pooled_mae_m']:.0f} m)"))
print("; ".join(h for _, h in rows))
plots.best_pred_vs_true(lofo, rows, save_to=run.figure("compare_best_pred_vs_true"),
                        title="Leave-one-flight-out predictions of the best models (criterion: lowest pooled MAE "
                              "over all held-out samples, mean over seeds)");

# %% [markdown]
# Along each held-out flight: the prediction of the same models, of the best model that is
# not a baseline and of climatology beside the lidar CBH in time; and on a map, where along
# the track the errors of the best model other than climatology sit (red: too high, blue:
# too low).

# %%
fusion = lofo_head[~lofo_head["model"].map(plots.style.is_baseline)]["model"].head(1).tolist()
along = list(dict.fromkeys([m for m, _ in rows] + fusion + ["climatology"]))
plots.intervals_along_track(lofo, along, save_to=run.figure("compare_pred_along_track"),
                            title=f"{', '.join(along)}: predicted and lidar CBH along each held-out flight "
                                  "(leave-one-flight-out, first seed)");
plots.track_error_map(lofo, learned.iloc[0]["model"] if len(learned) else best["model"],
                      save_to=run.figure("compare_track_error_map"));

# %%
err = explore.regime_errors(lofo)
display(err.groupby(["model", "regime"])["abs_error_m"].median().unstack().round(0))
plots.regime_box(err, save_to=run.figure("compare_error_by_regime"));

# %% [markdown]
# ## Few-shot adaptation, as it would be used
# For each held-out flight, k labelled samples correct the leave-one-flight-out
# predictions; only the flight's other samples are scored (at least 5). The headline
# draw takes the **first k in time** (a scientist has the first minutes of lidar);
# `random` spreads them along the flight (optimistic). `offset` adds their mean
# residual; `linear` also corrects the slope, shrunk towards 1.

# %%
fs = pd.concat([adapt.few_shot(lofo, cfg.compare.few_shot_ks, draw, cfg.compare.few_shot_repeats,
                               cfg.compare.linear_shrinkage, seed=cfg.seed) for draw in ("first", "random")])
curve = adapt.few_shot_curve(fs)
curve.to_csv(run.table("comparison_few_shot"), index=False)
display(curve.pivot_table(index=["model", "method"], columns=["draw", "k"], values="mae_m").round(0))
k_show = 10 if 10 in cfg.compare.few_shot_ks else max(cfg.compare.few_shot_ks)
display(adapt.few_shot_per_flight(fs, k_show).pivot_table(index=["model", "method"], columns=["draw", "flight"],
                                                          values="mae_m").round(0))
plots.few_shot_plot(curve, cfg.compare.few_shot_draw, save_to=run.figure("compare_few_shot"));

# %% [markdown]
# ## Prediction intervals that hold on a new flight
# 90 % intervals (`compare_conformal_alpha`) per model and held-out flight, the *worst*
# flight's coverage as the headline. Label-free for the new flight: the training flights'
# validation residuals (the earlier method: no between-flight shift in them), flight-aware
# residuals from models that never saw the residual's flight (nested leave-one-flight-out
# inside the training flights; each flight weighs the same), the flight-level maximum, and a
# random-effects interval for a new flight (flight biases normal, Student t on G - 1 degrees of freedom).
# With the new flight's labels: its first k (split conformal), and online adaptive
# conformal inference (ACI) as labels arrive, every label or the same k spread along the
# flight; these are scored on the samples after the first k.

# %%
val = compare.validation_residuals(run, camp, models)
conf = intervals.interval_table(lofo, val, cal, cfg.compare.conformal_alpha, cfg.compare.conformal_k,
                                cfg.compare.aci_gamma)
conf.to_csv(run.table("comparison_intervals"), index=False)
conf_summary = intervals.interval_summary(conf, 1 - cfg.compare.conformal_alpha)
conf_summary.to_csv(run.table("comparison_intervals_summary"), index=False)
display(Markdown(escape_markdown(intervals.guarantee_text(camp.n_flights, cfg.compare.conformal_alpha))))
display(Markdown("Worst flight's coverage per model and method (share of its samples inside; seed means):"))
display(conf_summary.pivot_table(index="model", columns="method", values="worst_coverage", sort=False).round(2))
display(Markdown("Mean interval width per model and method (m; upper minus lower end):"))
display(conf_summary.pivot_table(index="model", columns="method", values="mean_width_m", sort=False).round(0))
if len(conf):
    plots.coverage_dots(conf, 1 - cfg.compare.conformal_alpha, save_to=run.figure("compare_conformal_coverage"),
                        flight_level=(camp.n_flights - 1) / camp.n_flights);

# %% [markdown]
# Along the track: the model with the lowest pooled MAE other than climatology, its
# prediction, the lidar truth, the label-free random-effects interval that `cbh predict
# --intervals` writes (grey band), and the online interval recentred and rescaled to the
# flight from its labels so far (purple lines); the dotted line starts the later half that
# the online check scores.

# %%
if len(cal) and len(learned):
    shown = learned.iloc[0]["model"]
    bands, shifts = intervals.bands(lofo[lofo["model"] == shown], cal, cfg.compare.conformal_alpha)
    plots.intervals_along_track(lofo, shown, bands, shifts, save_to=run.figure("compare_intervals_along_track"));

# %% [markdown]
# ## Domain-shift diagnostics

# %%
ks = explore.shift_ks(camp, cfg.feature_groups or None)
ks.to_csv(run.table("comparison_shift_ks"))
if len(ks):
    plots.shift_heatmap(ks, save_to=run.figure("compare_shift_ks"),
                        n=dict(zip(camp.flight_names, np.bincount(camp.flight, minlength=camp.n_flights).tolist(), strict=True)));
else:
    plots.not_drawn(run.figure("compare_shift_ks"), "this campaign has no physical features to compare")

# %%
X, _ = camp.feature_matrix(cfg.feature_groups or None)
projections = {"physical features": explore.pca_2d(X)} if X.shape[1] >= 2 else {}
enc = run.encoder(encoders.settings_key(cfg, camp), "all", encoders.encoder_seed(cfg, cfg.seed))
note = None
if camp.has_images and enc.exists():
    from cbhlib.training.embed import embed_campaign

    emb = embed_campaign(camp, enc, run.cache, progress=False)
    projections = {"image embeddings (encoder on all flights)": explore.pca_2d(emb.pooled), **projections}
elif camp.has_images:
    note = (f"No image-embedding panel: this run has no encoder pretrained on all flights (pretrain_scope "
            f"'{cfg.pretrain.scope}' trains one per held-out flight).")
if projections:
    plots.pca_scatter(projections, camp.flight, camp.flight_names, save_to=run.figure("compare_pca"), note=note);
else:
    plots.not_drawn(run.figure("compare_pca"), "fewer than two physical features and no image embeddings to project")

# %% [markdown]
# ## Our numbers beside the published ones
# Different data: ours come from the campaign above (its origin in the line below);
# theirs from the real ER-2 flights. Read each row with its protocol.

# %%
display(Markdown(escape_markdown(compare.origin_sentence(camp.source))))
beside = results.published_beside(headline, camp.source)
beside.to_csv(run.table("comparison_published"), index=False)
display(beside.round(3))

# %% [markdown]
# ## What this run shows, and what it does not

# %%
found = compare.findings(headline, comp, curve, conf_summary, cfg.compare.few_shot_draw, camp.source, camp.n_flights)
display(Markdown(findings_markdown(found)))
write_json(run.comparison_summary, compare.summary(headline, comp, curve, conf_summary, found,
                                                  {"drift_margin_m": cfg.compare.drift_margin_m}))

# %%
print(environment_report())
