"""Cross-flight comparison: every model under every protocol, few-shot adaptation,
conformal intervals and domain-shift diagnostics. Backs notebook 03.

Few-shot adaptation is a *recalibration*: the k labelled samples of the target flight
give the mean residual of the model's leave-one-flight-out predictions there, and that
offset is added to the flight's other predictions, which alone are scored.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler

from cbhlib.baselines import BASELINES, run_baseline
from cbhlib.campaign import Campaign
from cbhlib.conformal import conformal_quantile, interval_coverage
from cbhlib.data import make_folds
from cbhlib.metrics import regression_metrics
from cbhlib.reports import build_report, predictions_frame, provenance, read_json, write_json, write_predictions
from cbhlib.runner import DESCRIPTIONS, predictions_name, protocol_label, report_name

REGIMES = ((0.0, 0.5, "low (< 0.5 km)"), (0.5, 1.0, "mid (0.5-1 km)"), (1.0, np.inf, "high (> 1 km)"))


def run_baselines(camp: Campaign, protocols: list[str], run_dir: str | Path, groups: list[str] | None = None,
                  val_fraction: float = 0.2, names: tuple[str, ...] = BASELINES) -> dict[tuple[str, str], dict[str, Any]]:
    """Score every baseline under every protocol and write their reports and predictions."""
    run_dir = Path(run_dir)
    out = {}
    for proto in protocols:
        folds = make_folds(camp, proto, val_fraction)
        for name in names:
            try:
                units = run_baseline(name, camp, folds, proto, run_dir, groups)
            except ValueError as exc:  # e.g. no t2m/d2m for the LCL baseline
                print(f"baseline {name} skipped: {exc}")
                continue
            rep = build_report(name, DESCRIPTIONS[name], protocol_label(proto), units,
                               provenance({"groups": groups, "val_fraction": val_fraction}, camp.fingerprint(), 0))
            write_json(run_dir / report_name(name, proto), rep)
            write_predictions(run_dir / predictions_name(name, proto), predictions_frame(units, camp.flight_names, camp.flight))
            out[(name, proto)] = rep
    return out


def load_runs(run_dir: str | Path) -> pd.DataFrame:
    """Every report in a run folder: model, protocol, report dict, predictions frame."""
    run_dir = Path(run_dir)
    rows = []
    for path in sorted(run_dir.glob("report_*.json")):
        if path.name == "report_all.json":
            continue
        rep = read_json(path)
        proto = "lofo" if "__" not in path.stem else path.stem.split("__", 1)[1]
        model = rep["model_variant"]
        pred_path = run_dir / predictions_name(model, proto)
        pred = pd.read_csv(pred_path) if pred_path.exists() else None
        if pred is not None and "seed" in pred:
            pred = pred[pred["seed"] == pred["seed"].min()]
        rows.append({"model": model, "protocol": proto, "report": rep, "pred": pred})
    return pd.DataFrame(rows)


def per_flight_metrics(pred: pd.DataFrame, flights: list[str]) -> pd.DataFrame:
    """R2 / MAE / RMSE per flight from held-out predictions (all folds of the protocol)."""
    rows = []
    for fl in flights:
        d = pred[pred["flight"] == fl]
        if len(d) == 0:
            continue
        m = regression_metrics(d["true_km"].to_numpy(), d["pred_km"].to_numpy())
        rows.append({"flight": fl, "r2": m["r2"], "mae_m": m["mae_km"] * 1000, "rmse_m": m["rmse_km"] * 1000, "n": m["n"]})
    return pd.DataFrame(rows)


def comparison_table(runs: pd.DataFrame, flights: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long per-flight table, wide headline table: model x protocol)."""
    long_rows, wide_rows = [], []
    for _, r in runs.iterrows():
        if r["pred"] is None:
            continue
        pf = per_flight_metrics(r["pred"], flights)
        pf.insert(0, "protocol", r["protocol"])
        pf.insert(0, "model", r["model"])
        long_rows.append(pf)
        agg = r["report"]["aggregate_metrics"]
        row = {"model": r["model"], "protocol": r["protocol"]}
        for _, f in pf.iterrows():
            row[f"R2 {f['flight']}"] = f["r2"]
        for _, f in pf.iterrows():
            row[f"MAE m {f['flight']}"] = f["mae_m"]
        for _, f in pf.iterrows():
            row[f"RMSE m {f['flight']}"] = f["rmse_m"]
        row.update({"mean of fold R2": agg.get("mean_r2"), "pooled R2": agg.get("pooled_r2"),
                    "pooled MAE m": (agg.get("pooled_mae_km") or np.nan) * 1000,
                    "pooled RMSE m": (agg.get("pooled_rmse_km") or np.nan) * 1000})
        wide_rows.append(row)
    long = pd.concat(long_rows, ignore_index=True) if long_rows else pd.DataFrame()
    order = {"lofo": 0, "within_flight": 1, "random": 2}
    wide = pd.DataFrame(wide_rows)
    if len(wide):
        wide = wide.sort_values(["model", "protocol"], key=lambda s: s.map(order) if s.name == "protocol" else s)
    return long, wide.reset_index(drop=True)


