"""Write the pipeline's notebooks (committed without outputs) from the cells below.

The notebooks are thin: a typed parameters cell, calls into ``cbhlib``, tables and
figures. Run ``python scripts/build_notebooks.py`` after editing a cell here; editing
the notebooks in JupyterLab directly works too (commit them without outputs).
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cbhlib.params import RunParams  # noqa: E402

HELP = {f.name: "" for f in fields(RunParams)}
for line in (ROOT / "cbhlib" / "params.py").read_text().splitlines():
    s = line.strip()
    if ":" in s and "#" in s and s.split(":")[0] in HELP and "=" in s:
        HELP[s.split(":")[0]] = s.split("#", 1)[1].strip()


def params_cell(names: list[str], overrides: dict[str, str] | None = None) -> str:
    defaults = RunParams()
    lines = []
    for f in fields(RunParams):
        if f.name not in names:
            continue
        value = (overrides or {}).get(f.name, repr(getattr(defaults, f.name)))
        typ = str(f.type).replace("list[str]", "list").replace("list[int]", "list")
        lines.append(f"{f.name}: {typ} = {value}  # {HELP[f.name]}")
    return "\n".join(lines)


def nb(cells: list[tuple[str, str] | tuple[str, str, list[str]]]) -> nbformat.NotebookNode:
    out = []
    for cell in cells:
        kind, src = cell[0], cell[1]
        tags = cell[2] if len(cell) > 2 else []
        c = new_markdown_cell(src) if kind == "md" else new_code_cell(src)
        if tags:
            c.metadata["tags"] = tags
        out.append(c)
    book = new_notebook(cells=out)
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.metadata["language_info"] = {"name": "python"}
    return book


ENV_CELL = ("code", "from cbhlib.notebook import environment_report\n\nenvironment_report()")

EXPLORE = nb([
    ("md", "# Explore a campaign\n\nFlights, labels, physical features, images and the distribution shift "
           "between flights of one campaign file (synthetic or imported). Every figure is also written as a "
           "PNG to `figures_dir`."),
    ("code", "campaign: str = 'data/synthetic_default.h5'  # campaign HDF5 file to explore\n"
             "figures_dir: str = 'figures/default'  # where PNG figures are written\n"
             "run_dir: str = 'runs/default'  # where tables are written\n"
             "images_per_flight: int = 3  # example images shown per flight\n"
             "seed: int = 0  # seeds the one random generator of this notebook", ["parameters"]),
    ("code", "from pathlib import Path\n\nimport numpy as np\nfrom IPython.display import display\n\n"
             "from cbhlib import explore, plots\nfrom cbhlib.campaign import validate_campaign\n\n"
             "rng = np.random.default_rng(seed)\nfig_dir = Path(figures_dir)\nout_dir = Path(run_dir)\n"
             "out_dir.mkdir(parents=True, exist_ok=True)\n"
             "camp = validate_campaign(campaign, scan_images=False)\ncamp"),
    ("md", "## Flights\nSamples, lidar CBH statistics (km), lag-1 autocorrelation along the track, time span."),
    ("code", "flights = explore.flight_table(camp)\nflights.to_csv(out_dir / 'explore_flights.csv', index=False)\n"
             "print(f'pooled within-flight lag-1 autocorrelation of CBH: {explore.pooled_lag1(camp):.3f}')\n"
             "display(flights.round(3))"),
    ("md", "## CBH distribution per flight"),
    ("code", "plots.cbh_distributions(camp, save=fig_dir / 'explore_cbh_per_flight.png');"),
    ("md", "## Physical features: distribution per flight and correlation with CBH"),
    ("code", "units = explore.feature_units(camp)\n"
             "plots.feature_distributions(camp, units, save=fig_dir / 'explore_features_per_flight.png');"),
    ("code", "corr = explore.feature_correlations(camp)\ncorr.to_csv(out_dir / 'explore_feature_correlations.csv', index=False)\n"
             "display(corr.round(3))\nplots.feature_correlation_bars(corr, save=fig_dir / 'explore_feature_correlation.png');"),
    ("md", "## Example images per flight"),
    ("code", "if camp.has_images:\n"
             "    plots.example_images(camp, images_per_flight, seed=int(rng.integers(1 << 31)),\n"
             "                         save=fig_dir / 'explore_example_images.png')\n"
             "else:\n    print('this campaign has no images')"),
    ("md", "## Shadow-derived height against lidar CBH"),
    ("code", "plots.shadow_vs_lidar(camp, save=fig_dir / 'explore_shadow_vs_lidar.png');"),
    ("md", "## CBH along each track"),
    ("code", "plots.cbh_along_track(camp, save=fig_dir / 'explore_cbh_along_track.png');"),
    ("md", "## Distribution shift between flights\nTwo-sample Kolmogorov-Smirnov statistics: for CBH itself, "
           "and averaged over every physical feature."),
    ("code", "mats = {'CBH (lidar)': explore.ks_matrix(camp.cbh_km, camp.flight, camp.n_flights),\n"
             "        'physical features (mean KS)': explore.mean_feature_ks(camp)}\n"
             "plots.ks_heatmaps(mats, camp.flight_names, save=fig_dir / 'explore_ks_heatmap.png');"),
    ("md", "## Ground truth (synthetic campaigns only)"),
    ("code", "truth = camp.truth_attrs()\nif truth:\n"
             "    per_flight = camp.truth('best_r2_per_flight')\n"
             "    print(f\"best achievable R2 given the label noise: {truth['best_r2']:.3f} (pooled)\")\n"
             "    for name, r2 in zip(camp.flight_names, per_flight):\n        print(f'  {name}: {r2:.3f}')\n"
             "else:\n    print('no truth/ group: a real campaign')"),
    ENV_CELL,
])

PRETRAIN_NAMES = ["campaign", "run_dir", "figures_dir", "protocols", "seeds", "encoder", "patch", "embed_dim",
                  "depth", "heads", "columns", "column_stride", "pixel_norm", "pretrain_scope", "pretrain_epochs",
                  "pretrain_batch_size", "pretrain_lr", "mask_ratio", "threads", "device", "progress"]

PRETRAIN = nb([
    ("md", "# Pretrain the image encoder (masked autoencoder)\n\nSelf-supervised: no labels are used. With "
           "`pretrain_scope: fold`, each leave-one-flight-out fold gets its own encoder that never saw the "
           "held-out flight's images; an encoder on all images serves the pooled and within-flight protocols. "
           "Fusion runs reuse these checkpoints."),
    ("code", params_cell(PRETRAIN_NAMES), ["parameters"]),
    ("code", "from pathlib import Path\n\nimport numpy as np\nimport pandas as pd\nfrom IPython.display import display\n\n"
             "from cbhlib import plots\nfrom cbhlib.campaign import Campaign\nfrom cbhlib.checkpoints import load_checkpoint\n"
             "from cbhlib.params import params_from_namespace\nfrom cbhlib.pretrain import reconstruct_examples\n"
             "from cbhlib.runner import encoder_keys, ensure_encoders\n\n"
             "params = params_from_namespace(globals())\nrng = np.random.default_rng(params.seeds[0])\n"
             "camp = Campaign(params.campaign)\nfig_dir = Path(params.figures_dir)\n"
             "keys = sorted({k for proto in params.protocols for k in encoder_keys(camp, params, proto)})\nkeys"),
    ("code", "paths = ensure_encoders(camp, params, keys)\n"
             "ckpts = {k: load_checkpoint(p) for k, p in paths.items()}\n"
             "summary = pd.DataFrame([{'encoder': k, 'images': c['n_images'], 'seconds': c['seconds'],\n"
             "                         'first_loss': c['history'][0] if c['history'] else None,\n"
             "                         'last_loss': c['history'][-1] if c['history'] else None}\n"
             "                        for k, c in ckpts.items()])\ndisplay(summary.round(4))"),
    ("code", "plots.pretrain_curves({k: c['history'] for k, c in ckpts.items()}, save=fig_dir / 'pretrain_loss.png');"),
    ("md", "## Masked inputs and reconstructions\nImages of the held-out flight of the first fold, through the "
           "encoder that never saw them."),
    ("code", "key = keys[0]\nheld_out = int(key[4:]) if key.startswith('fold') else 0\n"
             "pick = np.sort(rng.choice(camp.flight_indices(held_out), size=3, replace=False))\n"
             "inp, masked, rec = reconstruct_examples(camp, paths[key], pick, params.mask_ratio)\n"
             "plots.reconstructions(inp, masked, rec, save=fig_dir / 'pretrain_reconstructions.png');"),
    ENV_CELL,
])

TRAIN_NAMES = [f.name for f in fields(RunParams)]

TRAIN = nb([
    ("md", "# Train one fusion mode with leave-one-flight-out cross-validation\n\n"
           "Per fold: early stopping and epoch selection on time blocks of the training flights; scalers and "
           "imputers fitted on the training samples; the held-out flight is touched only for scoring. "
           "Every model is shown beside the climatology baseline on the same folds."),
    ("code", params_cell(TRAIN_NAMES), ["parameters"]),
    ("code", "from pathlib import Path\n\nimport numpy as np\nimport pandas as pd\nfrom IPython.display import display\n\n"
             "from cbhlib import plots\nfrom cbhlib.notebook import fold_table, protocol_table, read_log\n"
             "from cbhlib.params import params_from_namespace\nfrom cbhlib.runner import run_mode\n\n"
             "params = params_from_namespace(globals())\nnp.random.default_rng(params.seeds[0])\n"
             "fig_dir = Path(params.figures_dir)\nprint(params.mode, params.protocols, 'seeds', params.seeds)"),
    ("code", "run = run_mode(params)\nreport = run.reports['lofo'] if 'lofo' in run.reports else next(iter(run.reports.values()))"),
    ("md", "## Per-flight results (leave-one-flight-out) beside climatology"),
    ("code", "display(fold_table(report).round(3))"),
    ("code", "display(protocol_table(run).round(3))"),
    ("md", "## Loss curves per fold"),
    ("code", "log = read_log(run.log_path)\nplots.loss_curves(log, params.mode, save=fig_dir / f'train_{params.mode}_loss.png');"),
    ("md", "## Predicted against lidar CBH per held-out flight"),
    ("code", "pred = pd.read_csv(Path(params.run_dir) / f'predictions_{params.mode}.csv')\n"
             "plots.pred_vs_true(pred, f'{params.mode}: leave-one-flight-out predictions', "
             "save=fig_dir / f'train_{params.mode}_pred_vs_true.png');"),
    ("md", "## Metrics per fold beside the climatology baseline"),
    ("code", "units = run.units.get('lofo', next(iter(run.units.values())))\n"
             "clim = run.climatology.get('lofo', next(iter(run.climatology.values())))\n"
             "first = [u for u in units if u['seed'] == params.seeds[0]]\n"
             "plots.fold_bars(first, clim, f'{params.mode} vs climatology (LOFO)', "
             "save=fig_dir / f'train_{params.mode}_fold_bars.png');"),
    ("md", "## Attention weights (attention mode)\nWhich physical variables and image regions the image query "
           "attended to; the weights differ from sample to sample (the seed's single-key attention was always 1)."),
    ("code", "if params.mode == 'attention':\n"
             "    plots.attention_weights(first, report['attention_tokens'], len(run.phys_names), run.region_grid,\n"
             "                            save=fig_dir / 'train_attention_weights.png')\n"
             "else:\n    print('not the attention mode')"),
    ENV_CELL,
])


COMPARE = nb([
    ("md", "# Will it work on the next flight? Cross-flight comparison\n\n"
           "Every model of this run (the fusion modes and three baselines) under three protocols: "
           "**leave-one-flight-out** (the honest answer), time blocks **within** each flight, and a **pooled random** "
           "K-fold that leaks along the track and is shown only to measure that leak. Then: what k labelled samples "
           "of a new flight buy (few-shot recalibration), whether 90 % intervals hold on a new flight, and how far "
           "each flight sits from the others."),
    ("code", "campaign: str = 'data/synthetic_default.h5'  # campaign HDF5 file\n"
             "run_dir: str = 'runs/default'  # run folder holding the fusion-mode reports\n"
             "figures_dir: str = 'figures/default'  # where PNG figures are written\n"
             "protocols: list = ['lofo', 'random', 'within_flight']  # protocols scored for the baselines\n"
             "baselines: list = ['climatology', 'lcl', 'gbdt']  # baselines to score on the same folds\n"
             "few_shot_ks: list = [0, 5, 10, 20, 50]  # labelled target-flight samples for recalibration\n"
             "few_shot_repeats: int = 5  # random draws per k\n"
             "conformal_alpha: float = 0.1  # 1 - nominal coverage of the intervals\n"
             "conformal_k: int = 20  # target-flight samples calibrating the within-flight intervals\n"
             "seed: int = 0  # seeds the notebook's random draws", ["parameters"]),
    ("code", "from pathlib import Path\n\nimport numpy as np\nimport pandas as pd\nfrom IPython.display import display\n\n"
             "from cbhlib import compare, plots\nfrom cbhlib.campaign import Campaign\nfrom cbhlib.published import published_table\n"
             "from cbhlib.reports import write_json\n\n"
             "rng = np.random.default_rng(seed)\ncamp = Campaign(campaign)\nfig_dir = Path(figures_dir)\nrun = Path(run_dir)\n"
             "flights = camp.flight_names\nceiling = compare.ceiling(camp)\ncamp"),
    ("md", "## Baselines on exactly the same folds"),
    ("code", "base = compare.run_baselines(camp, protocols, run, names=tuple(baselines))\n"
             "runs = compare.load_runs(run)\nprint(sorted(set(runs['model'])), sorted(set(runs['protocol'])))"),
    ("md", "## Models x protocols\nPer-flight R2 and MAE (m), the seed-style mean of fold R2, and R2 pooled over all "
           "held-out predictions. Under `within_flight` and `random` the per-flight columns pool that flight's "
           "held-out blocks."),
    ("code", "long, wide = compare.comparison_table(runs, flights)\nwide.to_csv(run / 'comparison_table.csv', index=False)\n"
             "long.to_csv(run / 'comparison_per_flight.csv', index=False)\n"
             "display(wide.round(3))"),
    ("md", "## What a random split hides\nThe same model code under each splitter. Neighbouring samples along a track "
           "are nearly identical (lag-1 autocorrelation ~0.9), so a pooled random split scores interpolation, not "
           "transfer to a new flight."),
    ("code", "plots.protocol_inflation(wide, save=fig_dir / 'compare_protocol_inflation.png');"),
    ("md", "## Per held-out flight, beside climatology" + " (dashed green: the best score the label noise allows)"),
    ("code", "plots.per_flight_bars(long, 'lofo', ceiling, save=fig_dir / 'compare_per_flight_lofo.png');"),
    ("md", "## The best model's predictions"),
    ("code", "lofo = wide[wide['protocol'] == 'lofo'].sort_values('pooled R2', ascending=False)\n"
             "best = lofo.iloc[0]['model']\nprint('best model under leave-one-flight-out (pooled R2):', best)\n"
             "best_pred = runs[(runs.model == best) & (runs.protocol == 'lofo')].iloc[0]['pred']\n"
             "plots.pred_vs_true(best_pred, f'{best}: leave-one-flight-out predictions by flight', "
             "save=fig_dir / 'compare_best_pred_vs_true.png');"),
    ("code", "err = pd.concat([compare.regime_errors(r['pred']).assign(model=r['model'])\n"
             "                 for _, r in runs[runs.protocol == 'lofo'].iterrows() if r['pred'] is not None])\n"
             "display(err.groupby(['model', 'regime'])['abs_error_m'].median().unstack().round(0))\n"
             "plots.regime_box(err, save=fig_dir / 'compare_error_by_regime.png');"),
    ("md", "## Few-shot adaptation\nFor each held-out flight, k labelled samples (drawn `few_shot_repeats` times, "
           "capped so at least 5 remain) give the model's mean residual on that flight; the offset is added to the "
           "flight's other predictions, which alone are scored. k = 0 is the plain leave-one-flight-out result. "
           "Mean R2 over flights is dominated by small flights with little CBH variance (a handful of scored "
           "samples at large k); the MAE panel is the steadier read."),
    ("code", "fs = pd.concat([compare.few_shot(r['pred'], tuple(few_shot_ks), few_shot_repeats, seed, r['model'])\n"
             "                for _, r in runs[runs.protocol == 'lofo'].iterrows() if r['pred'] is not None])\n"
             "curve = compare.few_shot_curve(fs)\ncurve.to_csv(run / 'comparison_few_shot.csv', index=False)\n"
             "check = curve[curve.k == 0].set_index('model')['r2_mean']\n"
             "lofo_mean = lofo.set_index('model')['mean of fold R2']\n"
             "print('k = 0 reproduces the LOFO mean of fold R2:', bool(np.allclose(check.sort_index(), lofo_mean.reindex(check.index).sort_index())))\n"
             "display(curve.pivot(index='model', columns='k', values='r2_mean').round(3))\n"
             "plots.few_shot_plot(curve, save=fig_dir / 'compare_few_shot.png');"),
    ("md", "## Calibrated uncertainty\nSplit-conformal 90 % intervals calibrated (a) on residuals from the training "
           "flights' validation blocks and (b) on `conformal_k` labelled samples of the target flight.\n\n"
           "**Why (a) fails under shift:** conformal coverage is guaranteed only when calibration and test residuals "
           "are exchangeable. A new flight brings its own bias (ERA5 representativeness, camera calibration, cloud "
           "regime), so its residuals are shifted and wider than the training flights' and the interval misses. "
           "Calibrating on a few samples of the target flight restores exchangeability within that flight."),
    ("code", "conf = pd.concat([compare.conformal_table(compare.load_units(run, m), camp.cbh_km.astype(float), conformal_alpha,\n"
             "                                          conformal_k, few_shot_repeats, seed, m)\n"
             "                  for m in sorted(set(runs[runs.protocol == 'lofo']['model']))], ignore_index=True)\n"
             "conf.to_csv(run / 'comparison_conformal.csv', index=False)\n"
             "display(conf.pivot_table(index=['model', 'calibration'], columns='flight', values='coverage').round(2))\n"
             "plots.coverage_plot(conf, 1 - conformal_alpha, save=fig_dir / 'compare_conformal_coverage.png');"),
    ("md", "## Domain-shift diagnostics"),
    ("code", "ks = compare.shift_ks(camp)\nks.to_csv(run / 'comparison_shift_ks.csv')\n"
             "plots.shift_heatmap(ks, save=fig_dir / 'compare_shift_ks.png');"),
    ("code", "X, _ = camp.feature_matrix()\nprojections = {'physical features': compare.pca_2d(X)}\n"
             "enc = sorted(run.glob('encoders/*/all.pt'), key=lambda p: p.stat().st_mtime)\n"
             "if camp.has_images and enc:\n"
             "    from cbhlib.embed import embed_campaign\n"
             "    emb = embed_campaign(camp, enc[-1], run / 'cache', progress=False)\n"
             "    projections = {'image embeddings (encoder: all flights)': compare.pca_2d(emb.pooled), **projections}\n"
             "plots.pca_scatter(projections, camp.flight, flights, save=fig_dir / 'compare_pca.png');"),
    ("md", "## Our numbers beside the published ones\nDifferent data: ours come from the campaign above "
           "(synthetic unless you imported your own); theirs from the real ER-2 flights. Read each row with its protocol."),
    ("code", "ours = wide[['model', 'protocol', 'mean of fold R2', 'pooled MAE m']].rename(\n"
             "    columns={'mean of fold R2': 'r2', 'pooled MAE m': 'mae_m'})\n"
             "ours = ours.assign(source='this run', data=camp.source)\n"
             "theirs = published_table().assign(mae_m=lambda d: d['mae_km'] * 1000).drop(columns='mae_km')\n"
             "table = pd.concat([ours[['source', 'model', 'protocol', 'data', 'r2', 'mae_m']], theirs], ignore_index=True)\n"
             "table.to_csv(run / 'comparison_published.csv', index=False)\ndisplay(table.round(3))"),
    ("code", "from cbhlib.runner import write_combined\n\n"
             "write_json(run / 'comparison_summary.json', compare.summary(wide, curve, conf))\n"
             "write_combined(run)  # report_all.json now holds the baselines too\n"
             "print('wrote', run / 'comparison_summary.json', 'and', run / 'report_all.json')"),
    ENV_CELL,
])


def main() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    books = {"01_explore_campaign.ipynb": EXPLORE, "01b_pretrain_encoder.ipynb": PRETRAIN,
             "02_train_fusion.ipynb": TRAIN}
    books["03_cross_flight_comparison.ipynb"] = COMPARE
    for name, book in books.items():
        nbformat.write(book, out / name)
        print("wrote", out / name)


if __name__ == "__main__":
    main()
