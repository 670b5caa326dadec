"""A physically grounded synthetic ER-2 campaign: the embedded default data.

One latent atmospheric state per sample drives every modality:

* cloud base ``h`` follows an AR(1) process along each flight track (lag-1 ~ 0.9) scaled
  to the seed's per-flight statistics; labels are ``h`` plus lidar noise, on a 0.03 km grid;
* surface temperature and dewpoint give the lifting condensation level; the cloud base
  sits a regime-dependent offset above it; boundary layer top and inversion sit above
  the cloud top;
* ERA5-like features see that state through coarse along-track smoothing, flight-level
  biases (representativeness error) and noise, so physics does not transfer perfectly;
* shadow geometry measures ``h * tan(sza)`` in pixels with detection noise, outliers
  and ~13 % failed detections (NaN);
* thermal images show a sea surface and clouds whose brightness temperature is the
  surface minus a lapse rate (~6.5 K/km) times the cloud-top height, with soft edges,
  texture, channel offsets, a per-flight calibration offset and cloud shadows displaced
  by ``h * tan(sza)`` away from the sun.

Everything is deterministic for a seed. ``truth/`` keeps the noise-free base height and
the best R2 the label noise allows.
"""

from __future__ import annotations

import hashlib
import json
import time as _time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

from cbhlib.campaign import CampaignData, FeatureGroup, write_campaign

GRID_KM = 0.03  # CPL layer-base resolution
LCL_KM_PER_K = 0.125  # Espy: 125 m per K of dewpoint depression
ERA5_NAMES = ["blh", "lcl", "inversion_height", "moisture_gradient", "stability_index",
              "t2m", "d2m", "sp", "tcwv"]
ERA5_UNITS = ["km", "km", "km", "g/kg/km", "K/km", "K", "K", "Pa", "kg/m2"]
GEOM_NAMES = ["derived_geometric_H", "shadow_length_pixels", "shadow_detection_confidence"]
GEOM_UNITS = ["km", "pixels", "1"]


@dataclass
class FlightSpec:
    """One flight: the seed's facts plus the climate it flew in."""

    name: str  # e.g. 30Oct24
    campaign: str  # WHySMIE or GLOVE
    n: int  # labelled samples
    cbh_mean: float  # km
    cbh_std: float  # km
    cbh_min: float  # km
    cbh_max: float  # km
    date: str  # ISO date of take-off
    t2m_mean: float  # K, surface air temperature
    sp_mean: float  # Pa, ERA5 surface pressure at the nearest grid point
    sza_mean: float  # deg
    saa_mean: float  # deg
    lat0: float  # deg N at the first sample
    lon0: float  # deg E at the first sample


SEED_FLIGHTS: tuple[FlightSpec, ...] = (
    FlightSpec("30Oct24", "WHySMIE", 501, 0.893, 0.333, 0.12, 1.95, "2024-10-30", 292.0, 99500, 48.5, 170, 34.2, -121.8),
    FlightSpec("10Feb25", "GLOVE", 163, 0.708, 0.142, 0.42, 1.10, "2025-02-10", 281.5, 98000, 50.0, 215, 33.1, -119.6),
    FlightSpec("23Oct24", "WHySMIE", 101, 0.705, 0.449, 0.12, 1.68, "2024-10-23", 293.5, 86000, 44.0, 140, 35.0, -122.5),
    FlightSpec("12Feb25", "GLOVE", 144, 0.937, 0.483, 0.14, 1.95, "2025-02-12", 277.5, 92000, 47.0, 250, 32.6, -118.9),
    FlightSpec("18Feb25", "GLOVE", 24, 0.249, 0.102, 0.12, 0.45, "2025-02-18", 280.5, 101000, 42.0, 120, 33.8, -120.2),
)


