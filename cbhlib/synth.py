"""A physically grounded synthetic ER-2 campaign, calibrated to the real one's difficulty.

One latent atmospheric state per sample drives every modality:

* cloud base ``h``: an AR(1) process along each track (lag-1 ~ 0.9) with the seed's
  per-flight statistics; labels are ``h`` plus lidar noise on the 0.03 km grid;
* the boundary-layer regime sets how the surface parcel's LCL relates to the base
  (coupled: just below it; decoupled: a separate surface layer, below and unrelated);
* ERA5-like features see the state as a reanalysis does (nearest 0.25 deg cell and hour,
  coarse boundary layer, along-track errors, land cells, drifting flight-level biases);
* the WP1 shadow retrieval and the thermal frames come from :mod:`cbhlib.synth_images`.

Flight-level departures live in :class:`FlightRegime`, all multiplied by
``shift_strength`` (0: one physics for every flight). ``feature_model="easy"`` keeps the
previous generator's features. Deterministic for a seed, with separate random streams
per flight and purpose (the unlabelled pool never changes the labelled samples).
``truth/`` keeps the noise-free state. Calibration: ``benchmarks/calibrate_synth.py``.
"""

from __future__ import annotations

import hashlib
import json
import time as _time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy import ndimage, signal

from cbhlib import synth_images
from cbhlib.campaign import CampaignData, FeatureGroup, write_campaign
from cbhlib.synth_images import FrameState, image_blocks, shadow_retrieval

GRID_KM = 0.03  # CPL layer-base resolution
LCL_KM_PER_K = 0.125  # Espy: 125 m per K of dewpoint depression
ERA5_NAMES = ["blh", "lcl", "inversion_height", "moisture_gradient", "stability_index",
              "t2m", "d2m", "sp", "tcwv"]
ERA5_UNITS = ["km", "km", "km", "g/kg/km", "K/km", "K", "K", "Pa", "kg/m2"]
GEOM_NAMES = ["derived_geometric_H", "shadow_length_pixels", "shadow_detection_confidence"]
GEOM_UNITS = ["km", "pixels", "1"]
SPEED_KM_S = 0.2  # ER-2 ground speed
SCALE_HEIGHT_KM = 8.4  # pressure scale height (surface pressure over orography)

# Campaign-wide physics (the same for every flight; shift_strength does not touch it)
DECOUPLING_KM = 0.15  # cloud base above the surface-parcel LCL
DECOUPLED_KM = 0.6  # at this mean depth the sub-cloud layer is fully decoupled from the cloud
DECOUPLED_SLOPE = 0.7  # d(surface LCL)/d(cloud base) in a fully decoupled layer
THICK_KM = 0.25  # mean cloud thickness
SST_AIR_K = 0.8  # sea surface warmer than the air above it
ERA5_DEW_BIAS_K = -2.8  # ERA5 2-m dewpoint too dry offshore
ERA5_BLH_SCALE = 0.95  # ERA5 boundary-layer height underestimates the cloud-topped layer
T_ALONG_TRACK_K = 2.0  # surface air temperature changes along a track (fronts, upwelling)
SLP_ALONG_TRACK_PA = 250.0  # sea-level pressure changes along a track (synoptic gradients)
LAND_WARM_K, LAND_DRY_K = 1.5, 6.0  # a grid cell over land: warmer and much drier air


@dataclass(frozen=True)
class FlightSpec:
    """One flight: the seed's facts (name, campaign, labelled samples, CBH mean / std /
    min / max in km, date) plus the climate and geography it flew in: surface air
    temperature (K), sea-level pressure (Pa), the share of nearest ERA5 grid cells over
    land, solar zenith and azimuth (deg) and the first sample's position (deg)."""

    name: str
    campaign: str
    n: int
    cbh_mean: float
    cbh_std: float
    cbh_min: float
    cbh_max: float
    date: str
    t2m_mean: float
    slp_pa: float
    land_frac: float
    sza_mean: float
    saa_mean: float
    lat0: float
    lon0: float


