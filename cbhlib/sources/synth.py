"""A physically grounded synthetic ER-2 campaign, calibrated to the real one's difficulty.

One latent atmospheric state per sample drives every modality:

* cloud base ``h``: an AR(1) process along each track (lag-1 ~ 0.9) with the seed's
  per-flight statistics; labels are ``h`` plus lidar noise on the 0.03 km grid;
* the boundary-layer regime sets how the surface parcel's LCL relates to the base
  (coupled: just below it; decoupled: a separate surface layer, below and unrelated);
* ERA5-like features see the state as a reanalysis does (nearest 0.25 deg cell and hour,
  coarse boundary layer, along-track errors, land cells, drifting flight-level biases);
* the WP1 shadow retrieval and the thermal frames come from :mod:`cbhlib.sources.synth_images`.

Flight-level departures live in :class:`FlightRegime`, all multiplied by
``shift_strength`` (0: one physics for every flight). ``feature_model="easy"`` keeps the
previous generator's features. Deterministic for a seed, with separate random streams
per flight and purpose (the unlabelled pool never changes the labelled samples).
``truth/`` keeps the noise-free state. Calibration: ``benchmarks/calibrate_synth.py``.
"""

from __future__ import annotations

import json
import logging
import time as _time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cbhlib.constants import ERA5_VARIABLES, GEOMETRY_VARIABLES
from cbhlib.data.campaign import CampaignData, FeatureGroup, write_campaign
from cbhlib.sources.synth_config import PRESETS, FlightRegime, FlightSpec, SynthConfig, preset
from cbhlib.sources.synth_era5 import _ar1, era5_features, era5_features_easy
from cbhlib.sources.synth_images import FrameState, image_blocks, shadow_retrieval

log = logging.getLogger(__name__)
__all__ = ["PRESETS", "SynthConfig", "build_tables", "ensure_campaign", "generate", "preset"]

GRID_KM = 0.03  # CPL layer-base resolution
LCL_KM_PER_K = 0.125  # Espy: 125 m per K of dewpoint depression
ERA5_NAMES, ERA5_UNITS = list(ERA5_VARIABLES), list(ERA5_VARIABLES.values())
GEOM_NAMES, GEOM_UNITS = list(GEOMETRY_VARIABLES), list(GEOMETRY_VARIABLES.values())
SPEED_KM_S = 0.2  # ER-2 ground speed

# Campaign-wide physics (the same for every flight; shift_strength does not touch it)
DECOUPLING_KM = 0.15  # cloud base above the surface-parcel LCL
DECOUPLED_KM = 0.6  # at this mean depth the sub-cloud layer is fully decoupled from the cloud
DECOUPLED_SLOPE = 0.7  # d(surface LCL)/d(cloud base) in a fully decoupled layer
THICK_KM = 0.25  # mean cloud thickness
SST_AIR_K = 0.8  # sea surface warmer than the air above it
T_ALONG_TRACK_K = 2.0  # surface air temperature changes along a track (fronts, upwelling)


# --------------------------------------------------------------------------- state


@dataclass
class _FlightState:
    """The true atmosphere under one flight's labelled samples (km, K, deg, POSIX s):
    base ``h``, gridded lidar ``label``, cloud ``thick``ness, surface air ``t_sfc`` and
    dewpoint ``td``, surface-parcel ``lcl``, boundary-layer top ``blh`` (inversion base),
    inversion top ``inv``, surface-based ``mixing`` layer top, lapse rate ``gamma`` (K/km),
    sea minus air ``sst_air``, sun, track, cloud fraction and the flight's camera."""

    h: np.ndarray
    label: np.ndarray
    thick: np.ndarray
    t_sfc: np.ndarray
    td: np.ndarray
    lcl: np.ndarray
    blh: np.ndarray
    inv: np.ndarray
    mixing: np.ndarray
    gamma: np.ndarray
    sst_air: np.ndarray
    sza: np.ndarray
    saa: np.ndarray
    time: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    cloud_fraction: np.ndarray
    calib_k: float
    gain: float

    def frames(self, t: np.ndarray | None = None) -> FrameState:
        """What the camera sees at the labelled times, or interpolated at times ``t``."""
        at = (lambda x: x) if t is None else (lambda x: np.interp(t, self.time, x))
        n = len(self.h) if t is None else len(t)
        return FrameState(
            at(self.h),
            at(self.thick),
            at(self.t_sfc),
            at(self.sst_air),
            at(self.gamma),
            at(self.cloud_fraction),
            at(self.sza),
            at(self.saa),
            np.full(n, self.calib_k),
            np.full(n, 1.0 + self.gain),
        )


