"""Baselines on exactly the folds of the neural modes, in the same unit/report schema.

* ``climatology``: the mean CBH of the fold's training samples.
* ``lcl``: Espy's lifting condensation level, 0.125 km per K of dewpoint depression
  from ERA5 t2m and d2m, plus one offset fitted on the fold's training samples.
* ``gbdt``: scikit-learn's HistGradientBoostingRegressor on the physical features (the
  seed's WP-3 analogue), fitted on the training samples (NaN handled natively).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from cbhlib.campaign import Campaign
from cbhlib.data import Fold
from cbhlib.metrics import regression_metrics
from cbhlib.reports import read_json, write_json

BASELINES = ("climatology", "lcl", "gbdt")
ESPY_KM_PER_K = 0.125


def espy_lcl_km(t2m_k: np.ndarray, d2m_k: np.ndarray) -> np.ndarray:
    """Espy's LCL height above the surface: 125 m per K of dewpoint depression (>= 0)."""
    return np.maximum(ESPY_KM_PER_K * (np.asarray(t2m_k, float) - np.asarray(d2m_k, float)), 0.0)


def _find(names: list[str], short: str) -> int | None:
    for i, n in enumerate(names):
        if n == short or n.endswith("/" + short):
            return i
    return None


Predictor = Callable[[Fold], np.ndarray]


def climatology(y: np.ndarray) -> Predictor:
    def predict(fold: Fold) -> np.ndarray:
        return np.full(len(y), float(np.mean(y[fold.fit_idx])))
    return predict


def lcl(y: np.ndarray, X: np.ndarray, names: list[str]) -> Predictor:
    it, idd = _find(names, "t2m"), _find(names, "d2m")
    if it is None or idd is None:
        raise ValueError("the lcl baseline needs t2m and d2m features (era5 group)")
    base = espy_lcl_km(X[:, it], X[:, idd])

    def predict(fold: Fold) -> np.ndarray:
        fit = fold.fit_idx
        ok = np.isfinite(base[fit])
        offset = float(np.median(y[fit][ok] - base[fit][ok])) if ok.any() else 0.0
        pred = base + offset
        fallback = float(np.mean(y[fit]))
        return np.where(np.isfinite(pred), pred, fallback)
    return predict


def gbdt(y: np.ndarray, X: np.ndarray, seed: int = 0) -> Predictor:
    def predict(fold: Fold) -> np.ndarray:
        model = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                              l2_regularization=1.0, early_stopping=False, random_state=seed)
        model.fit(X[fold.fit_idx], y[fold.fit_idx])
        return model.predict(X)
    return predict


def make_predictor(name: str, camp: Campaign, groups: list[str] | None = None, seed: int = 0) -> Predictor:
    """A baseline by name over a campaign's labels and physical features."""
    y = camp.cbh_km.astype(np.float64)
    X, names = camp.feature_matrix(groups or None)
    if name == "climatology":
        return climatology(y)
    if name == "lcl":
        return lcl(y, X, names)
    if name == "gbdt":
        if X.shape[1] == 0:
            raise ValueError("the gbdt baseline needs physical features; the campaign has none")
        return gbdt(y, X, seed)
    raise ValueError(f"unknown baseline '{name}'; choose from {', '.join(BASELINES)}")


def run_baseline(name: str, camp: Campaign, folds: list[Fold], protocol: str, run_dir: str | Path | None = None,
                 groups: list[str] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Score a baseline on every fold; unit dicts in the trainer's schema.

    Baselines fit on training plus validation samples (they need no early stopping).
    Results are cached per fold under ``run_dir/units/<protocol>/<name>/``.
    """
    predict = make_predictor(name, camp, groups, seed)
    y = camp.cbh_km.astype(np.float64)
    out = []
    for fold in folds:
        path = Path(run_dir) / "units" / protocol / name / f"fold{fold.fold_id}_seed{seed}.json" if run_dir else None
        key = hashlib.sha256(f"{name}|{camp.fingerprint()}|{groups}|{seed}".encode() + fold.fit_idx.tobytes()
                             + fold.test_idx.tobytes()).hexdigest()[:16]
        if path is not None and path.exists():
            cached = read_json(path)
            if cached.get("unit_sha") == key:
                out.append(cached)
                continue
        pred = predict(fold)
        # validation-side predictions for conformal calibration: refit without the validation samples
        val_fold = Fold(fold.fold_id, fold.test_flight, fold.train_idx, np.array([], dtype=np.int64), fold.val_idx)
        val_pred = predict(val_fold)[fold.val_idx] if len(fold.val_idx) else np.array([])
        test = fold.test_idx
        metrics = regression_metrics(y[test], pred[test])
        res = {
            "mode": name, "protocol": protocol, "fold_id": fold.fold_id, "test_flight": fold.test_flight,
            "seed": seed, "n_train": int(len(fold.fit_idx)), "n_val": 0, "n_test": int(len(test)),
            **{k: v for k, v in metrics.items() if k != "n"}, "epoch_trained": None,
            "test_idx": test.tolist(), "true": y[test].tolist(), "pred": pred[test].tolist(), "unit_sha": key,
            "val_idx": fold.val_idx.tolist(), "val_pred": val_pred.tolist(),
        }
        if path is not None:
            write_json(path, res)
        out.append(res)
    return out
