"""Thermal camera frames of the synthetic campaign: fractal clouds over a structured sea.

A frame is rendered from the atmospheric state under the aircraft (:class:`FrameState`):

* cloud density is a Gaussian random field with a power-law (fractal) spectrum, FFT
  synthesised; thresholding it at the frame's cloud fraction gives cloud masks with
  fractal, spatially coherent edges;
* the local cloud thickness grows with the density excess over the threshold; liquid
  water path follows the adiabatic ``LWP = 1000 * thickness_km**2`` g/m2 and the infrared
  emissivity ``1 - exp(-0.158 LWP)``, so thin edges and thin-cloud regimes are
  semi-transparent;
* cloud-top brightness temperature is the surface air temperature minus the lapse rate
  times the local cloud-top height, plus a fractal in-cloud variation: height reaches
  the pixels only through this contrast (and through the shadow);
* the sea surface has its own smooth large-scale structure (a steeper spectrum with a
  larger outer scale, plus a gradient) and sits ``sst_air`` kelvin from the air;
* the cloud shadow is the density field displaced by ``h * tan(sza)`` away from the sun,
  cooling the sea surface slightly where the sky is clear;
* the camera applies a per-flight gain and offset and small sensor noise per channel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

LWP_PER_KM2 = 1000.0  # adiabatic liquid water path (g/m2) of a cloud 1 km thick, scaled by thickness**2
EMISSIVITY_PER_LWP = 0.158  # m2/g, infrared absorption of liquid water (Stephens 1978)
SOLAR_EXTINCTION_PER_LWP = 0.1  # m2/g, how much a cloud dims the sun (shadow depth)
T_REF = 280.0  # K, reference of the camera gain
CHANNEL_OFFSET_K = -0.8  # K per channel index (a 3-channel camera's bands differ slightly)


@dataclass
class FrameState:
    """What the camera sees, one value per frame (arrays of equal length)."""

    h: np.ndarray  # cloud base, km
    thick: np.ndarray  # mean cloud thickness, km
    t_air: np.ndarray  # surface air temperature, K
    sst_air: np.ndarray  # sea surface minus air temperature, K
    gamma: np.ndarray  # lapse rate, K/km
    cf: np.ndarray  # cloud fraction
    sza: np.ndarray  # deg
    saa: np.ndarray  # deg
    calib: np.ndarray  # camera offset, K
    gain: np.ndarray  # camera gain

    def __len__(self) -> int:
        return len(self.h)

    def take(self, idx: slice | np.ndarray) -> FrameState:
        return FrameState(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


@lru_cache(maxsize=64)
def spectral_amplitude(shape: tuple[int, int], beta: float, outer_px: float) -> np.ndarray:
    """Fourier amplitude of a unit-variance field with power ``(k^2 + k0^2)^(-beta/2)``.

    ``k0 = 1 / (2 pi outer_px)`` flattens the spectrum beyond the outer scale (about the
    size of the largest coherent structures, in pixels). Normalised for ``ifft2(..., norm="ortho")`` of complex white
    noise, whose real and imaginary parts are then two independent unit-variance fields.
    """
    ky = sfft.fftfreq(shape[0])[:, None]
    kx = sfft.fftfreq(shape[1])[None, :]
    amp = (kx**2 + ky**2 + (2 * np.pi * outer_px) ** -2.0) ** (-beta / 4.0)
    amp[0, 0] = 0.0
    amp *= np.sqrt(amp.size / np.sum(amp**2))
    return amp.astype(np.float32)


def fractal_pair(rng: np.random.Generator, n: int, shape: tuple[int, int], beta: float, outer_px: float) -> np.ndarray:
    """(n, *shape) complex64: real and imaginary parts are independent fractal fields."""
    noise = rng.standard_normal((n, shape[0], 2 * shape[1]), dtype=np.float32).view(np.complex64)
    return sfft.ifft2(noise * spectral_amplitude(shape, beta, outer_px), norm="ortho", axes=(1, 2))


def shadow_shift_px(fs: FrameState, pixel_scale_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) in pixels from a cloud to its shadow: ``h * tan(sza)`` away from the sun
    (image rows grow southward, columns eastward)."""
    d = fs.h * 1000.0 * np.tan(np.deg2rad(fs.sza)) / pixel_scale_m
    away = np.deg2rad(fs.saa + 180.0)
    return -d * np.cos(away), d * np.sin(away)


