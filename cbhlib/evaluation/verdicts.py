"""Verdicts that hold: every comparison under both headline metrics, with a data-chosen block,
a check at twice that block, and the flight-level evidence beside it.

An interval counts as resolved only where it clears zero by ``compare.drift_margin_m``, so that
a verdict does not change with the machine that computed it: kernels differ between CPU
instruction sets, and a thread count moved the encoder-based rows by up to 15.5 m before
encoders were pinned to one thread each (``python -m cbhlib.pipeline.readme --drift RUN`` measures it).

A ranking ("A beats B") is stated only where the paired 95 % intervals of **both** pooled
MAE and per-flight MAE exclude zero on the same side. Otherwise the verdict says which
metric resolves what (``one metric``), that the metrics point opposite ways
(``metrics disagree``), or that nothing is resolved.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cbhlib.config import Config
from cbhlib.evaluation.flightnorm import split_variant
from cbhlib.evaluation.results import seed_matrix
from cbhlib.evaluation.stats import METRIC_LABELS, choose_block, flight_evidence, paired_difference

log = logging.getLogger(__name__)

CLIMATOLOGY = "climatology"
# simple baselines: what a model must beat besides climatology (flight-normalised variants included)
SIMPLE = ("lcl", "gbdt", "image_stats_gbdt", "gbdt_all", "ridge", "ridge_all", "image_stats_mlp", "random_init")
# (model, reference): pretraining vs its ablations, fusion vs physics, fusion vs the strongest simple baseline
PAIRS = [
    ("image_only", "random_init"),
    ("image_only", "image_stats_mlp"),
    ("gbdt_all", "gbdt"),
    ("concat", "physical_only"),
    ("attention", "physical_only"),
    ("image_only", "physical_only"),
    ("attention", "concat"),
]


def is_simple(model: str) -> bool:
    """A simple baseline (plain or flight-normalised), not climatology and not a fusion model."""
    return split_variant(model)[0].removesuffix("_finetuned") in SIMPLE


def strongest_simple(headline: pd.DataFrame, protocol: str = "lofo") -> str | None:
    """The simple baseline with the lowest pooled MAE under ``protocol`` (mean over seeds)."""
    d = headline[(headline["protocol"] == protocol) & headline["model"].map(is_simple)]
    return None if d.empty else str(d.sort_values(["pooled_mae_m", "model"]).iloc[0]["model"])


def combine(pooled: int, flight: int, a: str, b: str) -> tuple[str, str]:
    """(status, verdict) from the two metrics' signs (-1: a better, +1: b better, 0: not resolved)."""
    win = {-1: f"{a} beats {b}", 1: f"{b} beats {a}"}
    if pooled == flight != 0:
        return "resolved", win[pooled]
    if pooled and flight:
        return "metrics disagree", f"metrics disagree (pooled MAE: {win[pooled]}; per-flight MAE: {win[flight]})"
    if pooled or flight:
        which, s = ("pooled MAE", pooled) if pooled else ("per-flight MAE", flight)
        return "one metric", f"not resolved under both metrics ({which} only: {win[s]})"
    return "not resolved", "not resolved"


