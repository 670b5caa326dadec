"""The synthetic campaign's ERA5 view: what a coarse reanalysis reports of the true state.

Features come from the nearest 0.25 deg grid cell and hour (piecewise constant along the
track), a boundary layer smoothed to the model's resolution, along-track cell errors,
land cells (warmer, much drier air, orography in surface pressure) and flight-level
biases that drift slowly along a flight. ``era5_features_easy`` is the previous
generator's view (truth smoothed over a few samples, small biases): the ``easy`` preset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage, signal

SCALE_HEIGHT_KM = 8.4  # pressure scale height (surface pressure over orography)
ERA5_DEW_BIAS_K = -2.8  # ERA5 2-m dewpoint too dry offshore
ERA5_BLH_SCALE = 0.95  # ERA5 boundary-layer height underestimates the cloud-topped layer
SLP_ALONG_TRACK_PA = 250.0  # sea-level pressure changes along a track (synoptic gradients)
LAND_WARM_K, LAND_DRY_K = 1.5, 6.0  # a grid cell over land: warmer and much drier air


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Unit-variance AR(1) series of length n."""
    eps = rng.standard_normal(n)
    eps[1:] *= np.sqrt(1 - phi**2)
    return signal.lfilter([1.0], [1.0, -phi], eps)


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(x) < 3:
        return x.copy()
    return ndimage.uniform_filter1d(x, size=min(window, len(x)), mode="nearest")


def era5_cells(cfg: Any, st: Any) -> np.ndarray:
    """Index of the nearest ERA5 grid cell and hour of each sample, in order of first visit
    (a revisited cell in the same hour gets the same values)."""
    key = np.stack(
        [np.floor(st.lat / cfg.era5_grid_deg), np.floor(st.lon / cfg.era5_grid_deg), np.round(st.time / 3600.0)], axis=1
    )
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.ravel()]


def cell_mean(x: np.ndarray, cell: np.ndarray, smoothing: int) -> np.ndarray:
    """Per-sample value of a grid cell: the true field smoothed along the track to the
    model's effective resolution, averaged over the cell (piecewise constant)."""
    xs = _smooth(x, smoothing)
    return (np.bincount(cell, xs) / np.bincount(cell))[cell]


def drifting_bias(rng: np.random.Generator, cell: np.ndarray, bias: float, drift: float) -> np.ndarray:
    """A flight-level bias that wanders slowly along the track (cell by cell), so the
    first minutes of a flight do not fully represent the rest."""
    walk = np.cumsum(rng.standard_normal(cell.max() + 1)) / np.sqrt(cell.max() + 1)
    return bias + drift * (walk - walk.mean())[cell]


def cell_error(rng: np.random.Generator, cell: np.ndarray, sigma: float, phi: float = 0.7) -> np.ndarray:
    """Model error of each grid cell, autocorrelated from one cell to the next."""
    return sigma * _ar1(rng, cell.max() + 1, phi)[cell]