def _window(field: np.ndarray, y0: float, x0: float, H: int, W: int) -> np.ndarray:
    """Bilinear H x W window of ``field`` whose top-left corner sits at (y0, x0) >= 0."""
    iy, ix = int(np.floor(y0)), int(np.floor(x0))
    fy, fx = y0 - iy, x0 - ix
    a = field[iy : iy + H + 1, ix : ix + W + 1]
    top = (1 - fx) * a[:H, :W] + fx * a[:H, 1:]
    bot = (1 - fx) * a[1:, :W] + fx * a[1:, 1:]
    return (1 - fy) * top + fy * bot


def surface_fields(rng: np.random.Generator, n: int, H: int, W: int, cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two smooth (n, H, W) unit fields, SST anomaly and in-cloud variation, from a steep
    spectrum synthesised on a grid twice as coarse covering twice the frame, so a frame
    sees large-scale gradients and fronts rather than one period of a tile."""
    gh, gw = H // 2 + 2, W // 2 + 2
    pair = fractal_pair(rng, n, (2 * gh, 2 * gw), cfg.sst_beta, cfg.sst_scale_m / (2 * cfg.pixel_scale_m))
    up_y, up_x = _linear_upsampler(gh, H), _linear_upsampler(gw, W)
    return up_y @ pair.real[:, :gh, :gw] @ up_x.T, up_y @ pair.imag[:, :gh, :gw] @ up_x.T


@lru_cache(maxsize=16)
def _linear_upsampler(coarse: int, fine: int) -> np.ndarray:
    """(fine, coarse) matrix of linear interpolation from ``coarse - 1`` cells onto ``fine`` pixels."""
    pos = np.linspace(0, coarse - 2, fine)
    i = np.minimum(pos.astype(int), coarse - 2)
    m = np.zeros((fine, coarse), np.float32)
    m[np.arange(fine), i] = 1 - (pos - i)
    m[np.arange(fine), i + 1] = pos - i
    return m


def render_frames(cfg: Any, fs: FrameState, rng: np.random.Generator) -> np.ndarray:
    """Render frames (n, C, H, W) float32 in kelvin; ``cfg`` is a ``SynthConfig``."""
    n, C, H, W = len(fs), cfg.image_channels, cfg.image_height, cfg.image_width
    dy, dx = shadow_shift_px(fs, cfg.pixel_scale_m)
    pad_y, pad_x = int(np.ceil(np.abs(dy).max())) + 2, int(np.ceil(np.abs(dx).max())) + 2
    shape = (sfft.next_fast_len(H + pad_y), sfft.next_fast_len(W + pad_x))
    pairs = fractal_pair(rng, (n + 1) // 2, shape, cfg.cloud_beta, cfg.cloud_scale_m / cfg.pixel_scale_m)
    clouds = np.concatenate([pairs.real, pairs.imag])  # two independent fields per transform
    sst, incloud = surface_fields(rng, n, H, W, cfg)
    yy, xx = np.linspace(-0.5, 0.5, H, dtype=np.float32)[:, None], np.linspace(-0.5, 0.5, W, dtype=np.float32)[None, :]
    ramps = rng.standard_normal((n, 2), dtype=np.float32) * np.float32(cfg.sst_gradient_k)
    dens, src = np.empty((n, H, W), np.float32), np.empty((n, H, W), np.float32)
    for j in range(n):
        # frame corner (oy, ox); the shadow source window (oy - dy, ox - dx) stays inside the domain
        oy, ox = int(np.ceil(max(dy[j], 0.0))) + 1, int(np.ceil(max(dx[j], 0.0))) + 1
        dens[j] = clouds[j][oy : oy + H, ox : ox + W]
        src[j] = _window(clouds[j], oy - dy[j], ox - dx[j], H, W)
    col = lambda v: np.asarray(v, np.float32)[:, None, None]
    ranked = np.sort(dens.reshape(n, -1), axis=1)  # threshold at the frame's cloud fraction
    thr = col(ranked[np.arange(n), np.clip(np.round((1.0 - fs.cf) * H * W).astype(int), 0, H * W - 1)])
    thick = local_thickness(dens - thr, col(fs.thick))
    eps = 1.0 - np.exp(-EMISSIVITY_PER_LWP * LWP_PER_KM2 * thick**2)
    shade = 1.0 - np.exp(-SOLAR_EXTINCTION_PER_LWP * LWP_PER_KM2 * local_thickness(src - thr, col(fs.thick)) ** 2)
    sea = cfg.sst_std_k * sst + col(ramps[:, 0]) * yy + col(ramps[:, 1]) * xx
    surface = col(fs.t_air + fs.sst_air) + sea - cfg.shadow_contrast_k * shade
    top = col(fs.t_air) - col(fs.gamma) * (col(fs.h) + thick) + cfg.incloud_k * incloud
    bt = (1.0 - eps) * surface + eps * top
    if cfg.psf_px > 0:  # the camera's point spread function (and radiative smoothing)
        bt = ndimage.gaussian_filter(bt, (0, cfg.psf_px, cfg.psf_px), mode="nearest")
    bt = T_REF + col(fs.gain) * (bt - T_REF) + col(fs.calib)
    out = rng.standard_normal((n, C, H, W), dtype=np.float32) * np.float32(cfg.image_noise_k)
    out += bt[:, None] + CHANNEL_OFFSET_K * np.arange(C, dtype=np.float32)[:, None, None]
    return out


def local_thickness(excess: np.ndarray, mean_thick: float) -> np.ndarray:
    """Cloud thickness (km) from the density excess over the cloud threshold: zero at the
    edge, rising over ~1.5 field standard deviations to about 1.3 x the frame's mean."""
    return 1.3 * mean_thick * (1.0 - np.exp(-np.maximum(excess, 0.0) / 1.5))


def image_blocks(cfg: Any, frames: list[FrameState], stream: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, block) of rendered frames, flight after flight; each block has its own
    random stream ``(seed, stream, flight, first frame)``; at most ~2**20 pixels are
    synthesised at once, so large frames stream without holding the set in memory."""
    start = 0
    sub = max(1, 2**20 // (cfg.image_height * cfg.image_width))
    for k, fs in enumerate(frames):
        for b0 in range(0, len(fs), cfg.block):
            b1 = min(len(fs), b0 + cfg.block)
            rng = np.random.default_rng([cfg.seed, stream, k, b0])
            block = np.concatenate(
                [render_frames(cfg, fs.take(slice(i, min(b1, i + sub))), rng) for i in range(b0, b1, sub)]
            )
            if cfg.image_dtype == "uint16":
                block = np.clip(np.round(block * 100.0), 0, 65535)
            yield start + b0, block
        start += len(fs)


def shadow_retrieval(
    cfg: Any, rng: np.random.Generator, h: np.ndarray, sza: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """(n, 3) WP1 shadow features run on the frames: derived height (km), shadow length
    (pixels), detection confidence.

    The detector measures the cloud-to-shadow displacement ``h * tan(sza)`` in its assumed
    7 m pixels, off by the flight's ``scale`` error (pixel scale, geometry), with noise; a
    share of detections match another cloud's shadow. Confidence only loosely tracks the
    error; the least confident ``detection_failure_rate`` get a confidence <= 0.3 and, as
    in the seed's file, a NaN height, whose formula ``H = L * 7 m * tan(sza)`` we keep.
    ``feature_model="easy"`` keeps the previous generator's unbiased retrieval.
    """
    n, px_km = len(h), cfg.wp1_pixel_scale_m / 1000.0
    tan = np.tan(np.deg2rad(sza))
    if cfg.feature_model == "easy":
        failed = rng.random(n) < cfg.detection_failure_rate
        conf = np.where(failed, rng.uniform(0.0, 0.3, n), 0.3 + 0.7 * rng.beta(2.0, 1.5, n))
        length = h * tan / px_km * np.exp(0.12 * (1.5 - conf) * rng.standard_normal(n))
        length = np.where(rng.random(n) < 0.05, rng.uniform(10, 500, n), length)
        height = length * px_km / tan
        return np.stack(
            [np.where(failed | (height > 10), np.nan, height), np.where(failed, np.nan, length), conf], axis=1
        ).astype(np.float32)
    length = h * tan / px_km * scale * np.exp(cfg.shadow_noise * rng.standard_normal(n))
    other = rng.uniform(0.12, 2.5, n) * tan / px_km * np.exp(0.3 * rng.standard_normal(n))  # another cloud's
    length = np.where(rng.random(n) < cfg.shadow_outlier_rate, other, length)
    score = 1.6 - 0.8 * np.abs(np.log(length * px_km / (h * tan))) + 0.9 * rng.standard_normal(n)
    conf = 1.0 / (1.0 + np.exp(-score))
    failed = np.argsort(np.argsort(score)) < round(cfg.detection_failure_rate * n)  # the least confident
    conf = np.where(failed, np.minimum(conf, 0.3) * rng.uniform(0.3, 1.0, n), np.maximum(conf, 0.301))
    height = length * px_km * tan
    bad = (conf <= 0.3) | (sza < 5) | (sza > 85) | (height < 0) | (height > 10)
    return np.stack([np.where(bad, np.nan, height), length, conf], axis=1).astype(np.float32)