# --------------------------------------------------------------------------- few-shot


def few_shot_split(n: int, k: int, rng: np.random.Generator, min_scored: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Positions of (k labelled calibration samples, scored samples) within one flight.

    k is capped so that at least ``min_scored`` samples remain to score; the two sets
    are disjoint and cover the flight.
    """
    k_used = max(0, min(k, n - min_scored))
    perm = rng.permutation(n)
    return np.sort(perm[:k_used]), np.sort(perm[k_used:])


def few_shot(pred: pd.DataFrame, ks: tuple[int, ...] = (0, 5, 10, 20, 50), repeats: int = 5, seed: int = 0,
             model: str = "") -> pd.DataFrame:
    """Offset recalibration with k labelled samples of each held-out flight.

    Args:
        pred: leave-one-flight-out predictions (columns flight, true_km, pred_km).
    Returns:
        One row per (flight, k, repeat): k_used, n_scored, r2, mae_km.
    """
    rows = []
    for fl, d in pred.groupby("flight", sort=False):
        y, p = d["true_km"].to_numpy(float), d["pred_km"].to_numpy(float)
        for k in ks:
            rng = np.random.default_rng([seed, k, zlib.crc32(str(fl).encode())])
            for rep in range(repeats if k > 0 else 1):
                calib, scored = few_shot_split(len(y), k, rng)
                offset = float(np.mean(y[calib] - p[calib])) if len(calib) else 0.0
                m = regression_metrics(y[scored], p[scored] + offset)
                rows.append({"model": model, "flight": fl, "k": k, "k_used": len(calib), "repeat": rep,
                             "n_scored": len(scored), "r2": m["r2"], "mae_km": m["mae_km"]})
    return pd.DataFrame(rows)


def few_shot_curve(fs: pd.DataFrame) -> pd.DataFrame:
    """Per (model, k): mean over flights of R2 and MAE, spread (std) over repeats."""
    per_rep = fs.groupby(["model", "k", "repeat"]).agg(r2=("r2", "mean"), mae_km=("mae_km", "mean")).reset_index()
    # k = 0 has one repeat per flight: it is the plain leave-one-flight-out mean of fold R2
    return per_rep.groupby(["model", "k"]).agg(r2_mean=("r2", "mean"), r2_std=("r2", "std"),
                                               mae_km_mean=("mae_km", "mean"), mae_km_std=("mae_km", "std")).reset_index().fillna({"r2_std": 0.0, "mae_km_std": 0.0})


# --------------------------------------------------------------------------- conformal


def load_units(run_dir: str | Path, model: str, protocol: str = "lofo") -> list[dict[str, Any]]:
    folder = Path(run_dir) / "units" / protocol / model
    units = [read_json(p) for p in sorted(folder.glob("fold*_seed*.json"))]
    if units:
        first_seed = min(u.get("seed", 0) for u in units)
        units = [u for u in units if u.get("seed", 0) == first_seed]
    return units


def conformal_table(units: list[dict[str, Any]], y: np.ndarray, alpha: float = 0.1, k: int = 20,
                    repeats: int = 5, seed: int = 0, model: str = "") -> pd.DataFrame:
    """Coverage and width of split-conformal intervals per held-out flight.

    (a) ``training flights``: calibrated on the fold's validation residuals (training
        flights only, never the held-out one);
    (b) ``target flight (k-shot)``: calibrated on k labelled samples of the held-out
        flight, scored on its other samples (averaged over repeats).
    """
    rows = []
    for u in units:
        test_true, test_pred = np.asarray(u["true"], float), np.asarray(u["pred"], float)
        if u.get("val_idx"):
            res = y[np.asarray(u["val_idx"], int)] - np.asarray(u["val_pred"], float)
            q = conformal_quantile(res, alpha)
            cov, width = interval_coverage(test_true, test_pred, q)
            rows.append({"model": model, "flight": u["test_flight"], "calibration": "training flights",
                         "coverage": cov, "width_km": width, "n_calibration": len(res)})
        rng = np.random.default_rng([seed, len(test_true)])
        covs, widths = [], []
        for _ in range(repeats):
            calib, scored = few_shot_split(len(test_true), k, rng)
            if len(calib) == 0:
                continue
            q = conformal_quantile(test_true[calib] - test_pred[calib], alpha)
            if not np.isfinite(q):
                q = float(np.max(np.abs(test_true[calib] - test_pred[calib])))
            c, w = interval_coverage(test_true[scored], test_pred[scored], q)
            covs.append(c)
            widths.append(w)
        if covs:
            rows.append({"model": model, "flight": u["test_flight"], "calibration": f"target flight ({k}-shot)",
                         "coverage": float(np.mean(covs)), "width_km": float(np.mean(widths)), "n_calibration": min(k, len(test_true) - 5)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- shift


def shift_ks(camp: Campaign, groups: list[str] | None = None) -> pd.DataFrame:
    """KS statistic of every feature: each flight against all the other flights (its training side)."""
    X, names = camp.feature_matrix(groups)
    rows = []
    for j, name in enumerate(names):
        row = {"feature": name}
        for k, fl in enumerate(camp.flight_names):
            a = X[(camp.flight == k) & np.isfinite(X[:, j]), j]
            b = X[(camp.flight != k) & np.isfinite(X[:, j]), j]
            row[fl] = stats.ks_2samp(a, b).statistic if len(a) > 1 and len(b) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("feature")


def pca_2d(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Impute, standardise and project to 2-D. Returns (N, 2) and explained variance ratios."""
    Z = StandardScaler().fit_transform(SimpleImputer(strategy="median").fit_transform(X))
    pca = PCA(n_components=2, random_state=0).fit(Z)
    return pca.transform(Z), pca.explained_variance_ratio_


