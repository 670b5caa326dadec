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
# # Explore a campaign
#
# Flights, labels, physical features, images and the shift between flights of one
# campaign file (synthetic or imported). Figures are also written as PNG files to the
# run folder's `figures/`, tables to `tables/`.

# %% tags=["parameters"] sections=["explore", "figures"]
campaign: str = 'data/synthetic_default.h5'  # campaign HDF5 file (relative paths: from the project root)
run_dir: str = 'runs/interactive'  # run folder: reports, checkpoints, encoders, figures, logs
seeds: list[int] = [0, 1, 2, 3, 4]  # one unit per fold and seed; a seed drives its encoder and its head
protocols: list[str] = ['lofo', 'random', 'within_flight']  # lofo (honest), within_flight, random (leaky, for contrast)
val_fraction: float = 0.2  # validation share of the training flights (contiguous time blocks)
feature_groups: list[str] = []  # physical feature groups to use; empty: every group in the file
device: str = 'auto'  # torch device: auto (CUDA when present), cpu, cuda or cuda:N
threads: int = 0  # torch CPU threads; 0 keeps the torch default
progress: bool = True  # progress bars (headless pipeline runs turn them off)
explore_images_per_flight: int = 3  # example images shown per flight
figures_dpi: int = 110  # resolution of the PNG files (dots per inch; 300 for print)
figures_formats: list[str] = []  # vector files written beside each PNG (the pages show the PNG): pdf, svg

# %%
import numpy as np
from IPython.display import Markdown, display

from cbhlib import plots
from cbhlib.data.campaign import validate_campaign
from cbhlib.evaluation import explore, imagestats
from cbhlib.pipeline.notebook import environment_report, setup
from cbhlib.pipeline.render import escape_markdown
from cbhlib.pipeline.summary import campaign_info, campaign_text

cfg, run, rng = setup(globals(), "explore")
camp = validate_campaign(cfg.campaign, scan_images=False)
display(Markdown(escape_markdown(f"This campaign: {campaign_text(campaign_info(camp))}")))
camp

# %% [markdown]
# ## Flights
# Samples, lidar CBH statistics (km), lag-1 autocorrelation along the track, time span;
# then labelled samples and unlabelled camera frames per flight (the frames MAE
# pretraining may use).

# %%
flights = explore.flight_table(camp)
flights.to_csv(run.table("explore_flights"), index=False)
print(f"pooled within-flight lag-1 autocorrelation of CBH: {explore.pooled_lag1(camp):.3f}")
display(flights.round(3))
display(explore.pool_table(camp))

# %% [markdown]
# ## CBH distribution per flight

# %%
plots.cbh_distributions(camp, save_to=run.figure("explore_cbh_per_flight"));

# %% [markdown]
# ## Physical features per flight, and their correlation with CBH
# A feature that correlates with CBH pooled over flights but not within them carries
# flight identity rather than height: it will not transfer to a new flight.

# %%
plots.feature_distributions(camp, save_to=run.figure("explore_features_per_flight"));

# %%
corr = explore.feature_correlations(camp)
corr.to_csv(run.table("explore_feature_correlations"), index=False)
display(corr.round(3))
plots.feature_correlation_bars(corr, save_to=run.figure("explore_feature_correlation"));

# %% [markdown]
# ## Example images per flight, and image statistics that carry height

# %%
if camp.has_images:
    plots.example_images(camp, cfg.explore.images_per_flight, seed=int(rng.integers(1 << 31)),
                         save_to=run.figure("explore_example_images"))
    stats = imagestats.campaign_statistics(camp, run.cache)
    plots.image_stats_scatter(stats, imagestats.NAMES, camp, save_to=run.figure("explore_image_stats"))
else:
    for name in ("explore_example_images", "explore_image_stats"):
        plots.not_drawn(run.figure(name), "this campaign has no images")

# %% [markdown]
# ## Shadow-derived height against lidar CBH

# %%
plots.shadow_vs_lidar(camp, save_to=run.figure("explore_shadow_vs_lidar"));

# %% [markdown]
# ## CBH along each track

# %%
plots.cbh_along_track(camp, save_to=run.figure("explore_cbh_along_track"));

# %% [markdown]
# ## Distribution shift between flights
# Two-sample Kolmogorov-Smirnov statistics: for CBH itself, and averaged over every
# physical feature.

# %%
mats = {"CBH (lidar)": explore.ks_matrix(camp.cbh_km, camp.flight, camp.n_flights),
        "physical features (mean KS)": explore.mean_feature_ks(camp)}
plots.ks_heatmaps(mats, camp.flight_names, save_to=run.figure("explore_ks_heatmap"),
                  n=np.bincount(camp.flight, minlength=camp.n_flights));

# %% [markdown]
# ## Ground truth (synthetic campaigns only)

# %%
truth = camp.truth_attrs()
if truth:
    print(f"best achievable R2 given the label noise: {truth['best_r2']:.3f} (pooled)")
    for name, r2 in zip(camp.flight_names, camp.truth("best_r2_per_flight"), strict=True):
        print(f"  {name}: {r2:.3f}")
else:
    print(f"no truth/ group in this campaign (source: {camp.source or 'not recorded'}): no label-noise ceiling")

# %%
print(environment_report())