@dataclass(frozen=True)
class FlightRegime:
    """How one flight departs from the campaign-wide physics; each value is multiplied by
    ``shift_strength`` (0 removes every flight-level shift)."""

    decoupling_km: float = 0.0  # extra cloud base above the surface LCL (decoupled layer)
    dew_bias_k: float = 0.0  # ERA5 2-m dewpoint error: moisture, hence LCL and tcwv
    blh_log_scale: float = 0.0  # log of the ERA5 boundary-layer height scale error
    inversion_bias_km: float = 0.0  # ERA5 inversion height error
    sst_air_k: float = 0.0  # sea surface minus air temperature
    lapse_k_per_km: float = 0.0  # lapse rate between the surface and the cloud top
    thick_km: float = 0.0  # cloud thickness (brightness temperature tracks the top)
    calib_k: float = 0.0  # camera calibration offset
    gain: float = 0.0  # camera gain error
    shadow_log_scale: float = 0.0  # shadow retrieval's pixel-scale / geometry error (log)


SEED_FLIGHTS: tuple[FlightSpec, ...] = (
    FlightSpec("30Oct24", "WHySMIE", 501, 0.893, 0.333, 0.12, 1.95, "2024-10-30", 292.0, 101600, 0.30, 48.5, 170, 34.2, -121.8),
    FlightSpec("10Feb25", "GLOVE", 163, 0.708, 0.142, 0.42, 1.10, "2025-02-10", 281.5, 102100, 0.20, 50.0, 215, 33.1, -119.6),
    FlightSpec("23Oct24", "WHySMIE", 101, 0.705, 0.449, 0.12, 1.68, "2024-10-23", 293.5, 101300, 0.60, 44.0, 140, 35.0, -122.5),
    FlightSpec("12Feb25", "GLOVE", 144, 0.937, 0.483, 0.14, 1.95, "2025-02-12", 277.5, 101000, 0.35, 47.0, 250, 32.6, -118.9),
    FlightSpec("18Feb25", "GLOVE", 24, 0.249, 0.102, 0.12, 0.45, "2025-02-18", 280.5, 101800, 0.10, 42.0, 120, 33.8, -120.2),
)
# Calibrated regimes (benchmarks/calibrate_synth.py): 30Oct24, the largest flight, is a deep
# decoupled layer seen too moist by ERA5; the others differ from it and from one another in
# coupling, ERA5 moisture, BLH and inversion errors and shadow-retrieval scale, so a model
# fitted on four flights is biased on the fifth, as on the real campaign.
SEED_REGIMES: tuple[FlightRegime, ...] = (
    FlightRegime(0.56, 1.25, -0.25, -0.50, -0.8, -0.6, -0.08, 1.5, 0.03, -0.50),
    FlightRegime(0.06, 1.25, 0.10, -0.12, 0.6, 0.5, 0.08, -2.0, -0.04, -0.19),
    FlightRegime(-0.12, 0.31, 0.15, 0.25, 0.3, 0.2, 0.04, 0.8, 0.05, 0.0),
    FlightRegime(-0.15, -0.9, -0.31, -0.38, 0.7, 0.6, 0.10, -1.2, -0.03, -0.38),
    FlightRegime(0.38, -0.38, -0.25, 0.38, 0.4, 0.3, 0.05, 2.5, 0.04, 0.31),
)


