"""Cross-flight comparison: baselines on the same folds, verdicts under both headline metrics,
and the findings a run supports (computed, never typed). Backs ``notebooks/03_cross_flight_comparison``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from cbhlib.config import Config
from cbhlib.constants import NESTED_PROTOCOL, PROTOCOL_LABELS
from cbhlib.data.campaign import Campaign
from cbhlib.data.folds import make_folds
from cbhlib.evaluation.baselines import ADAPTABLE, DESCRIPTIONS, SKLEARN_BASELINES, baseline_data, run_baseline
from cbhlib.evaluation.flightnorm import LABELS, split_variant, variant
from cbhlib.evaluation.intervals.findings import interval_findings
from cbhlib.evaluation.reports import build_report, provenance, write_json
from cbhlib.evaluation.verdicts import (
    CLIMATOLOGY,
    PAIRS,
    evidence_text,
    interval_text,
    standard_pairs,
    strongest_simple,
    verdicts,
)
from cbhlib.sections import NEURAL_BASELINES
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import UnitStore

log = logging.getLogger(__name__)

__all__ = [
    "PAIRS",
    "comparisons",
    "findings",
    "run_baselines",
    "summary",
    "absent_baselines",
    "validation_residuals",
    "verdict_view",
    "versus_climatology",
]


def baseline_names(cfg: Config) -> list[str]:
    """The sklearn baselines of ``compare.baselines``, each also under every ``compare.flight_norms``."""
    base = [n for n in cfg.compare.baselines if n in SKLEARN_BASELINES]
    return [variant(n, how) for n in base for how in cfg.compare.flight_norms if how == "none" or n in ADAPTABLE]


def absent_baselines(cfg: Config, models: list[str]) -> str | None:
    """A sentence naming the neural baselines ``compare.baselines`` asks for that the run did not train
    (they are ablations: without them the comparison cannot say what pretraining adds), or None."""
    missing = [n for n in cfg.compare.baselines if n in NEURAL_BASELINES and n not in models]
    if not missing:
        return None
    return (
        f"Not in this run, so left out of every table below: {', '.join(missing)} (neural baselines are trained by "
        f"the pipeline's steps of those names: `cbh run --only {','.join(missing)},compare` adds them)."
    )


def describe(name: str) -> str:
    """A baseline's description, with its flight normalisation."""
    base, how = split_variant(name)
    text = DESCRIPTIONS[base]
    return text if how == "none" else f"{text}; {LABELS[how]} inputs, within-flight anomaly plus the training level"


