"""Cross-flight comparison: baselines on the same folds, paired intervals, and the findings
a run supports (computed, never typed). Backs ``notebooks/03_cross_flight_comparison``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from cbhlib.config import Config
from cbhlib.constants import PROTOCOL_LABELS
from cbhlib.data.campaign import Campaign
from cbhlib.data.folds import make_folds
from cbhlib.evaluation.baselines import DESCRIPTIONS, SKLEARN_BASELINES, baseline_data, run_baseline
from cbhlib.evaluation.reports import build_report, provenance, write_json
from cbhlib.evaluation.results import seed_matrix
from cbhlib.evaluation.stats import paired_mae_difference
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import UnitStore

log = logging.getLogger(__name__)

# (model, reference): pretraining vs its ablations, each fusion mode vs physics and vs the strongest simple baseline
PAIRS = [
    ("image_only", "random_init"),
    ("image_only", "image_stats_mlp"),
    ("gbdt_all", "gbdt"),
    ("concat", "physical_only"),
    ("attention", "physical_only"),
    ("image_only", "physical_only"),
    ("attention", "concat"),
    ("physical_only", "gbdt_all"),
    ("image_only", "gbdt_all"),
    ("concat", "gbdt_all"),
    ("attention", "gbdt_all"),
]


def run_baselines(cfg: Config, camp: Campaign, run: RunDir, names: list[str] | None = None) -> list[tuple[str, str]]:
    """Score the sklearn baselines under every protocol on the models' folds; write their reports."""
    names = [n for n in (names or cfg.compare.baselines) if n in SKLEARN_BASELINES]
    store = UnitStore(run)
    data = baseline_data(camp, cfg, run, with_stats=any(n in ("image_stats_gbdt", "gbdt_all") for n in names))
    done = []
    for proto in cfg.protocols:
        folds = make_folds(camp, proto, cfg.val_fraction)
        if not folds:
            continue
        prov = provenance(
            {"feature_groups": cfg.feature_groups, "val_fraction": cfg.val_fraction}, camp.fingerprint(), cfg.seeds
        )
        for name in names:
            try:
                units = run_baseline(name, data, folds, proto, cfg.seeds, store)
            except ValueError as exc:  # e.g. no t2m/d2m for the LCL baseline
                log.warning("baseline %s skipped: %s", name, exc)
                continue
            write_json(
                run.report(name, proto),
                build_report(name, DESCRIPTIONS[name], proto, PROTOCOL_LABELS[proto], units, prov, deterministic=True),
            )
            done.append((name, proto))
    return done


def validation_residuals(run: RunDir, camp: Campaign, models: list[str]) -> dict[tuple[str, int, str], np.ndarray]:
    """(model, seed, held-out flight) -> residuals on that unit's validation samples (training flights)."""
    store, y, out = UnitStore(run), camp.cbh_km.astype(float), {}
    for model in models:
        for u in store.read_all(model, "lofo"):
            if u.val_idx:
                out[(model, u.seed, u.test_flight)] = y[np.asarray(u.val_idx)] - np.asarray(u.val_pred, float)
    return out


def comparisons(
    pred: pd.DataFrame, cfg: Config, pairs: list[tuple[str, str]] = PAIRS, protocol: str = "lofo"
) -> pd.DataFrame:
    """Paired bootstrap of pooled MAE differences for every pair present in the run."""
    have = set(pred.loc[pred["protocol"] == protocol, "model"])
    rows = []
    for a, b in pairs:
        if a not in have or b not in have:
            continue
        ya, pa, ga = seed_matrix(pred, a, protocol)
        yb, pb, gb = seed_matrix(pred, b, protocol)
        if len(ya) != len(yb) or not np.array_equal(ga, gb):
            log.warning("comparison %s vs %s skipped: different held-out samples", a, b)
            continue
        d = paired_mae_difference(
            ya, pa, pb, ga, a, b, cfg.compare.bootstrap_reps, cfg.compare.bootstrap_block, cfg.seed
        )
        rows.append({"protocol": protocol, **d.row()})
    return pd.DataFrame(rows)


def versus_climatology(pred: pd.DataFrame, cfg: Config, protocol: str = "lofo") -> pd.DataFrame:
    """Every model against climatology (the constant a new flight would get without a model), paired."""
    models = sorted(set(pred.loc[pred["protocol"] == protocol, "model"]) - {"climatology"})
    return comparisons(pred, cfg, [(m, "climatology") for m in models], protocol)


def _m(x: float) -> str:
    return f"{x:.0f} m"