@dataclass
class SynthConfig:
    """Parameters of the synthetic campaign (every field changes the output)."""

    seed: int = 0  # master seed; flights and images derive their own streams from it
    flights: list[FlightSpec] = field(default_factory=lambda: list(SEED_FLIGHTS))
    regimes: list[FlightRegime] = field(default_factory=lambda: list(SEED_REGIMES))
    shift_strength: float = 1.0  # scales every flight-level departure (0: none, 2: twice)
    feature_model: str = "calibrated"  # calibrated, or easy (the previous generator's features)
    n_scale: float = 1.0  # multiply every flight's sample count
    unlabelled_factor: float = 5.0  # unlabelled frames per labelled sample (0: no pool)
    image_channels: int = 1  # C
    image_height: int = 64  # H (the 1-D encoder's column length)
    image_width: int = 64  # W
    pixel_scale_m: float = 60.0  # ground size of an image pixel
    cloud_scale_m: float = 1500.0  # outer scale of the fractal cloud field
    cloud_beta: float = 3.8  # 2-D power-spectrum slope of the cloud field (fractal edges: < 4)
    sst_scale_m: float = 2000.0  # outer scale of the sea surface's (and in-cloud) structure
    sst_beta: float = 5.0  # its spectral slope (smooth)
    sst_std_k: float = 0.6  # its amplitude, K
    sst_gradient_k: float = 0.3  # random large-scale SST gradient across a frame
    incloud_k: float = 0.6  # in-cloud brightness variation, K
    lag1: float = 0.95  # AR(1) coefficient of cloud base along the track
    label_noise_km: float = 0.04  # lidar noise on the label, before gridding
    lapse_rate_k_per_km: float = 6.5  # campaign-mean lapse rate
    image_noise_k: float = 0.02  # sensor noise per pixel
    psf_px: float = 2.0  # camera point spread function and radiative smoothing (Gaussian sigma, px)
    shadow_contrast_k: float = 0.6  # cooling of the sea surface under a cloud shadow
    shadow_noise: float = 0.3  # relative noise of a correct shadow length
    shadow_outlier_rate: float = 0.35  # fraction of detections matched to a wrong shadow
    detection_failure_rate: float = 0.13  # fraction of samples with NaN shadow height
    era5_grid_deg: float = 0.25  # ERA5 grid spacing (nearest grid cell)
    era5_smoothing: int = 9  # samples: surface fields' effective resolution (easy: all)
    bl_smoothing: int = 31  # samples: the boundary layer's (coarser) effective resolution
    wp1_pixel_scale_m: float = 7.0  # the shadow detector's m/pixel (WP1 attr)
    image_dtype: str = "float32"  # float32 or uint16 (centikelvin)
    block: int = 64  # images generated and written per block

    def sha(self) -> str:
        """Short hash of every parameter and of the generator's code, stored in the file
        to decide regeneration (a changed generator invalidates cached campaigns)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode() + Path(__file__).read_bytes()
        return hashlib.sha256(blob + Path(synth_images.__file__).read_bytes()).hexdigest()[:16]


PRESETS: dict[str, SynthConfig] = {
    "default": SynthConfig(),
    "easy": SynthConfig(feature_model="easy"),
    "tiny": SynthConfig(n_scale=0.25, image_height=32, image_width=32, pixel_scale_m=120.0, unlabelled_factor=1.0),
    "seed-shape": SynthConfig(image_channels=3, image_height=440, image_width=640, pixel_scale_m=7.0,
                              block=32, unlabelled_factor=1.0),
}


def preset(name: str, **overrides: object) -> SynthConfig:
    """A named preset with optional field overrides."""
    if name not in PRESETS:
        raise KeyError(f"unknown synthetic preset '{name}'; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- state


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Unit-variance AR(1) series of length n."""
    eps = rng.standard_normal(n)
    eps[1:] *= np.sqrt(1 - phi**2)
    return signal.lfilter([1.0], [1.0, -phi], eps)


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(x) < 3:
        return x.copy()
    return ndimage.uniform_filter1d(x, size=min(window, len(x)), mode="nearest")


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
        at = (lambda x: x) if t is None else (lambda x: np.interp(t, self.time, x))  # noqa: E731
        n = len(self.h) if t is None else len(t)
        return FrameState(at(self.h), at(self.thick), at(self.t_sfc), at(self.sst_air), at(self.gamma),
                          at(self.cloud_fraction), at(self.sza), at(self.saa), np.full(n, self.calib_k),
                          np.full(n, 1.0 + self.gain))


def _regime(cfg: SynthConfig, k: int) -> FlightRegime:
    """The flight's departures times ``shift_strength``; ``easy`` draws the previous
    generator's small random ones instead."""
    s = cfg.shift_strength
    if cfg.feature_model == "easy":
        z = np.random.default_rng([cfg.seed, 9, k]).standard_normal(3)
        return FlightRegime(decoupling_km=-0.05 + 0.12 * s * z[0], lapse_k_per_km=0.4 * s * z[1],
                            calib_k=1.0 * s * z[2], sst_air_k=0.2)
    r = cfg.regimes[k]
    return FlightRegime(*(s * getattr(r, f) for f in FlightRegime.__dataclass_fields__))