@dataclass
class SynthConfig:
    """Parameters of the synthetic campaign (every field changes the output)."""

    seed: int = 0  # master seed; flights and images derive their own streams from it
    flights: list[FlightSpec] = field(default_factory=lambda: list(SEED_FLIGHTS))
    n_scale: float = 1.0  # multiply every flight's sample count
    image_channels: int = 1  # C
    image_height: int = 64  # H (the 1-D encoder's column length)
    image_width: int = 64  # W
    pixel_scale_m: float = 60.0  # ground size of an image pixel
    cloud_scale_m: float = 400.0  # correlation length of the cloud field
    lag1: float = 0.95  # AR(1) coefficient of cloud base along the track
    label_noise_km: float = 0.04  # lidar noise on the label, before gridding
    lapse_rate_k_per_km: float = 6.5  # mean in-cloud lapse rate
    image_noise_k: float = 0.25  # sensor noise per pixel
    shadow_contrast_k: float = 1.2  # cooling of the sea surface under a cloud shadow
    shadow_noise: float = 0.12  # relative noise of measured shadow length
    shadow_outlier_rate: float = 0.05  # fraction of detections matched to a wrong shadow
    detection_failure_rate: float = 0.13  # fraction of samples with NaN shadow height
    shift_strength: float = 1.0  # scales flight-level biases (ERA5 and calibration)
    era5_smoothing: int = 9  # along-track running mean (samples) mimicking ERA5's grid
    wp1_pixel_scale_m: float = 7.0  # the shadow detector's m/pixel (WP1 attr)
    image_dtype: str = "float32"  # float32 or uint16 (centikelvin)
    block: int = 64  # images generated and written per block

    def sha(self) -> str:
        """Short hash of every parameter and of the generator's code, stored in the file
        to decide regeneration (a changed generator invalidates cached campaigns)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode() + Path(__file__).read_bytes()
        return hashlib.sha256(blob).hexdigest()[:16]


PRESETS: dict[str, SynthConfig] = {
    "default": SynthConfig(),
    "tiny": SynthConfig(n_scale=0.25, image_height=32, image_width=32, pixel_scale_m=120.0),
    "seed-shape": SynthConfig(image_channels=3, image_height=440, image_width=640,
                              pixel_scale_m=7.0, cloud_scale_m=250.0, block=32),
}


def preset(name: str, **overrides: object) -> SynthConfig:
    """A named preset with optional field overrides."""
    if name not in PRESETS:
        raise KeyError(f"unknown synthetic preset '{name}'; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- state


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Unit-variance AR(1) series of length n."""
    z = np.empty(n)
    z[0] = rng.standard_normal()
    eps = rng.standard_normal(n) * np.sqrt(1 - phi**2)
    for i in range(1, n):
        z[i] = phi * z[i - 1] + eps[i]
    return z


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(x) < 3:
        return x.copy()
    return ndimage.uniform_filter1d(x, size=min(window, len(x)), mode="nearest")


@dataclass
class _FlightState:
    h: np.ndarray  # true cloud base, km
    label: np.ndarray  # gridded noisy lidar base, km
    thick: np.ndarray  # cloud thickness, km
    t_sfc: np.ndarray  # surface air temperature, K
    td: np.ndarray  # dewpoint, K
    lcl: np.ndarray  # true LCL, km
    blh: np.ndarray  # true boundary layer top, km
    inv: np.ndarray  # true inversion height, km
    gamma: np.ndarray  # in-cloud lapse rate, K/km
    sza: np.ndarray
    saa: np.ndarray
    time: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    cloud_fraction: np.ndarray
    calib_k: float  # camera calibration offset of this flight


def _flight_state(cfg: SynthConfig, k: int, spec: FlightSpec) -> _FlightState:
    rng = np.random.default_rng([cfg.seed, 1, k])
    n = max(2, int(round(spec.n * cfg.n_scale)))
    s = cfg.shift_strength
    z = _ar1(rng, n, cfg.lag1)
    z = (z - z.mean()) / (z.std() + 1e-9)
    h = np.clip(spec.cbh_mean + spec.cbh_std * z, spec.cbh_min, spec.cbh_max)
    noisy = h + cfg.label_noise_km * rng.standard_normal(n)
    lo, hi = np.ceil(spec.cbh_min / GRID_KM), np.floor(spec.cbh_max / GRID_KM)
    label = np.clip(np.round(noisy / GRID_KM), lo, hi) * GRID_KM

    thick = np.clip(0.25 + 0.12 * _ar1(rng, n, 0.8), 0.06, 0.6)
    regime = 0.12 * s * rng.standard_normal() + 0.10  # decoupling offset of the flight
    offset = np.clip(regime + 0.08 * _ar1(rng, n, 0.9), -0.05, 0.6)
    lcl = np.clip(h - offset, 0.03, None)
    t_sfc = spec.t2m_mean + 1.0 * _ar1(rng, n, 0.97)
    td = t_sfc - lcl / LCL_KM_PER_K
    blh = h + thick + 0.05 + 0.05 * np.abs(rng.standard_normal(n))
    inv = blh + 0.15 + 0.1 * np.abs(_ar1(rng, n, 0.9))
    gamma = cfg.lapse_rate_k_per_km + 0.4 * s * rng.standard_normal() + 0.4 * _ar1(rng, n, 0.9)

    sza = np.clip(spec.sza_mean + 2.0 * _ar1(rng, n, 0.99), 20, 75)
    saa = (spec.saa_mean + 15.0 * _ar1(rng, n, 0.99)) % 360
    t0 = datetime.fromisoformat(spec.date).replace(hour=18, tzinfo=timezone.utc).timestamp()
    gaps = rng.exponential(12.0, n) + 1.0  # s between labelled frames
    time = t0 + np.cumsum(gaps)
    heading = np.deg2rad(rng.uniform(0, 360))
    dist_km = np.cumsum(gaps) * 0.2  # ER-2 ~ 200 m/s
    lat = spec.lat0 + dist_km * np.cos(heading) / 111.0
    lon = spec.lon0 + dist_km * np.sin(heading) / (111.0 * np.cos(np.deg2rad(spec.lat0)))
    cf = np.clip(0.45 + 0.12 * _ar1(rng, n, 0.9), 0.15, 0.8)
    calib = 1.0 * s * rng.standard_normal()
    return _FlightState(h, label, thick, t_sfc, td, lcl, blh, inv, gamma, sza, saa, time,
                        lat, lon, cf, calib)