def specific_humidity_gkg(d2m: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Specific humidity (g/kg) from dewpoint (K) and pressure (Pa), Bolton's formula."""
    tc = d2m - 273.15
    e = 611.2 * np.exp(17.67 * tc / (tc + 243.5))
    return 622.0 * e / (sp - 0.378 * e)


def era5_surface_air(
    cfg: Any, rng: np.random.Generator, st: Any, cell: np.ndarray, land: np.ndarray, dew_bias_k: float
) -> tuple[np.ndarray, np.ndarray]:
    """(t2m, d2m), K: the cell's surface air, warmer and much drier over land, with a
    campaign-wide and a drifting flight-level moisture bias and along-track errors."""
    t2m = cell_mean(st.t_sfc, cell, cfg.era5_smoothing) + LAND_WARM_K * land + cell_error(rng, cell, 0.8)
    moisture = ERA5_DEW_BIAS_K + drifting_bias(rng, cell, dew_bias_k, 0.6 * cfg.shift_strength)
    d2m = cell_mean(st.td, cell, cfg.era5_smoothing) - LAND_DRY_K * land + moisture + cell_error(rng, cell, 3.0)
    return t2m, d2m


def era5_boundary_layer(
    cfg: Any, rng: np.random.Generator, st: Any, cell: np.ndarray, reg: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(blh, inversion height), km, from a coarser boundary layer: the BLH diagnoses the
    surface-based mixed layer with a drifting scale error; the height of max dT/dz finds
    the inversion with a drifting bias, or in some cells a subsidence layer aloft."""
    s, m = cfg.shift_strength, cell.max() + 1
    scale = ERA5_BLH_SCALE * np.exp(drifting_bias(rng, cell, reg.blh_log_scale, 0.1 * s) + cell_error(rng, cell, 0.15))
    blh = np.maximum(cell_mean(st.mixing, cell, cfg.bl_smoothing) * scale, 0.05)
    inv = cell_mean(st.inv, cell, cfg.bl_smoothing) + drifting_bias(rng, cell, reg.inversion_bias_km, 0.15 * s)
    inv = inv + cell_error(rng, cell, 0.3)
    aloft = (rng.random(m) < 0.22)[cell]
    return blh, np.maximum(np.where(aloft, rng.uniform(2.3, 4.5, m)[cell], inv), 0.1)


def era5_surface_pressure(rng: np.random.Generator, cell: np.ndarray, slp_pa: float, land: np.ndarray) -> np.ndarray:
    """sp, Pa: sea-level pressure varying along the track, reduced over a land cell's
    orography (the nearest grid point may sit on the coastal mountains)."""
    orography_km = np.where(land, rng.gamma(2.0, 0.55, cell.max() + 1)[cell], 0.0)
    slp = slp_pa + SLP_ALONG_TRACK_PA * _ar1(rng, len(cell), 0.995)
    return slp * np.exp(-orography_km / SCALE_HEIGHT_KM) + cell_error(rng, cell, 60.0)


def era5_features(cfg: Any, k: int, st: Any, spec: Any, reg: Any) -> np.ndarray:
    """(n, 9) ERA5-like features: the nearest grid cell and hour of a coarse reanalysis."""
    rng = np.random.default_rng([cfg.seed, 2, k])
    cell = era5_cells(cfg, st)
    land = (rng.random(cell.max() + 1) < spec.land_frac)[cell]
    t2m, d2m = era5_surface_air(cfg, rng, st, cell, land, reg.dew_bias_k)
    blh, inv = era5_boundary_layer(cfg, rng, st, cell, reg)
    sp = era5_surface_pressure(rng, cell, spec.slp_pa, land)
    q = specific_humidity_gkg(d2m, sp)
    tcwv = np.maximum(1.85 * q * sp / 1e5 * np.exp(cell_error(rng, cell, 0.12)), 0.5)  # ~2 km moisture scale height
    moist = -0.35 * q / (0.5 + 0.5 * inv) + cell_error(rng, cell, 0.4)  # q falls ~35 % across the layer
    stab = -(cell_mean(st.gamma, cell, cfg.bl_smoothing) - 1.5) + cell_error(rng, cell, 0.6)
    lcl = np.maximum((t2m - d2m) / 8.0, 0.0)
    return np.stack([blh, lcl, inv, moist, stab, t2m, d2m, sp, tcwv], axis=1).astype(np.float32)


def era5_features_easy(cfg: Any, k: int, st: Any, spec: Any) -> np.ndarray:
    """The previous generator's ERA5 view: the truth smoothed over ``era5_smoothing``
    samples with small flight biases and white noise (the ``easy`` preset)."""
    rng = np.random.default_rng([cfg.seed, 2, k])
    n, s = len(st.h), cfg.shift_strength
    sm = lambda x: _smooth(x, cfg.era5_smoothing)
    t2m = sm(st.t_sfc) + s * 0.8 * rng.standard_normal() + 0.3 * rng.standard_normal(n)
    d2m = sm(st.td) - s * (3.5 + 1.2 * rng.standard_normal()) + 0.6 * rng.standard_normal(n)
    lcl = np.maximum((t2m - d2m) / 8.0, 0.0)
    blh = sm(st.blh) * (0.8 + 0.15 * s * rng.standard_normal()) + 0.12 * rng.standard_normal(n)
    inv = sm(st.inv) + s * (0.35 + 0.5 * rng.standard_normal()) + 0.6 * rng.standard_normal(n)
    moist = -(2.0 + 0.8 * sm(st.inv - st.blh) / 0.2) + 0.4 * rng.standard_normal(n)
    stab = -(sm(st.gamma) - 1.5) + 0.3 * s * rng.standard_normal() + 0.6 * rng.standard_normal(n)
    sp = spec.slp_pa * np.exp(-spec.land_frac * 0.9 / SCALE_HEIGHT_KM) + 400 * _ar1(rng, n, 0.98)
    tcwv = np.maximum(13.0 + 0.9 * (d2m - 278.0) + 1.5 * rng.standard_normal(n), 1.0)
    return np.stack([np.maximum(blh, 0.05), lcl, np.maximum(inv, 0.1), moist, stab, t2m, d2m, sp, tcwv], axis=1).astype(
        np.float32
    )