def _track(rng: np.random.Generator, spec: FlightSpec, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, lat, lon) of the labelled samples: ~13 s apart, flown in straight legs of
    a few hundred km joined by turns."""
    t0 = datetime.fromisoformat(spec.date).replace(hour=18, tzinfo=timezone.utc).timestamp()
    gaps = rng.exponential(12.0, n) + 1.0
    step = gaps * SPEED_KM_S
    dist = np.cumsum(step)
    legs = np.cumsum(rng.exponential(250.0, 64))
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.choice([-1, 1], 65) * rng.uniform(1.6, 3.1, 65))
    hd = heading[np.searchsorted(legs, dist)]
    lat = spec.lat0 + np.cumsum(step * np.cos(hd)) / 111.0
    lon = spec.lon0 + np.cumsum(step * np.sin(hd)) / (111.0 * np.cos(np.deg2rad(spec.lat0)))
    return t0 + np.cumsum(gaps), lat, lon


def boundary_layer(cfg: SynthConfig, rng: np.random.Generator, h: np.ndarray, blh: np.ndarray,
                   decoupling_km: float) -> tuple[np.ndarray, np.ndarray]:
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
    return _FlightState(h, label, thick, t_sfc, td, lcl, blh, inv, mixing, gamma, sst_air, sza, saa, time, lat, lon,
                        cf, reg.calib_k, reg.gain)


# --------------------------------------------------------------------------- ERA5 view


def era5_cells(cfg: SynthConfig, st: _FlightState) -> np.ndarray:
    """Index of the nearest ERA5 grid cell and hour of each sample, in order of first visit
    (a revisited cell in the same hour gets the same values)."""
    key = np.stack([np.floor(st.lat / cfg.era5_grid_deg), np.floor(st.lon / cfg.era5_grid_deg),
                    np.round(st.time / 3600.0)], axis=1)
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


def era5_surface_air(cfg: SynthConfig, rng: np.random.Generator, st: _FlightState, cell: np.ndarray,
                     land: np.ndarray, dew_bias_k: float) -> tuple[np.ndarray, np.ndarray]:
    """(t2m, d2m), K: the cell's surface air, warmer and much drier over land, with a
    campaign-wide and a drifting flight-level moisture bias and along-track errors."""
    t2m = cell_mean(st.t_sfc, cell, cfg.era5_smoothing) + LAND_WARM_K * land + cell_error(rng, cell, 0.8)
    moisture = ERA5_DEW_BIAS_K + drifting_bias(rng, cell, dew_bias_k, 0.6 * cfg.shift_strength)
    d2m = cell_mean(st.td, cell, cfg.era5_smoothing) - LAND_DRY_K * land + moisture + cell_error(rng, cell, 3.0)
    return t2m, d2m


def era5_boundary_layer(cfg: SynthConfig, rng: np.random.Generator, st: _FlightState, cell: np.ndarray,
                        reg: FlightRegime) -> tuple[np.ndarray, np.ndarray]:
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


def era5_surface_pressure(rng: np.random.Generator, cell: np.ndarray, slp_pa: float,
                          land: np.ndarray) -> np.ndarray:
    """sp, Pa: sea-level pressure varying along the track, reduced over a land cell's
    orography (the nearest grid point may sit on the coastal mountains)."""
    orography_km = np.where(land, rng.gamma(2.0, 0.55, cell.max() + 1)[cell], 0.0)
    slp = slp_pa + SLP_ALONG_TRACK_PA * _ar1(rng, len(cell), 0.995)
    return slp * np.exp(-orography_km / SCALE_HEIGHT_KM) + cell_error(rng, cell, 60.0)


def _era5(cfg: SynthConfig, k: int, st: _FlightState, spec: FlightSpec) -> np.ndarray:
    """(n, 9) ERA5-like features: the nearest grid cell and hour of a coarse reanalysis."""
    rng = np.random.default_rng([cfg.seed, 2, k])
    cell = era5_cells(cfg, st)
    land = (rng.random(cell.max() + 1) < spec.land_frac)[cell]
    t2m, d2m = era5_surface_air(cfg, rng, st, cell, land, _regime(cfg, k).dew_bias_k)
    blh, inv = era5_boundary_layer(cfg, rng, st, cell, _regime(cfg, k))
    sp = era5_surface_pressure(rng, cell, spec.slp_pa, land)
    q = specific_humidity_gkg(d2m, sp)
    tcwv = np.maximum(1.85 * q * sp / 1e5 * np.exp(cell_error(rng, cell, 0.12)), 0.5)  # ~2 km moisture scale height
    moist = -0.35 * q / (0.5 + 0.5 * inv) + cell_error(rng, cell, 0.4)  # q falls ~35 % across the layer
    stab = -(cell_mean(st.gamma, cell, cfg.bl_smoothing) - 1.5) + cell_error(rng, cell, 0.6)
    lcl = np.maximum((t2m - d2m) / 8.0, 0.0)
    return np.stack([blh, lcl, inv, moist, stab, t2m, d2m, sp, tcwv], axis=1).astype(np.float32)


def _era5_easy(cfg: SynthConfig, k: int, st: _FlightState, spec: FlightSpec) -> np.ndarray:
    """The previous generator's ERA5 view: the truth smoothed over ``era5_smoothing``
    samples with small flight biases and white noise (the ``easy`` preset)."""
    rng = np.random.default_rng([cfg.seed, 2, k])
    n, s = len(st.h), cfg.shift_strength
    sm = lambda x: _smooth(x, cfg.era5_smoothing)  # noqa: E731
    t2m = sm(st.t_sfc) + s * 0.8 * rng.standard_normal() + 0.3 * rng.standard_normal(n)
    d2m = sm(st.td) - s * (3.5 + 1.2 * rng.standard_normal()) + 0.6 * rng.standard_normal(n)
    lcl = np.maximum((t2m - d2m) / 8.0, 0.0)
    blh = sm(st.blh) * (0.8 + 0.15 * s * rng.standard_normal()) + 0.12 * rng.standard_normal(n)
    inv = sm(st.inv) + s * (0.35 + 0.5 * rng.standard_normal()) + 0.6 * rng.standard_normal(n)
    moist = -(2.0 + 0.8 * sm(st.inv - st.blh) / 0.2) + 0.4 * rng.standard_normal(n)
    stab = -(sm(st.gamma) - 1.5) + 0.3 * s * rng.standard_normal() + 0.6 * rng.standard_normal(n)
    sp = spec.slp_pa * np.exp(-spec.land_frac * 0.9 / SCALE_HEIGHT_KM) + 400 * _ar1(rng, n, 0.98)
    tcwv = np.maximum(13.0 + 0.9 * (d2m - 278.0) + 1.5 * rng.standard_normal(n), 1.0)
    return np.stack([np.maximum(blh, 0.05), lcl, np.maximum(inv, 0.1), moist, stab, t2m, d2m, sp, tcwv],
                    axis=1).astype(np.float32)


def _geometry(cfg: SynthConfig, k: int, st: _FlightState) -> np.ndarray:
    """(n, 3) WP1 shadow features (:func:`cbhlib.synth_images.shadow_retrieval`)."""
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
    cat = lambda attr: np.concatenate([getattr(s, attr) for s in states])  # noqa: E731
    era5_fn = _era5_easy if cfg.feature_model == "easy" else _era5
    era5 = np.concatenate([era5_fn(cfg, k, s, spec) for k, (s, spec) in enumerate(zip(states, cfg.flights))])
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
        attrs={"synth_config": json.dumps(asdict(cfg), sort_keys=True), "synth_config_sha": cfg.sha(),
               "image_scale_m_per_pixel": cfg.pixel_scale_m},
        unlabelled_flight=np.concatenate([np.full(len(t), k) for k, t in enumerate(times)]) if pool else None,
        unlabelled_time_utc=np.concatenate(times) if pool else None,
    )
    return data, states


def generate(cfg: SynthConfig, path: str | Path, with_images: bool = True) -> Path:
    """Generate the campaign (and its unlabelled pool) into ``path``, written atomically."""
    data, states = build_tables(cfg)
    images = unlabelled = None
    if with_images:
        images = image_blocks(cfg, [s.frames() for s in states], 4)
        if data.unlabelled_flight is not None:
            times = [data.unlabelled_time_utc[data.unlabelled_flight == k] for k in range(len(states))]
            unlabelled = image_blocks(cfg, [s.frames(t) for s, t in zip(states, times)], 6)
    else:
        data.unlabelled_flight = data.unlabelled_time_utc = None
    shape = (cfg.image_channels, cfg.image_height, cfg.image_width)
    return write_campaign(path, data, images=images, image_shape=shape, image_dtype=cfg.image_dtype,
                          unlabelled=unlabelled)


def ensure_campaign(cfg: SynthConfig, path: str | Path, log: object = print) -> tuple[Path, bool]:
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
    generate(cfg, path)
    if callable(log):
        log(f"generated {path} in {_time.perf_counter() - t0:.1f} s")
    return path, True