def regime_errors(pred: pd.DataFrame) -> pd.DataFrame:
    """Absolute error per sample with its CBH regime (low / mid / high cloud)."""
    d = pred.copy()
    d["abs_error_m"] = (d["pred_km"] - d["true_km"]).abs() * 1000
    d["regime"] = ""
    for lo, hi, label in REGIMES:
        d.loc[(d["true_km"] >= lo) & (d["true_km"] < hi), "regime"] = label
    return d


def ceiling(camp: Campaign) -> dict[str, float] | None:
    """Best achievable R2 per flight and pooled (synthetic campaigns), else None."""
    attrs = camp.truth_attrs()
    if "best_r2" not in attrs:
        return None
    per = camp.truth("best_r2_per_flight")
    out = {"pooled": float(attrs["best_r2"])}
    if per is not None:
        out.update({fl: float(v) for fl, v in zip(camp.flight_names, per)})
    return out


def summary(wide: pd.DataFrame, curve: pd.DataFrame, conf: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers for ``comparison_summary.json``."""
    out: dict[str, Any] = {"models": {}}
    for _, r in wide.iterrows():
        out["models"].setdefault(r["model"], {})[r["protocol"]] = {
            "mean_fold_r2": r["mean of fold R2"], "pooled_r2": r["pooled R2"], "pooled_mae_m": r["pooled MAE m"]}
    if len(curve):
        out["few_shot"] = curve.to_dict("records")
    if len(conf):
        out["conformal"] = conf.groupby(["model", "calibration"])[["coverage", "width_km"]].mean().reset_index().to_dict("records")
    return out

