"""Settings of the synthetic campaign: flights, boundary-layer regimes, the generator's knobs and its presets."""

from __future__ import annotations

import difflib
import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cbhlib.errors import ParamsError
from cbhlib.fields import check_constraints, coerce
from cbhlib.sources import synth_era5, synth_images


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
    labels: bool = True  # false: no samples/cbh_km, a new flight without lidar (inputs only, for cbh predict)
    block: int = 64  # images generated and written per block

    def sha(self) -> str:
        """Short hash of every parameter and of the generator's code, stored in the file
        to decide regeneration (a changed generator invalidates cached campaigns)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        for module in (__file__, synth_images.__file__, synth_era5.__file__):
            blob += Path(module).read_bytes()
        return hashlib.sha256(blob).hexdigest()[:16]


SEED_FLIGHTS: tuple[FlightSpec, ...] = (
    FlightSpec(
        "30Oct24", "WHySMIE", 501, 0.893, 0.333, 0.12, 1.95, "2024-10-30", 292.0, 101600, 0.30, 48.5, 170, 34.2, -121.8
    ),
    FlightSpec(
        "10Feb25", "GLOVE", 163, 0.708, 0.142, 0.42, 1.10, "2025-02-10", 281.5, 102100, 0.20, 50.0, 215, 33.1, -119.6
    ),
    FlightSpec(
        "23Oct24", "WHySMIE", 101, 0.705, 0.449, 0.12, 1.68, "2024-10-23", 293.5, 101300, 0.60, 44.0, 140, 35.0, -122.5
    ),
    FlightSpec(
        "12Feb25", "GLOVE", 144, 0.937, 0.483, 0.14, 1.95, "2025-02-12", 277.5, 101000, 0.35, 47.0, 250, 32.6, -118.9
    ),
    FlightSpec(
        "18Feb25", "GLOVE", 24, 0.249, 0.102, 0.12, 0.45, "2025-02-18", 280.5, 101800, 0.10, 42.0, 120, 33.8, -120.2
    ),
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


PRESETS: dict[str, SynthConfig] = {
    "default": SynthConfig(),
    "easy": SynthConfig(feature_model="easy"),
    "tiny": SynthConfig(n_scale=0.25, image_height=32, image_width=32, pixel_scale_m=120.0, unlabelled_factor=1.0),
    "seed-shape": SynthConfig(
        image_channels=3, image_height=440, image_width=640, pixel_scale_m=7.0, block=32, unlabelled_factor=1.0
    ),
}


def preset(name: str, **overrides: object) -> SynthConfig:
    """A named preset with optional field overrides."""
    if name not in PRESETS:
        raise KeyError(f"unknown synthetic preset '{name}'; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)  # type: ignore[arg-type]


# what a user may set on a preset (`cbh generate --set`, a pipeline's synthetic_set, a sweep's
# synthetic.* grid): (min, max) or choices; flights and regimes are code, not settings
LIMITS: dict[str, dict[str, Any]] = {
    "seed": {"min": 0, "max": 2**32 - 1},
    "shift_strength": {"min": 0, "max": 10},
    "feature_model": {"choices": ("calibrated", "easy")},
    "n_scale": {"above": 0, "max": 20},
    "unlabelled_factor": {"min": 0, "max": 50},
    "image_channels": {"min": 1, "max": 16},
    "image_height": {"min": 8, "max": 4096},
    "image_width": {"min": 8, "max": 4096},
    "lag1": {"min": 0, "max": 0.999},
    "image_dtype": {"choices": ("float32", "uint16")},
    "block": {"min": 1, "max": 4096},
    "era5_smoothing": {"min": 1, "max": 10_000},
    "bl_smoothing": {"min": 1, "max": 10_000},
    "shadow_outlier_rate": {"min": 0, "max": 1},
    "detection_failure_rate": {"min": 0, "max": 1},
}


def checked_overrides(overrides: Mapping[str, Any], source: object, base: SynthConfig | None = None) -> dict[str, Any]:
    """Type- and range-check overrides of a preset ``base`` (one-line ``ParamsError`` naming the key)."""
    hints = typing.get_type_hints(SynthConfig)
    known = [k for k in hints if k not in ("flights", "regimes")]
    out = {}
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            found = f"an unknown key (did you mean '{close[0]}'?)" if close else "an unknown key"
            raise ParamsError(source, str(key), f"a generator setting ({', '.join(known)})", found)
        value = coerce(source, key, value, hints[key])
        meta = LIMITS.get(key, {"min": 0, "max": 1e6} if hints[key] in (int, float) else {})
        check_constraints(source, key, value, meta)
        out[key] = value
    c = replace(base or SynthConfig(), **out)
    n = c.n_scale * 933 * (1 + c.unlabelled_factor) * c.image_channels * c.image_height * c.image_width
    if n * 4 > 64 * 2**30:
        raise ParamsError(source, "n_scale", "a campaign under 64 GiB of pixels", f"about {n * 4 / 2**30:.0f} GiB")
    return out
