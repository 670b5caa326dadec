"""Tables behind the exploration notebook: flights, features, distribution shift.

Shift diagnostics: how far each flight sits from the others (KS, PCA), where errors fall by
cloud-base regime, and the best R2 a synthetic campaign's label noise allows."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler

from cbhlib.data.campaign import Campaign


def flight_table(camp: Campaign) -> pd.DataFrame:
    """One row per flight: samples, CBH statistics (km), time span, solar zenith."""
    rows = []
    for k, name in enumerate(camp.flight_names):
        idx = camp.flight_indices(k)
        y = camp.cbh_km[idx].astype(float)
        t = camp.time_utc[idx]
        rows.append(
            {
                "flight": name,
                "campaign": camp.flight_campaigns[k] if camp.flight_campaigns else "",
                "samples": len(idx),
                "cbh_mean_km": y.mean(),
                "cbh_std_km": y.std(),
                "cbh_min_km": y.min(),
                "cbh_max_km": y.max(),
                "lag1_autocorr": lag1(y),
                "start_utc": datetime.fromtimestamp(t[0], UTC).strftime("%Y-%m-%d %H:%M"),
                "duration_min": (t[-1] - t[0]) / 60.0,
                "sza_mean_deg": float(camp.sza_deg[idx].mean()),
            }
        )
    return pd.DataFrame(rows)


def lag1(y: np.ndarray) -> float:
    """Lag-1 autocorrelation of a series (NaN for fewer than 3 values)."""
    y = np.asarray(y, float)
    if len(y) < 3:
        return float("nan")
    z = y - y.mean()
    den = float(np.sum(z * z))
    return float(np.sum(z[1:] * z[:-1]) / den) if den > 0 else float("nan")


def pooled_lag1(camp: Campaign) -> float:
    """Lag-1 autocorrelation of CBH within flights, pooled over consecutive pairs."""
    num, den = 0.0, 0.0
    for k in range(camp.n_flights):
        y = camp.cbh_km[camp.flight_indices(k)].astype(float)
        z = y - y.mean()
        num += float(np.sum(z[1:] * z[:-1]))
        den += float(np.sum(z * z))
    return num / den if den > 0 else float("nan")


def feature_frame(camp: Campaign) -> pd.DataFrame:
    """Long-ish frame: one column per ``group/feature``, plus cbh_km and flight name."""
    X, names = camp.feature_matrix()
    df = pd.DataFrame(X, columns=names)
    df["cbh_km"] = camp.cbh_km
    df["flight"] = [camp.flight_names[k] for k in camp.flight]
    return df


def feature_units(camp: Campaign) -> dict[str, str]:
    return {f"{g}/{n}": u for g, fg in camp.features.items() for n, u in zip(fg.names, fg.units, strict=True)}


def feature_correlations(camp: Campaign) -> pd.DataFrame:
    """Correlation of every feature with CBH: pooled Pearson and Spearman, and the mean of the
    within-flight Pearson correlations (a pooled correlation a flight-level shift creates is
    absent within flights)."""
    X, names = camp.feature_matrix()
    y = camp.cbh_km.astype(float)
    rows = []
    for j, name in enumerate(names):
        ok = np.isfinite(X[:, j])
        row = {
            "feature": name,
            "pearson_r": np.nan,
            "spearman_rho": np.nan,
            "within_flight_r": np.nan,
            "missing": 1 - ok.mean(),
        }
        if ok.sum() >= 3 and np.std(X[ok, j]) > 0:
            row["pearson_r"] = stats.pearsonr(X[ok, j], y[ok])[0]
            row["spearman_rho"] = stats.spearmanr(X[ok, j], y[ok])[0]
            within = []
            for k in range(camp.n_flights):
                m = ok & (camp.flight == k)
                if m.sum() >= 3 and np.std(X[m, j]) > 0 and np.std(y[m]) > 0:
                    within.append(stats.pearsonr(X[m, j], y[m])[0])
            row["within_flight_r"] = float(np.mean(within)) if within else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["feature", "pearson_r", "spearman_rho", "within_flight_r", "missing"])


def ks_matrix(values: np.ndarray, flight: np.ndarray, n_flights: int) -> np.ndarray:
    """Pairwise two-sample Kolmogorov-Smirnov statistics between flights.

    Returns:
        (F, F) symmetric matrix, NaN where a flight has fewer than 2 finite values.
    """
    out = np.full((n_flights, n_flights), np.nan)
    for a in range(n_flights):
        va = values[(flight == a) & np.isfinite(values)]
        for b in range(n_flights):
            vb = values[(flight == b) & np.isfinite(values)]
            if len(va) >= 2 and len(vb) >= 2:
                out[a, b] = stats.ks_2samp(va, vb).statistic
    return out


def mean_feature_ks(camp: Campaign) -> np.ndarray:
    """KS statistic between flights averaged over every physical feature."""
    X, _ = camp.feature_matrix()
    mats = [ks_matrix(X[:, j], camp.flight, camp.n_flights) for j in range(X.shape[1])]
    return np.nanmean(np.stack(mats), axis=0) if mats else np.full((camp.n_flights,) * 2, np.nan)


def pool_table(camp: Campaign) -> pd.DataFrame:
    """Labelled samples and unlabelled frames per flight."""
    unl = (
        np.bincount(camp.unlabelled_flight, minlength=camp.n_flights)
        if camp.n_unlabelled
        else np.zeros(camp.n_flights, int)
    )
    lab = np.bincount(camp.flight, minlength=camp.n_flights)
    return pd.DataFrame({"flight": camp.flight_names, "labelled": lab, "unlabelled": unl})


def quiet_flight_note(camp: Campaign) -> str:
    """Why R2 misleads on this campaign's quietest flight (the smallest CBH spread), from the data."""
    t = flight_table(camp)
    if t.empty:
        return ""
    q = t.sort_values("cbh_std_km").iloc[0]
    return (
        f"MAE is the steady read; R2 on a flight with little CBH variance (here {q['flight']}: {int(q['samples'])} "
        f"samples, CBH sd {1000 * q['cbh_std_km']:.0f} m) is dominated by any bias."
    )