def _regime(cfg: SynthConfig, k: int) -> FlightRegime:
    """The flight's departures times ``shift_strength``; ``easy`` draws the previous
    generator's small random ones instead."""
    s = cfg.shift_strength
    if cfg.feature_model == "easy":
        z = np.random.default_rng([cfg.seed, 9, k]).standard_normal(3)
        return FlightRegime(
            decoupling_km=-0.05 + 0.12 * s * z[0], lapse_k_per_km=0.4 * s * z[1], calib_k=1.0 * s * z[2], sst_air_k=0.2
        )
    r = cfg.regimes[k]
    return FlightRegime(*(s * getattr(r, f) for f in FlightRegime.__dataclass_fields__))


def _track(rng: np.random.Generator, spec: FlightSpec, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, lat, lon) of the labelled samples: ~13 s apart, flown in straight legs of
    a few hundred km joined by turns."""
    t0 = datetime.fromisoformat(spec.date).replace(hour=18, tzinfo=UTC).timestamp()
    gaps = rng.exponential(12.0, n) + 1.0
    step = gaps * SPEED_KM_S
    dist = np.cumsum(step)
    legs = np.cumsum(rng.exponential(250.0, 64))
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.choice([-1, 1], 65) * rng.uniform(1.6, 3.1, 65))
    hd = heading[np.searchsorted(legs, dist)]
    lat = spec.lat0 + np.cumsum(step * np.cos(hd)) / 111.0
    lon = spec.lon0 + np.cumsum(step * np.sin(hd)) / (111.0 * np.cos(np.deg2rad(spec.lat0)))
    return t0 + np.cumsum(gaps), lat, lon


def boundary_layer(
    cfg: SynthConfig, rng: np.random.Generator, h: np.ndarray, blh: np.ndarray, decoupling_km: float
) -> tuple[np.ndarray, np.ndarray]:
    """(surface-parcel LCL, top of the surface-based mixed layer), km.

    A coupled layer mixes the surface air up to the cloud: the LCL sits just below the
    base and the mixed layer reaches the inversion. The deeper the decoupling, the more
    the surface layer keeps its own LCL (which falls as the deepening layer lifts the
    cloud) and the lower the mixed layer a reanalysis diagnoses as its BLH.
    """
    n = len(h)
    decoupling = max(DECOUPLING_KM + decoupling_km, 0.0) + 0.08 * _ar1(rng, n, 0.9)  # base above the LCL
    w = float(np.clip(np.mean(decoupling) / DECOUPLED_KM, 0, 1)) if cfg.feature_model == "calibrated" else 0.0
    own = h.mean() - decoupling - DECOUPLED_SLOPE * (h - h.mean()) + 0.5 * h.std() * _ar1(rng, n, cfg.lag1)
    lcl = np.clip((1 - w) * (h - decoupling) + w * own, 0.03, None)
    return lcl, (1 - w) * blh + w * (lcl + 0.3)


def _flight_state(cfg: SynthConfig, k: int, spec: FlightSpec) -> _FlightState:
    rng = np.random.default_rng([cfg.seed, 1, k])
    n = max(2, int(round(spec.n * cfg.n_scale)))
    reg = _regime(cfg, k)
    z = _ar1(rng, n, cfg.lag1)
    z = (z - z.mean()) / (z.std() + 1e-9)
    h = np.clip(spec.cbh_mean + spec.cbh_std * z, spec.cbh_min, spec.cbh_max)
    noisy = h + cfg.label_noise_km * rng.standard_normal(n)
    lo, hi = np.ceil(spec.cbh_min / GRID_KM), np.floor(spec.cbh_max / GRID_KM)
    label = np.clip(np.round(noisy / GRID_KM), lo, hi) * GRID_KM
    time, lat, lon = _track(rng, spec, n)

    thick = np.clip(THICK_KM + reg.thick_km + 0.08 * _ar1(rng, n, 0.8), 0.04, 0.8)
    blh = h + thick + 0.05 + 0.05 * np.abs(rng.standard_normal(n))
    inv = blh + 0.15 + 0.1 * np.abs(_ar1(rng, n, 0.9))
    lcl, mixing = boundary_layer(cfg, rng, h, blh, reg.decoupling_km)
    t_sfc = spec.t2m_mean + T_ALONG_TRACK_K * _ar1(rng, n, 0.995)
    td = t_sfc - lcl / LCL_KM_PER_K
    gamma = cfg.lapse_rate_k_per_km + reg.lapse_k_per_km + 0.3 * _ar1(rng, n, 0.9)
    sst_air = SST_AIR_K + reg.sst_air_k + 0.3 * _ar1(rng, n, 0.95)
    sza = np.clip(spec.sza_mean + 2.0 * _ar1(rng, n, 0.99), 20, 75)
    saa = (spec.saa_mean + 15.0 * _ar1(rng, n, 0.99)) % 360
    cf = np.clip(0.45 + 0.12 * _ar1(rng, n, 0.9), 0.15, 0.8)
    return _FlightState(
        h,
        label,
        thick,
        t_sfc,
        td,
        lcl,
        blh,
        inv,
        mixing,
        gamma,
        sst_air,
        sza,
        saa,
        time,
        lat,
        lon,
        cf,
        reg.calib_k,
        reg.gain,
    )


def _geometry(cfg: SynthConfig, k: int, st: _FlightState) -> np.ndarray:
    """(n, 3) WP1 shadow features (:func:`cbhlib.sources.synth_images.shadow_retrieval`)."""
    rng = np.random.default_rng([cfg.seed, 3, k])
    scale = np.exp(_regime(cfg, k).shadow_log_scale + 0.05 * _ar1(rng, len(st.h), 0.99))  # slowly wandering
    return shadow_retrieval(cfg, rng, st.h, st.sza, scale)


# --------------------------------------------------------------------------- assembly


def best_r2(label: np.ndarray, truth: np.ndarray) -> float:
    """R2 of the noise-free truth as a predictor of the noisy label: the ceiling."""
    ss_res = float(np.sum((label - truth) ** 2))
    ss_tot = float(np.sum((label - label.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def pool_times(cfg: SynthConfig, k: int, st: _FlightState) -> np.ndarray:
    """Times of the flight's unlabelled frames: between its labelled samples, strictly
    inside its time span (own random stream: the labelled samples never depend on it)."""
    m = int(round(cfg.unlabelled_factor * len(st.h)))
    rng = np.random.default_rng([cfg.seed, 5, k])
    return np.sort(rng.uniform(st.time[0], st.time[-1], m)) if m else np.empty(0)


def build_tables(cfg: SynthConfig) -> tuple[CampaignData, list[_FlightState]]:
    """Labels, metadata, features, truth and the pool's flights/times (no pixels)."""
    if cfg.feature_model not in ("calibrated", "easy"):
        raise ValueError(f"feature_model must be 'calibrated' or 'easy', not {cfg.feature_model!r}")
    states = [_flight_state(cfg, k, spec) for k, spec in enumerate(cfg.flights)]
    cat = lambda attr: np.concatenate([getattr(s, attr) for s in states])
    era5 = np.concatenate(
        [
            era5_features_easy(cfg, k, s, spec)
            if cfg.feature_model == "easy"
            else era5_features(cfg, k, s, spec, _regime(cfg, k))
            for k, (s, spec) in enumerate(zip(states, cfg.flights, strict=True))
        ]
    )
    geom = np.concatenate([_geometry(cfg, k, s) for k, s in enumerate(states)])
    flight = np.concatenate([np.full(len(s.h), k) for k, s in enumerate(states)])
    label, h = cat("label"), cat("h")
    times = [pool_times(cfg, k, s) for k, s in enumerate(states)]
    pool = sum(len(t) for t in times) > 0
    data = CampaignData(
        flight_names=[f.name for f in cfg.flights],
        flight_campaigns=[f.campaign for f in cfg.flights],
        flight=flight,
        cbh_km=label.astype(np.float32),
        time_utc=cat("time"),
        sza_deg=cat("sza").astype(np.float32),
        saa_deg=cat("saa").astype(np.float32),
        lat=cat("lat").astype(np.float32),
        lon=cat("lon").astype(np.float32),
        source=f"synthetic(seed={cfg.seed})",
        features={
            "era5": FeatureGroup(era5, list(ERA5_NAMES), list(ERA5_UNITS)),
            "geometric": FeatureGroup(geom, list(GEOM_NAMES), list(GEOM_UNITS)),
        },
        truth={
            "cbh_km": h.astype(np.float32),
            "cloud_top_km": (h + cat("thick")).astype(np.float32),
            "lcl_km": cat("lcl").astype(np.float32),
            "lapse_rate_k_per_km": cat("gamma").astype(np.float32),
            "sst_minus_air_k": cat("sst_air").astype(np.float32),
            "best_r2_per_flight": np.array([best_r2(s.label, s.h) for s in states]),
        },
        truth_attrs={"best_r2": best_r2(label, h), "label_noise_km": cfg.label_noise_km},
        attrs={
            "synth_config": json.dumps(asdict(cfg), sort_keys=True),
            "synth_config_sha": cfg.sha(),
            "image_scale_m_per_pixel": cfg.pixel_scale_m,
        },
        unlabelled_flight=np.concatenate([np.full(len(t), k) for k, t in enumerate(times)]) if pool else None,
        unlabelled_time_utc=np.concatenate(times) if pool else None,
    )
    return data, states