def findings(
    headline: pd.DataFrame,
    comp: pd.DataFrame,
    curve: pd.DataFrame | None = None,
    conf: pd.DataFrame | None = None,
    draw: str = "first",
    clim: pd.DataFrame | None = None,
) -> dict[str, list[str]]:
    """What this run shows and what it does not, each sentence computed from the tables.

    A ranking is stated only where the paired 95 % interval excludes zero; ``clim`` holds every model's
    paired difference from climatology (:func:`versus_climatology`).
    """
    shows, not_shows = [], []
    lofo = headline[headline["protocol"] == "lofo"].sort_values("pooled_mae_m")
    if len(lofo):
        best = lofo.iloc[0]
        shows.append(
            f"Lowest leave-one-flight-out pooled MAE: {best['model']} {best['pooled_mae_m']:.0f} ± "
            f"{best['pooled_mae_m_sd']:.0f} m (mean ± sd over {int(best['n_seeds'])} seeds, n = {int(best['n'])})."
        )
    if clim is not None and len(clim):
        for label, rows in (
            ("Worse than climatology on a new flight", clim[clim["diff_m"] > 0]),
            ("Better than climatology on a new flight", clim[clim["diff_m"] < 0]),
        ):
            resolved = rows[rows["verdict"] != "not resolved"]
            if len(resolved):
                shows.append(
                    f"{label} (pooled MAE, paired 95 % interval excludes 0): "
                    + ", ".join(
                        f"{r['model']} {r['diff_m']:+.0f} m [{r['ci_lo_m']:+.0f}, {r['ci_hi_m']:+.0f}]"
                        for _, r in resolved.iterrows()
                    )
                    + "."
                )
        open_ = clim[clim["verdict"] == "not resolved"]
        if len(open_):
            not_shows.append(
                "Whether these models beat climatology (pooled MAE difference, 95 % interval includes 0): "
                + ", ".join(
                    f"{r['model']} {r['diff_m']:+.0f} m [{r['ci_lo_m']:+.0f}, {r['ci_hi_m']:+.0f}]"
                    for _, r in open_.iterrows()
                )
                + "."
            )
    for _, r in comp.iterrows():
        interval = f"{r['diff_m']:+.0f} m [{r['ci_lo_m']:+.0f}, {r['ci_hi_m']:+.0f}]"
        if r["verdict"] == "not resolved":
            not_shows.append(
                f"{r['model']} vs {r['reference']}: pooled MAE difference {interval}, 95 % interval "
                "includes 0: not resolved."
            )
        else:
            shows.append(
                f"{r['verdict']}: pooled MAE difference {r['model']} - {r['reference']} {interval} "
                f"(95 % paired bootstrap over samples and {int(r['n_seeds'])} seeds)."
            )
    both = headline.pivot_table(index="model", columns="protocol", values="r2_pooled")
    if {"lofo", "random"} <= set(both.columns):
        gap = (both["random"] - both["lofo"]).dropna()
        if len(gap):
            shows.append(
                f"A pooled random split inflates pooled R2 by {gap.min():.2f} to {gap.max():.2f} over "
                "leave-one-flight-out (neighbouring samples leak)."
            )
    if curve is not None and len(curve):
        c = curve[(curve["draw"] == draw) & (curve["method"] == "offset")]
        k0 = c[c["k"] == 0].set_index("model")["mae_m"]
        k10 = c[c["k"] == 10].set_index("model")["mae_m"]
        common = k0.index.intersection(k10.index)
        if len(common):
            better = [m for m in common if k10[m] < k0[m]]
            shows.append(
                f"Offset recalibration on the first 10 samples in time lowers the mean per-flight MAE for "
                f"{len(better)} of {len(common)} models"
                + (f" (e.g. {better[0]}: {k0[better[0]]:.0f} -> {k10[better[0]]:.0f} m)." if better else ".")
            )
    if conf is not None and len(conf):
        tf = conf[conf["calibration"] == "training flights"]
        if len(tf):
            w = tf.sort_values("min_coverage").iloc[0]
            shows.append(
                f"90 % intervals calibrated on training flights cover as little as {w['min_coverage']:.0%} "
                f"of a new flight ({w['model']}, {w['worst_flight']})."
            )
    not_shows.append(
        "These numbers come from the synthetic campaign unless the run used imported files: they are "
        "not a claim about the real flights."
    )
    not_shows.append(
        "With five flights, a flight-level effect rests on five held-out flights; the intervals resample "
        "samples and seeds within them, not new flights."
    )
    return {"shows": shows, "does_not_show": not_shows}


def summary(
    headline: pd.DataFrame,
    comp: pd.DataFrame,
    curve: pd.DataFrame,
    conf: pd.DataFrame,
    found: dict[str, list[str]],
    clim: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """``comparison_summary.json``: the comparison's tables and findings."""
    return {
        "headline": headline.to_dict("records"),
        "comparisons": comp.to_dict("records"),
        "versus_climatology": clim.to_dict("records") if clim is not None else [],
        "few_shot": curve.to_dict("records") if len(curve) else [],
        "conformal": conf.to_dict("records") if len(conf) else [],
        "findings": found,
    }
