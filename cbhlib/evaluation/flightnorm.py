"""Label-free flight adaptation: inputs standardised within their own flight, the target as an anomaly.

A new flight brings its own offsets (ERA5 representativeness, camera calibration, cloud
regime): a model trained on other flights inherits their level and is wrong by the new
flight's shift. The recipe here needs no label of the new flight:

* every input column is standardised within its own flight, from that flight's **inputs**
  (``flight``: mean and sd over the whole flight, post-flight processing; ``running``:
  expanding mean and sd over the flight's samples up to each time, for use during a
  flight; the first ``warmup`` samples carry no anomaly yet);
* the model learns the **within-flight anomaly** of CBH (each training flight's label
  minus that flight's mean label on the training side);
* a prediction is that anomaly plus a **level**: the mean label of the sample's flight on
  the training side when the flight has training samples, else the training mean
  (climatology's level: what a new flight gets), or, with ``level="inputs"``, a ridge
  regression of the training flights' mean labels on their mean inputs (few flights: unstable).

Nothing here reads a label of a sample outside ``fit_idx`` (tests spy on it).
"""

from __future__ import annotations

import numpy as np

from cbhlib.constants import FLIGHT_LEVELS, FLIGHT_NORM_SUFFIXES, FLIGHT_NORMS

SUFFIXES = FLIGHT_NORM_SUFFIXES
LABELS = {"none": "plain", "flight": "flight-normalised", "running": "flight-normalised (running)"}


def variant(model: str, how: str) -> str:
    """The model name of a flight-normalised variant (``gbdt`` + ``flight`` -> ``gbdt_fn``)."""
    return model + SUFFIXES.get(how, "")


def split_variant(name: str) -> tuple[str, str]:
    """(base model, flight norm) of a model name (``gbdt_fnrun`` -> ``("gbdt", "running")``)."""
    for how, suffix in sorted(SUFFIXES.items(), key=lambda kv: -len(kv[1])):
        if name.endswith(suffix):
            return name[: -len(suffix)], how
    return name, "none"


def _flight_order(flight: np.ndarray, time: np.ndarray | None) -> list[np.ndarray]:
    """Per flight, its sample indices in time order."""
    out = []
    for k in dict.fromkeys(np.asarray(flight).tolist()):
        idx = np.flatnonzero(flight == k)
        if time is not None:
            idx = idx[np.argsort(np.asarray(time)[idx], kind="stable")]
        out.append(idx)
    return out


def _standardise(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """(x - mean) / sd; a column without spread (sd ~ 0) carries no anomaly (0)."""
    flat = ~(sd > 1e-9 * np.maximum(1.0, np.abs(mean)))
    z = (x - mean) / np.where(flat, 1.0, sd)
    return np.where(flat & np.isfinite(x), 0.0, z)


def normalise(
    X: np.ndarray, flight: np.ndarray, time: np.ndarray | None = None, how: str = "flight", warmup: int = 10
) -> np.ndarray:
    """Each input column standardised within its own flight, from that flight's inputs only.

    Args:
        X: (N, K) inputs (NaN allowed: stays NaN, later imputed or handled by the model).
        flight: (N,) flight of each sample.
        time: (N,) sample times (``running`` needs them; samples are ordered by time within a flight).
        how: ``none`` (X unchanged), ``flight`` or ``running``.
        warmup: ``running``: samples of a flight before its statistics are used (their anomaly is 0).

    Returns:
        (N, K) float64.
    """
    X = np.asarray(X, np.float64)
    if how == "none":
        return X.copy()
    if how not in FLIGHT_NORMS:
        raise ValueError(f"flight_norm: expected one of {', '.join(FLIGHT_NORMS)}; found {how!r}")
    squeeze = X.ndim == 1
    X2 = X.reshape(len(X), -1)
    Z = np.full_like(X2, np.nan)
    for idx in _flight_order(np.asarray(flight), time):
        x = X2[idx]
        if how == "flight":
            ok = np.isfinite(x)
            n = ok.sum(0)
            mean = np.where(n > 0, np.nansum(x, 0) / np.maximum(n, 1), 0.0)
            var = np.where(n > 0, np.nansum(np.where(ok, (x - mean) ** 2, 0.0), 0) / np.maximum(n, 1), 0.0)
            Z[idx] = _standardise(x, mean, np.sqrt(var))
        else:  # running: statistics of the samples up to and including each one (causal)
            ok = np.isfinite(x)
            xv = np.where(ok, x, 0.0)
            n = np.cumsum(ok, 0)
            s1 = np.cumsum(xv, 0)
            s2 = np.cumsum(xv * xv, 0)
            mean = s1 / np.maximum(n, 1)
            var = np.maximum(s2 / np.maximum(n, 1) - mean * mean, 0.0)
            z = _standardise(x, mean, np.sqrt(var))
            z[: max(0, warmup)] = np.where(np.isfinite(x[: max(0, warmup)]), 0.0, np.nan)
            Z[idx] = z
    return Z.reshape(X.shape) if not squeeze else Z[:, 0]


def levels(
    y: np.ndarray,
    flight: np.ndarray,
    fit_idx: np.ndarray,
    X: np.ndarray | None = None,
    level: str = "training",
    alpha: float = 10.0,
) -> np.ndarray:
    """The level each sample's prediction is added to, from the labels of ``fit_idx`` only.

    Args:
        y: (N,) labels; only ``y[fit_idx]`` is read.
        flight: (N,) flight of each sample.
        fit_idx: samples whose labels may be used.
        X: (N, K) raw inputs, for ``level="inputs"`` (flight means of the inputs predict flight levels).
        level: ``training``: a flight with training samples keeps its own mean label, a new
            flight gets the training mean; ``inputs``: a new flight's level from a ridge
            regression (weight ``alpha``) of the training flights' mean labels on their mean inputs.

    Returns:
        (N,) km.
    """
    fit_idx = np.asarray(fit_idx, np.int64)
    flight = np.asarray(flight)
    y_fit = np.asarray(y, np.float64)[fit_idx]
    overall = float(y_fit.mean())
    out = np.full(len(flight), overall)
    fit_flights = flight[fit_idx]
    known = {k: float(y_fit[fit_flights == k].mean()) for k in dict.fromkeys(fit_flights.tolist())}
    for k, v in known.items():
        out[flight == k] = v
    if level == "inputs":
        if X is None:
            raise ValueError("level='inputs' needs the inputs X")
        new = [k for k in dict.fromkeys(flight.tolist()) if k not in known]
        if new and len(known) >= 2:
            Xa = np.asarray(X, np.float64).reshape(len(flight), -1)
            means = lambda ks: np.array([np.nanmean(Xa[flight == k], 0) for k in ks])
            A, b = means(list(known)), np.array(list(known.values()))
            mu, sd = np.nanmean(A, 0), np.nanstd(A, 0) + 1e-9
            A = np.nan_to_num((A - mu) / sd)
            coef = np.linalg.solve(A.T @ A + alpha * np.eye(A.shape[1]), A.T @ (b - b.mean()))
            for k, row in zip(new, np.nan_to_num((means(new) - mu) / sd), strict=True):
                out[flight == k] = float(b.mean() + row @ coef)
    elif level != "training":
        raise ValueError(f"flight_level: expected one of {', '.join(FLIGHT_LEVELS)}; found {level!r}")
    return out