def generate(cfg: SynthConfig, path: str | Path, with_images: bool = True, overwrite: bool = False) -> Path:
    """Generate the campaign (and its unlabelled pool) into ``path``, written atomically
    (an existing file is replaced only with ``overwrite``)."""
    data, states = build_tables(cfg)
    if not cfg.labels:
        data.cbh_km = None
    images = unlabelled = None
    if with_images:
        images = image_blocks(cfg, [s.frames() for s in states], 4)
        if data.unlabelled_flight is not None:
            times = [data.unlabelled_time_utc[data.unlabelled_flight == k] for k in range(len(states))]
            unlabelled = image_blocks(cfg, [s.frames(t) for s, t in zip(states, times, strict=True)], 6)
    else:
        data.unlabelled_flight = data.unlabelled_time_utc = None
    shape = (cfg.image_channels, cfg.image_height, cfg.image_width)
    return write_campaign(
        path,
        data,
        images=images,
        image_shape=shape,
        image_dtype=cfg.image_dtype,
        unlabelled=unlabelled,
        overwrite=overwrite,
    )


def ensure_campaign(cfg: SynthConfig, path: str | Path) -> tuple[Path, bool]:
    """Generate ``path`` unless it already holds a campaign of exactly these parameters.

    Returns:
        (path, generated): ``generated`` is False when the cached file was reused.
    """
    import h5py

    path = Path(path)
    if path.exists():
        try:
            with h5py.File(path, "r") as f:
                sha = f.attrs.get("synth_config_sha")
            if (sha.decode() if isinstance(sha, bytes) else sha) == cfg.sha():
                return path, False
        except OSError:
            pass  # unreadable cache: regenerate
    t0 = _time.perf_counter()
    generate(cfg, path, overwrite=True)  # a cache of other parameters (callers refuse to replace other files)
    log.info("generated %s in %.1f s", path, _time.perf_counter() - t0)
    return path, True
