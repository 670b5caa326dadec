"""A run's results as tidy tables: predictions, headline metrics with seed spread, per flight.

Everything downstream (comparison notebook, ``summary.json``, ``index.html``, the
README's results section) reads the unit results through :func:`load_predictions`, so
every number traces back to unit files written by a run.

Headline columns, in order: pooled MAE (all held-out predictions together), per-flight
MAE (the mean over flights of each flight's MAE), R2 as the seed's mean of folds and
pooled, each as mean +- sd over seeds, with n (samples) and the number of seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cbhlib.data.campaign import Campaign
from cbhlib.evaluation.flightnorm import split_variant
from cbhlib.evaluation.metrics import regression_metrics
from cbhlib.evaluation.reports import predictions_frame
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import UnitStore

BASELINE_ORDER = (
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
MODEL_ORDER = ("physical_only", "image_only", "concat", "attention")
PROTOCOL_ORDER = ("lofo", "within_flight", "random")
HEADLINE_COLUMNS = [
    "model",
    "kind",
    "protocol",
    "n",
    "n_seeds",
    "pooled_mae_m",
    "pooled_mae_m_sd",
    "flight_mae_m",
    "flight_mae_m_sd",
    "r2_folds",
    "r2_folds_sd",
    "r2_pooled",
    "r2_pooled_sd",
    "rmse_m",
    "bias_m",
]


def model_rank(model: str) -> tuple[int, int, int, str]:
    """Sort key: baselines first (in a fixed order), then the models, then anything else; a
    flight-normalised variant right after its plain model."""
    name, how = split_variant(model)
    base = name.removesuffix("_finetuned")
    norm = ("none", "flight", "running").index(how)
    if base in BASELINE_ORDER:
        return (0, BASELINE_ORDER.index(base), norm, model)
    if base in MODEL_ORDER:
        return (1, MODEL_ORDER.index(base), norm, model)
    return (2, 0, norm, model)


def kind(model: str) -> str:
    return "baseline" if split_variant(model)[0] in BASELINE_ORDER else "model"


def load_predictions(
    run: RunDir, camp: Campaign, models: list[str] | None = None, protocols: list[str] | None = None
) -> pd.DataFrame:
    """Every verified unit result of the run as one tidy predictions table."""
    store = UnitStore(run)
    frames = []
    for model, protocol, _ in run.reports():
        if (models and model not in models) or (protocols and protocol not in protocols):
            continue
        units = store.read_all(model, protocol)
        if units:
            frames.append(predictions_frame(units, camp))
    if not frames:
        return predictions_frame([], camp)
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(["model", "protocol", "seed", "fold", "time_utc"], kind="stable").reset_index(drop=True)


def _metrics(d: pd.DataFrame) -> dict[str, Any]:
    return regression_metrics(d["truth_km"].to_numpy(), d["pred_km"].to_numpy())


def seed_metrics(pred: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, protocol, seed): pooled metrics, mean of fold R2, mean per-flight MAE."""
    rows = []
    for (model, protocol, seed), d in pred.groupby(["model", "protocol", "seed"], sort=False):
        pooled = _metrics(d)
        folds = [_metrics(g)["r2"] for _, g in d.groupby("fold")]
        flights = [_metrics(g)["mae_km"] for _, g in d.groupby("flight")]
        r2f = [r for r in folds if r is not None]
        rows.append(
            {
                "model": model,
                "protocol": protocol,
                "seed": seed,
                "n": len(d),
                "pooled_mae_m": 1000 * pooled["mae_km"],
                "flight_mae_m": 1000 * float(np.mean(flights)),
                "r2_folds": float(np.mean(r2f)) if r2f else np.nan,
                "r2_pooled": pooled["r2"] if pooled["r2"] is not None else np.nan,
                "rmse_m": 1000 * pooled["rmse_km"],
                "bias_m": 1000 * pooled["bias_km"],
            }
        )
    return pd.DataFrame(rows)


def _sd(x: pd.Series) -> float:
    """Spread over seeds; NaN for one seed (no spread to report: the tables print the mean alone)."""
    return float(x.std(ddof=1)) if len(x) > 1 else float("nan")


def headline_table(pred: pd.DataFrame) -> pd.DataFrame:
    """Models x protocols with mean and sd over seeds; baselines first, headline columns first."""
    per_seed = seed_metrics(pred)
    if per_seed.empty:
        return pd.DataFrame(columns=HEADLINE_COLUMNS)
    rows = []
    for (model, protocol), d in per_seed.groupby(["model", "protocol"], sort=False):
        rows.append(
            {
                "model": model,
                "kind": kind(model),
                "protocol": protocol,
                "n": int(d["n"].iloc[0]),
                "n_seeds": len(d),
                **{
                    c: float(d[c].mean())
                    for c in ("pooled_mae_m", "flight_mae_m", "r2_folds", "r2_pooled", "rmse_m", "bias_m")
                },
                **{f"{c}_sd": _sd(d[c]) for c in ("pooled_mae_m", "flight_mae_m", "r2_folds", "r2_pooled")},
            }
        )
    out = pd.DataFrame(rows)
    out["_m"] = out["model"].map(model_rank)
    out["_p"] = out["protocol"].map(lambda p: PROTOCOL_ORDER.index(p) if p in PROTOCOL_ORDER else 9)
    return out.sort_values(["_p", "_m"]).drop(columns=["_m", "_p"])[HEADLINE_COLUMNS].reset_index(drop=True)