def _era5(cfg: SynthConfig, k: int, st: _FlightState, spec: FlightSpec) -> np.ndarray:
    """(n, 9) ERA5-like features: the true state seen coarsely, with flight-level bias."""
    rng = np.random.default_rng([cfg.seed, 2, k])
    n, s, w = len(st.h), cfg.shift_strength, cfg.era5_smoothing
    sm = lambda x: _smooth(x, w)  # noqa: E731
    t2m = sm(st.t_sfc) + s * 0.8 * rng.standard_normal() + 0.3 * rng.standard_normal(n)
    d2m = sm(st.td) - s * (3.5 + 1.2 * rng.standard_normal()) + 0.6 * rng.standard_normal(n)
    lcl = np.maximum((t2m - d2m) / 8.0, 0.0)
    blh = sm(st.blh) * (0.8 + 0.15 * s * rng.standard_normal()) + 0.12 * rng.standard_normal(n)
    blh = np.maximum(blh, 0.05)
    inv = sm(st.inv) + s * (0.35 + 0.5 * rng.standard_normal()) + 0.6 * rng.standard_normal(n)
    inv = np.maximum(inv, 0.1)
    moist = -(2.0 + 0.8 * sm(st.inv - st.blh) / 0.2) + 0.4 * rng.standard_normal(n)
    stab = -(sm(st.gamma) - 1.5) + 0.3 * s * rng.standard_normal() + 0.6 * rng.standard_normal(n)
    sp = spec.sp_mean + 400 * _ar1(rng, n, 0.98) + 150 * rng.standard_normal(n)
    tcwv = np.maximum(13.0 + 0.9 * (d2m - 278.0) + 1.5 * rng.standard_normal(n), 1.0)
    return np.stack([blh, lcl, inv, moist, stab, t2m, d2m, sp, tcwv], axis=1).astype(np.float32)


def _geometry(cfg: SynthConfig, k: int, st: _FlightState) -> np.ndarray:
    """(n, 3) shadow features: derived height, shadow length in pixels, confidence."""
    rng = np.random.default_rng([cfg.seed, 3, k])
    n = len(st.h)
    failed = rng.random(n) < cfg.detection_failure_rate
    conf = np.where(failed, rng.uniform(0.0, 0.3, n), 0.3 + 0.7 * rng.beta(2.0, 1.5, n))
    tan = np.tan(np.deg2rad(st.sza))
    true_px = st.h * 1000.0 * tan / cfg.wp1_pixel_scale_m
    rel = cfg.shadow_noise * (1.5 - conf) * rng.standard_normal(n)
    length = true_px * np.exp(rel)
    wrong = rng.random(n) < cfg.shadow_outlier_rate
    length = np.where(wrong, rng.uniform(10, 500, n), length)
    height = length * cfg.wp1_pixel_scale_m / tan / 1000.0
    bad = failed | (height < 0) | (height > 10)
    height = np.where(bad, np.nan, height)
    length = np.where(failed, np.nan, length)
    return np.stack([height, length, conf], axis=1).astype(np.float32)


# --------------------------------------------------------------------------- images


