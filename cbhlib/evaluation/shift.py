"""Domain-shift diagnostics: how far each flight sits from the others, and where errors fall."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler

from cbhlib.data.campaign import Campaign

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