def run_baselines(
    cfg: Config, camp: Campaign, run: RunDir, names: list[str] | None = None, nested: bool = True
) -> list[tuple[str, str]]:
    """Score the sklearn baselines under every protocol on the models' folds, and their
    flight-normalised variants under leave-one-flight-out; write their reports."""
    names = names or baseline_names(cfg)
    names = [n for n in names if split_variant(n)[0] in SKLEARN_BASELINES]
    store = UnitStore(run)
    stats = any(split_variant(n)[0] in ("image_stats_gbdt", "gbdt_all", "ridge_all") for n in names)
    data = baseline_data(camp, cfg, run, with_stats=stats)
    done = []
    for proto in cfg.protocols:
        folds = make_folds(camp, proto, cfg.val_fraction)
        if not folds:
            continue
        prov = provenance(
            {"feature_groups": cfg.feature_groups, "val_fraction": cfg.val_fraction, "adapt": vars(cfg.adapt)},
            camp.fingerprint(),
            cfg.seeds,
        )
        for name in names:
            if proto != "lofo" and split_variant(name)[1] != "none":
                continue  # adaptation to a new flight is a leave-one-flight-out question
            try:
                units = run_baseline(
                    name, data, folds, proto, cfg.seeds, store, cfg.adapt.level, cfg.adapt.warmup, nested
                )
            except ValueError as exc:  # e.g. no t2m/d2m for the LCL baseline, no images for image statistics
                log.info("baseline %s skipped: %s", name, exc)
                continue
            write_json(
                run.report(name, proto),
                build_report(name, describe(name), proto, PROTOCOL_LABELS[proto], units, prov, deterministic=True),
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


NESTED = NESTED_PROTOCOL  # as cbhlib.training.runner writes the nested heads


def flight_residuals(
    run: RunDir, camp: Campaign, models: list[str]
) -> dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]]:
    """(model, seed, held-out flight) -> (out-of-flight residuals of the training flights, their flights).

    Each residual comes from a model that saw neither the held-out flight nor the residual's own
    flight: the baselines keep them in their LOFO units (``cal_idx``/``cal_pred``), the heads in
    their nested units (protocol ``lofo_nested``). No label of the held-out flight enters. The
    residuals come flight by flight, in time order within each (the online method replays them).
    """
    store, y = UnitStore(run), camp.cbh_km.astype(float)
    parts: dict[tuple[str, int, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    for model in models:
        for u in store.read_all(model, "lofo"):
            if u.cal_idx:
                idx = np.asarray(u.cal_idx)
                parts.setdefault((model, u.seed, u.test_flight), []).append((y[idx] - np.asarray(u.cal_pred), idx))
        for u in store.read_all(model, NESTED):  # scored on the left-out training flight only
            idx = np.asarray(u.test_idx)
            parts.setdefault((model, u.seed, u.test_flight), []).append((y[idx] - np.asarray(u.pred), idx))
    for model in models:  # nested heads are trained for the first seed only: it calibrates every seed
        seeds = {u.seed for u in store.read_all(model, "lofo")}
        for (m, s, fl), pieces in list(parts.items()):
            if m == model:
                for other in seeds - {s}:
                    parts.setdefault((model, other, fl), pieces)
    out = {}
    for key, pieces in parts.items():
        idx = np.concatenate([i for _, i in pieces])
        if np.isin(camp.flight[idx], [camp.flight_names.index(key[2])]).any():
            raise RuntimeError(f"{key}: a held-out flight's label reached its own interval calibration")
        order = np.lexsort((np.asarray(camp.time_utc, float)[idx], camp.flight[idx]))  # by flight, in time
        out[key] = (np.concatenate([r for r, _ in pieces])[order], camp.flight[idx][order])
    return out


def comparisons(
    pred: pd.DataFrame,
    cfg: Config,
    pairs: list[tuple[str, str]] | None = None,
    protocol: str = "lofo",
    headline: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Verdicts under both headline metrics (:mod:`cbhlib.evaluation.verdicts`) for ``pairs``; by
    default every model against climatology and the strongest simple baseline, flight-normalised
    models against their plain versions, and the ablation and fusion pairs."""
    if pairs is None:
        from cbhlib.evaluation.results import headline_table

        models = sorted(set(pred.loc[pred["protocol"] == protocol, "model"]))
        pairs = standard_pairs(models, headline if headline is not None else headline_table(pred), protocol)
    return verdicts(pred, cfg, pairs, protocol)


def versus_climatology(pred: pd.DataFrame, cfg: Config, protocol: str = "lofo") -> pd.DataFrame:
    """Every model against climatology (the constant a new flight would get without a model)."""
    models = sorted(set(pred.loc[pred["protocol"] == protocol, "model"]) - {CLIMATOLOGY})
    return verdicts(pred, cfg, [(m, CLIMATOLOGY) for m in models], protocol)


def split_verdicts(table: pd.DataFrame, headline: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every model against climatology, the pairs against neither climatology nor the strongest
    simple baseline): the two forest plots of the comparison."""
    if table.empty:
        return table, table
    best = strongest_simple(headline)
    return table[table["reference"] == CLIMATOLOGY], table[~table["reference"].isin([CLIMATOLOGY, best])]


def verdict_view(table: pd.DataFrame) -> pd.DataFrame:
    """The verdict table for reading: both metrics' differences with intervals, the block, the
    verdict, whether it holds at twice the block, and the flight-level evidence."""
    if table.empty:
        return table
    return pd.DataFrame(
        {
            "model": table["model"],
            "reference": table["reference"],
            "pooled MAE diff (m)": [interval_text(r, "pooled") for _, r in table.iterrows()],
            "per-flight MAE diff (m)": [interval_text(r, "flight") for _, r in table.iterrows()],
            "block": table["block"].astype(int),
            "verdict": table["verdict"],
            "holds at 2x block": table["holds_at_2x_block"].map({True: "yes", False: "no"}),
            "flights better": [
                f"{int(a)} of {int(b)}" for a, b in zip(table["flights_better"], table["n_flights"], strict=True)
            ],
            "sign-flip p (floor)": [
                f"{a:.3g} ({b:.3g})" for a, b in zip(table["sign_flip_p"], table["sign_flip_p_min"], strict=True)
            ],
        }
    )


def _list(rows: pd.DataFrame) -> str:
    return "; ".join(f"{r['model']}: {evidence_text(r)}" for _, r in rows.iterrows())


def _vs(table: pd.DataFrame, ref: str) -> pd.DataFrame:
    return table[table["reference"] == ref] if len(table) else table


def findings(
    headline: pd.DataFrame,
    table: pd.DataFrame,
    curve: pd.DataFrame | None = None,
    conf: pd.DataFrame | None = None,
    draw: str = "first",
    source: str = "",
    n_flights: int | None = None,
) -> dict[str, list[str]]:
    """What this run shows and what it does not, each sentence computed from the tables.

    A ranking is stated only where the paired 95 % intervals of pooled and per-flight MAE
    both exclude zero on the same side; every claim carries both intervals and the
    flight-level evidence (flights won, sign-flip p and its floor).

    Args:
        table: verdict rows (:func:`comparisons`).
        source: the campaign's ``source`` attribute (``synthetic(...)`` or an import).
    """
    shows: list[str] = [line] if (line := neural_verdict(headline, table)) else []
    not_shows: list[str] = []
    lofo = headline[headline["protocol"] == "lofo"]
    if len(lofo):
        for col, label in (("pooled_mae_m", "pooled MAE"), ("flight_mae_m", "per-flight MAE")):
            best = lofo.sort_values(col).iloc[0]
            shows.append(
                f"Lowest leave-one-flight-out {label}: {best['model']} {best[col]:.0f} ± {best[col + '_sd']:.0f} m "
                f"(mean ± sd over {int(best['n_seeds'])} seeds, n = {int(best['n'])} held-out samples; a point "
                "estimate: whether it beats the next model is for the paired verdicts)."
            )
        n_flights = n_flights or int(table["n_flights"].max()) if len(table) else n_flights
    clim = _vs(table, CLIMATOLOGY)
    if len(clim):
        won = clim[(clim["status"] == "resolved") & (clim["pooled_diff_m"] < 0)]
        lost = clim[(clim["status"] == "resolved") & (clim["pooled_diff_m"] > 0)]
        if len(won):
            shows.append(f"Better than climatology on a new flight under both headline metrics: {_list(won)}.")
        else:
            shows.append("No model is better than climatology on a new flight under both headline metrics.")
        if len(lost):
            shows.append(
                "Worse than climatology on a new flight under both metrics: "
                + ", ".join(
                    f"{r['model']} (pooled {interval_text(r, 'pooled')}, per-flight {interval_text(r, 'flight')})"
                    for _, r in lost.iterrows()
                )
                + "."
            )
        open_ = clim[clim["status"] != "resolved"]
        if len(open_):
            not_shows.append(
                "Whether these models beat climatology (not resolved under both metrics): "
                + "; ".join(
                    f"{r['model']} (pooled {interval_text(r, 'pooled')}, per-flight {interval_text(r, 'flight')}"
                    + (f": {r['verdict'].split('(', 1)[1]}" if "(" in r["verdict"] else ")")
                    for _, r in open_.iterrows()
                )
                + "."
            )
    best = strongest_simple(headline)
    others = table[~table["reference"].isin([CLIMATOLOGY])] if len(table) else table
    stated: set[frozenset[str]] = set()  # a pair compared in two tables (as A vs B and B vs A) is said once
    for _, r in others.iterrows():
        if (pair := frozenset((r["model"], r["reference"]))) in stated:
            continue
        stated.add(pair)
        what = f"{r['model']} vs {r['reference']}" + (
            " (the strongest simple baseline)" if r["reference"] == best else ""
        )
        if r["status"] == "resolved":
            shows.append(f"{r['verdict']}: {what}, {evidence_text(r)}.")
        elif r["status"] == "metrics disagree":
            not_shows.append(f"{what}: the headline metrics disagree, {evidence_text(r)}.")
        else:
            not_shows.append(
                f"{what}: {r['verdict']}, pooled {interval_text(r, 'pooled')}, per-flight {interval_text(r, 'flight')}."
            )
    if len(table):
        fragile = table[(table["status"] == "resolved") & ~table["holds_at_2x_block"].astype(bool)]
        if len(fragile):
            not_shows.append(
                "Verdicts that change at twice the chosen block length (read them as fragile): "
                + ", ".join(f"{r['verdict']}" for _, r in fragile.iterrows())
                + "."
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
                f"Offset recalibration on the first 10 samples in time lowers the mean per-flight MAE (scored on "
                f"the same samples at every k) for {len(better)} of {len(common)} models"
                + (f" (e.g. {better[0]}: {k0[better[0]]:.0f} -> {k10[better[0]]:.0f} m)" if better else "")
                + "; point estimates (means over seeds), without a paired interval."
            )
    if conf is not None and len(conf):
        shows.extend(interval_findings(conf))
    not_shows.append(origin_sentence(source))
    if n_flights:
        not_shows.append(
            f"With {n_flights} flights, a claim about new flights rests on {n_flights} held-out flights: the "
            "intervals resample samples and seeds within them, not flights, and the exact sign-flip test over "
            f"flights cannot go below p = {2 / 2**n_flights:.3g}."
        )
    return {"shows": shows, "does_not_show": not_shows}


def neural_verdict(headline: pd.DataFrame, table: pd.DataFrame) -> str | None:
    """The run's answer in one sentence: how many neural models beat climatology and the strongest
    simple baseline on a new flight (resolved under both headline metrics), how many lose, how many are open."""
    heads = set(headline.loc[(headline["kind"] == "model") & (headline["protocol"] == "lofo"), "model"])
    if not heads or not len(table):
        return None
    best = strongest_simple(headline)
    counted = table[table["model"].isin(heads) & (table["protocol"] == "lofo")]
    parts = []
    for ref, label in ((CLIMATOLOGY, CLIMATOLOGY), (best, f"the strongest simple baseline ({best})")):
        rows = counted[counted["reference"] == ref]
        if not len(rows):
            continue
        resolved = rows["status"] == "resolved"
        won, lost = rows[resolved & (rows["pooled_diff_m"] < 0)], rows[resolved & (rows["pooled_diff_m"] > 0)]
        parts.append(
            f"against {label}: {len(won)} of {len(rows)} better{_named(won, len(rows))}, "
            f"{len(lost)} worse{_named(lost, len(rows))}, {len(rows) - len(won) - len(lost)} not resolved"
        )
    if not parts:
        return None
    n = (
        f"; n = {int(counted['n_samples'].max())} held-out samples x {int(counted['n_seeds'].max())} seeds"
        if {"n_samples", "n_seeds"} <= set(table.columns)
        else ""
    )
    return (
        f"The neural models on flights they never saw, in one line (leave-one-flight-out{n}; better or worse only "
        "where the verdict is resolved: the paired 95 % intervals of pooled and per-flight MAE both clear zero, by "
        "the drift margin, on the same side). " + ". ".join(p[0].upper() + p[1:] for p in parts) + "."
    )


def _named(rows: pd.DataFrame, of: int) -> str:
    """`` (a, b)`` naming some of ``of`` models; nothing when none or all."""
    return f" ({', '.join(rows['model'])})" if 0 < len(rows) < of else ""


def origin_sentence(source: str) -> str:
    """Where the numbers come from, from the campaign's own ``source``."""
    if source.startswith("synthetic"):
        return (
            f"These numbers come from a synthetic campaign ({source}) calibrated to the real one's difficulty: "
            "they are not a claim about the real flights."
        )
    return f"These numbers come from the campaign file's data (source: {source or 'not recorded'})."


def summary(
    headline: pd.DataFrame,
    table: pd.DataFrame,
    curve: pd.DataFrame,
    conf: pd.DataFrame,
    found: dict[str, list[str]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``comparison_summary.json``: the comparison's tables and findings."""
    blocks = table["block"].astype(int).tolist() if len(table) else []
    return {
        "headline": headline.to_dict("records"),
        "verdicts": table.to_dict("records"),
        "bootstrap": {
            "method": "paired moving-block bootstrap within flights over samples and seeds; block length per "
            "comparison by Politis-White (arch.bootstrap.optimal_block_length, circular) on the paired error "
            "differences, flights weighted by size; each verdict rechecked at twice its block",
            "block_min": min(blocks) if blocks else None,
            "block_median": float(np.median(blocks)) if blocks else None,
            "block_max": max(blocks) if blocks else None,
        },
        "strongest_simple_baseline": strongest_simple(headline),
        "few_shot": curve.to_dict("records") if len(curve) else [],
        "conformal": conf.to_dict("records") if len(conf) else [],
        "findings": found,
        **(extra or {}),
    }