def per_flight_table(pred: pd.DataFrame) -> pd.DataFrame:
    """Per (model, protocol, flight): n, MAE (m) and R2, mean and sd over seeds."""
    rows = []
    for (model, protocol, flight), d in pred.groupby(["model", "protocol", "flight"], sort=False):
        per = [_metrics(g) for _, g in d.groupby("seed")]
        mae = pd.Series([1000 * m["mae_km"] for m in per])
        r2 = pd.Series([m["r2"] for m in per if m["r2"] is not None], dtype=float)
        rows.append(
            {
                "model": model,
                "protocol": protocol,
                "flight": flight,
                "n": per[0]["n"],
                "mae_m": float(mae.mean()),
                "mae_m_sd": _sd(mae),
                "r2": float(r2.mean()) if len(r2) else np.nan,
                "r2_sd": _sd(r2) if len(r2) else np.nan,
                "bias_m": float(np.mean([1000 * m["bias_km"] for m in per])),
            }
        )
    out = pd.DataFrame(rows)
    if len(out):
        out["_m"] = out["model"].map(model_rank)
        out = out.sort_values(["protocol", "_m"], kind="stable").drop(columns="_m").reset_index(drop=True)
    return out


def seed_matrix(pred: pd.DataFrame, model: str, protocol: str = "lofo") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth [N], predictions [S, N], flight [N]) of one model, samples in a fixed order
    (flight, then time): the input of the paired bootstrap."""
    d = pred[(pred["model"] == model) & (pred["protocol"] == protocol)]
    wide = d.pivot_table(index=["flight", "time_utc", "sample"], columns="seed", values="pred_km", sort=True)
    truth = d.drop_duplicates("sample").set_index("sample")["truth_km"]
    samples = wide.index.get_level_values("sample")
    return truth.loc[samples].to_numpy(), wide.to_numpy().T, wide.index.get_level_values("flight").to_numpy()


def fmt_pm(mean: float, sd: float, digits: int = 0) -> str:
    """``mean ± sd`` for tables ("n/a" where undefined)."""
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None and np.isfinite(sd) else f"{mean:.{digits}f}"


def pretty(table: pd.DataFrame) -> pd.DataFrame:
    """A headline or per-flight table for reading: ``mean ± sd`` strings, metres as integers,
    R2 with two decimals ("n/a" where undefined)."""
    out = table.copy()
    for col in [c for c in table.columns if f"{c}_sd" in table.columns]:
        digits = 2 if col.startswith("r2") else 0
        out[col] = [fmt_pm(m, s, digits) for m, s in zip(table[col], table[f"{col}_sd"], strict=True)]
        out = out.drop(columns=f"{col}_sd")
    for col in ("rmse_m", "bias_m"):
        if col in out:
            out[col] = out[col].map(lambda v: f"{v:.0f}")
    return out


def published_beside(headline: pd.DataFrame, source: str) -> pd.DataFrame:
    """Our headline rows beside the published real-data numbers, each labelled with its protocol.

    ``r2`` is the mean of fold R2 and ``mae_m`` the mean of per-fold MAE (the seed's
    convention, as its tables report); ours also carry the pooled MAE.
    """
    ours = headline.assign(source="this run", data=source, r2=headline["r2_folds"], mae_m=headline["flight_mae_m"])
    ours = ours[["source", "model", "protocol", "data", "r2", "mae_m", "pooled_mae_m"]]
    theirs = published_table().assign(mae_m=lambda d: d["mae_km"] * 1000).drop(columns="mae_km")
    return pd.concat([ours, theirs], ignore_index=True)


# --------------------------------------------------------------------------- published numbers
# What others measured on the real ER-2 data (../shared/reference/published-results.md); every
# row names its protocol and data, so no one mistakes these for our synthetic numbers.

PUBLISHED = [
    # source, model, protocol, data, r2, mae_km
    (
        "seed WP-4",
        "image_only (1-D MAE middle column)",
        "leave-one-flight-out, mean of 5 folds",
        "real ER-2, 933 samples",
        -3.13,
        0.322,
    ),
    (
        "seed WP-3",
        "gradient-boosted trees, 12 physical features",
        "leave-one-flight-out, mean of folds",
        "real ER-2, 933 samples",
        -14.15,
        0.491,
    ),
    (
        "seed WP-3",
        "gradient-boosted trees, 12 physical features",
        "stratified random 5-fold (leaky)",
        "real ER-2, 933 samples",
        0.676,
        0.136,
    ),
    ("same group", "2-D CNN image_only", "stratified random 5-fold (leaky)", "real ER-2, 933 samples", 0.279, 0.233),
    ("same group", "2-D CNN concat", "stratified random 5-fold (leaky)", "real ER-2, 933 samples", 0.180, 0.246),
    ("same group", "2-D CNN attention", "stratified random 5-fold (leaky)", "real ER-2, 933 samples", 0.326, 0.222),
    (
        "same group",
        "temporal ViT (5 frames)",
        "stratified random 5-fold (leaky)",
        "real ER-2, 933 samples",
        0.727,
        0.126,
    ),
    ("same group", "GBDT", "pooled random split (leaky)", "real ER-2, 1,426 samples", 0.924, 0.050),
    ("same group", "GBDT", "per-flight split", "real ER-2, 1,426 samples", 0.744, 0.117),
    ("same group", "GBDT", "leave-one-flight-out", "real ER-2, 1,426 samples", -15.4, 0.422),
    ("same group", "GBDT", "leave-one-flight-out", "real ER-2, 5,500 samples, 6 flights", -5.36, 0.518),
    ("Lenhardt et al. 2024", "MODIS + ordinal regression", "independent ceilometer truth", "satellite", None, 0.379),
]


def published_table() -> pd.DataFrame:
    return pd.DataFrame(PUBLISHED, columns=["source", "model", "protocol", "data", "r2", "mae_km"])