def compare_pair(pred: pd.DataFrame, a: str, b: str, cfg: Config, protocol: str = "lofo") -> dict[str, object] | None:
    """One verdict row for model ``a`` against reference ``b``; None where they scored different samples."""
    ya, pa, ga = seed_matrix(pred, a, protocol)
    yb, pb, gb = seed_matrix(pred, b, protocol)
    if len(ya) != len(yb) or not np.array_equal(ga, gb):
        log.warning("comparison %s vs %s skipped: different held-out samples", a, b)
        return None
    c = cfg.compare
    block = c.bootstrap_block or choose_block(np.abs(pa - ya).mean(0) - np.abs(pb - ya).mean(0), ga)
    row: dict[str, object] = {"protocol": protocol, "model": a, "reference": b, "block": block}
    signs: dict[int, dict[str, int]] = {}
    near: list[str] = []  # metrics whose interval excludes 0 but not by the drift margin
    for blk in (block, 2 * block):
        signs[blk] = {}
        for metric in ("pooled", "flight"):
            d = paired_difference(ya, pa, pb, ga, a, b, c.bootstrap_reps, blk, cfg.seed, metric=metric)
            d.margin = c.drift_margin_m / 1000.0
            signs[blk][metric] = d.sign
            if blk == block:
                if d.sign == 0 and (d.lo > 0 or d.hi < 0):
                    near.append(METRIC_LABELS[metric])
                row.update(
                    {
                        f"{metric}_mae_m": 1000 * d.mae_a,
                        f"{metric}_reference_m": 1000 * d.mae_b,
                        f"{metric}_diff_m": 1000 * d.diff,
                        f"{metric}_lo_m": 1000 * d.lo,
                        f"{metric}_hi_m": 1000 * d.hi,
                        f"{metric}_verdict": d.verdict,
                    }
                )
    status, verdict = combine(signs[block]["pooled"], signs[block]["flight"], a, b)
    if near:  # say why an interval that excludes 0 is no ranking
        note = (
            f"{' and '.join(near)} clear{'s' * (len(near) == 1)} 0 by less than the {c.drift_margin_m:g} m drift margin"
        )
        verdict = f"{verdict[:-1]}; {note})" if verdict.endswith(")") else f"{verdict} ({note})"
    status2, _ = combine(signs[2 * block]["pooled"], signs[2 * block]["flight"], a, b)
    fe = flight_evidence(ya, pa, pb, ga)
    row.update(
        {
            "status": status,
            "verdict": verdict,
            "holds_at_2x_block": bool(signs[2 * block] == signs[block]),
            "status_at_2x_block": status2,
            "flights_better": fe.better,
            "n_flights": fe.n_flights,
            "sign_flip_p": fe.p,
            "sign_flip_p_min": fe.p_min,
            "n_samples": len(ya),
            "n_seeds": int(max(len(pa), len(pb))),
        }
    )
    return row


def verdicts(pred: pd.DataFrame, cfg: Config, pairs: list[tuple[str, str]], protocol: str = "lofo") -> pd.DataFrame:
    """Verdict rows for every pair whose models the run scored under ``protocol``."""
    have = set(pred.loc[pred["protocol"] == protocol, "model"])
    rows = [compare_pair(pred, a, b, cfg, protocol) for a, b in dict.fromkeys(pairs) if a in have and b in have]
    return pd.DataFrame([r for r in rows if r is not None])


def standard_pairs(models: list[str], headline: pd.DataFrame, protocol: str = "lofo") -> list[tuple[str, str]]:
    """Every model against climatology and against the strongest simple baseline; each flight-normalised
    model against its plain version; then the ablation and fusion pairs of :data:`PAIRS`."""
    best = strongest_simple(headline, protocol)
    out = [(m, CLIMATOLOGY) for m in models if m != CLIMATOLOGY]
    out += [(m, best) for m in models if best and m not in (best, CLIMATOLOGY)]
    out += [(m, split_variant(m)[0]) for m in models if split_variant(m)[1] != "none" and split_variant(m)[0] in models]
    out += [(a, b) for a, b in PAIRS if a in models and b in models]
    for a, b in PAIRS:  # the same ablations between flight-normalised models
        fa, fb = a + "_fn", b + "_fn"
        if fa in models and fb in models:
            out.append((fa, fb))
    return list(dict.fromkeys(out))


def interval_text(r: pd.Series | dict[str, object], metric: str) -> str:
    """``-66 m [-98, -40]`` for a verdict row's metric."""
    return f"{r[f'{metric}_diff_m']:+.0f} m [{r[f'{metric}_lo_m']:+.0f}, {r[f'{metric}_hi_m']:+.0f}]"


def evidence_text(r: pd.Series | dict[str, object]) -> str:
    """Both metrics' intervals, the block, and the flight-level evidence, in one clause."""
    p, pmin = float(r["sign_flip_p"]), float(r["sign_flip_p_min"])
    return (
        f"{METRIC_LABELS['pooled']} {interval_text(r, 'pooled')}, {METRIC_LABELS['flight']} "
        f"{interval_text(r, 'flight')} (95 % paired block bootstrap, blocks of {int(r['block'])} samples"
        f"{'' if r['holds_at_2x_block'] else '; changes at twice that block'}); {r['model']} better on "
        f"{int(r['flights_better'])} of {int(r['n_flights'])} flights, sign-flip p = {p:.3g} "
        f"(smallest attainable with {int(r['n_flights'])} flights: {pmin:.3g})"
    )