# --------------------------------------------------------------------------- shift diagnostics

REGIMES = ((0.0, 0.5, "low (< 0.5 km)"), (0.5, 1.0, "mid (0.5-1 km)"), (1.0, np.inf, "high (> 1 km)"))


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
    return pd.DataFrame(rows).set_index("feature") if rows else pd.DataFrame()


def pca_2d(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Impute, standardise and project to 2-D. Returns (N, 2) and explained variance ratios."""
    Z = StandardScaler().fit_transform(SimpleImputer(strategy="median").fit_transform(X))
    pca = PCA(n_components=2, random_state=0).fit(Z)
    return pca.transform(Z), pca.explained_variance_ratio_


def regime_errors(pred: pd.DataFrame) -> pd.DataFrame:
    """Absolute error per prediction with its CBH regime (low / mid / high cloud)."""
    d = pred.copy()
    d["abs_error_m"] = (d["pred_km"] - d["truth_km"]).abs() * 1000
    d["regime"] = ""
    for lo, hi, label in REGIMES:
        d.loc[(d["truth_km"] >= lo) & (d["truth_km"] < hi), "regime"] = label
    return d


def ceiling(camp: Campaign) -> dict[str, float] | None:
    """Best achievable R2 per flight and pooled (synthetic campaigns), else None."""
    attrs = camp.truth_attrs()
    if "best_r2" not in attrs:
        return None
    per = camp.truth("best_r2_per_flight")
    out = {"pooled": float(attrs["best_r2"])}
    if per is not None:
        out.update({fl: float(v) for fl, v in zip(camp.flight_names, per, strict=True)})
    return out