def _render(cfg: SynthConfig, st: _FlightState, i: int, rng: np.random.Generator) -> np.ndarray:
    """One thermal image (C, H, W) in kelvin."""
    H, W, C = cfg.image_height, cfg.image_width, cfg.image_channels
    px_km = cfg.pixel_scale_m / 1000.0
    shift_px = st.h[i] * np.tan(np.deg2rad(st.sza[i])) / px_km
    az = np.deg2rad(st.saa[i] + 180.0)  # shadows fall away from the sun
    dy, dx = -shift_px * np.cos(az), shift_px * np.sin(az)  # image up = north
    pad = int(np.ceil(shift_px)) + 2
    g = max(1.0, cfg.cloud_scale_m / cfg.pixel_scale_m / 2.0)  # low-res grid step, px
    shape_lr = (int(np.ceil((H + 2 * pad) / g)) + 2, int(np.ceil((W + 2 * pad) / g)) + 2)
    field_lr = ndimage.gaussian_filter(rng.standard_normal(shape_lr), sigma=1.2, mode="wrap")
    field_lr /= field_lr.std() + 1e-9
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)

    def sample(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(field_lr, [(y + pad) / g, (x + pad) / g], order=1, mode="nearest")

    dens = sample(yy, xx)
    dens_src = sample(yy - dy, xx - dx)
    thr = float(ndtri(1.0 - st.cloud_fraction[i]))
    edge = 0.35
    emis = np.clip((dens - thr) / edge, 0.0, 1.0)
    shade = np.clip((dens_src - thr) / edge, 0.0, 1.0) * (1.0 - emis)

    t_sfc = st.t_sfc[i] + 1.0  # skin temperature slightly above air temperature
    gradient = 0.3 * ((yy / H - 0.5) * rng.standard_normal() + (xx / W - 0.5) * rng.standard_normal())
    sea = t_sfc + gradient
    texture = ndimage.gaussian_filter(rng.standard_normal((H, W)), 1.5) * 2.0
    top = st.h[i] + st.thick[i]
    t_top = t_sfc - st.gamma[i] * top + texture + 0.6 * (dens - thr)
    bt = sea * (1 - emis) + t_top * emis - cfg.shadow_contrast_k * shade + st.calib_k
    out = np.empty((C, H, W), np.float32)
    for c in range(C):
        out[c] = bt - 0.8 * c + cfg.image_noise_k * rng.standard_normal((H, W))
    return out


def _image_blocks(cfg: SynthConfig, states: list[_FlightState]) -> Iterator[tuple[int, np.ndarray]]:
    start = 0
    C, H, W = cfg.image_channels, cfg.image_height, cfg.image_width
    for k, st in enumerate(states):
        n = len(st.h)
        for b0 in range(0, n, cfg.block):
            b1 = min(n, b0 + cfg.block)
            block = np.empty((b1 - b0, C, H, W), np.float32)
            for j, i in enumerate(range(b0, b1)):
                block[j] = _render(cfg, st, i, np.random.default_rng([cfg.seed, 4, k, i]))
            if cfg.image_dtype == "uint16":
                block = np.clip(np.round(block * 100.0), 0, 65535)
            yield start + b0, block
        start += n


# --------------------------------------------------------------------------- assembly


def best_r2(label: np.ndarray, truth: np.ndarray) -> float:
    """R2 of the noise-free truth as a predictor of the noisy label: the ceiling."""
    ss_res = float(np.sum((label - truth) ** 2))
    ss_tot = float(np.sum((label - label.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def build_tables(cfg: SynthConfig) -> tuple[CampaignData, list[_FlightState]]:
    """Labels, metadata, features and truth of the campaign (no images)."""
    states = [_flight_state(cfg, k, spec) for k, spec in enumerate(cfg.flights)]
    cat = lambda attr: np.concatenate([getattr(s, attr) for s in states])  # noqa: E731
    era5 = np.concatenate([_era5(cfg, k, s, spec) for k, (s, spec) in enumerate(zip(states, cfg.flights))])
    geom = np.concatenate([_geometry(cfg, k, s) for k, s in enumerate(states)])
    flight = np.concatenate([np.full(len(s.h), k) for k, s in enumerate(states)])
    label, h = cat("label"), cat("h")
    per_flight = np.array([best_r2(s.label, s.h) for s in states])
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
            "best_r2_per_flight": per_flight,
        },
        truth_attrs={"best_r2": best_r2(label, h), "label_noise_km": cfg.label_noise_km},
        attrs={"synth_config": json.dumps(asdict(cfg), sort_keys=True), "synth_config_sha": cfg.sha(),
               "image_scale_m_per_pixel": cfg.pixel_scale_m},
    )
    return data, states


def generate(cfg: SynthConfig, path: str | Path, with_images: bool = True) -> Path:
    """Generate the campaign into ``path`` (written atomically).

    Returns:
        The path written.
    """
    data, states = build_tables(cfg)
    images = _image_blocks(cfg, states) if with_images else None
    shape = (cfg.image_channels, cfg.image_height, cfg.image_width)
    return write_campaign(path, data, images=images, image_shape=shape, image_dtype=cfg.image_dtype)


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
