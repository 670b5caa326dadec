"""What ``predict`` checks before it applies a run's heads to a campaign, and what training records for it.

Training records a profile of its campaign in every head checkpoint (``training_campaign``:
feature units, image shape and dtype; see :func:`campaign_profile`). Before predicting,
a new campaign is compared with it and with the statistics the head was fitted on (its
feature scalers, its encoder's pixel statistics): a shape, dtype, channel count or
units mismatch, or values many training standard deviations away, is refused with one
line (``allow_shift`` turns only the statistical refusals into warnings). Degrees C
and K, hPa and Pa, km and m are converted where the units are recorded, with a warning.
Checkpoints must lie inside the run folder and match the sha256 recorded for them.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cbhlib.data.campaign import Campaign
from cbhlib.errors import CbhError, CheckpointError
from cbhlib.store.checkpoints import weights_sha256
from cbhlib.store.units import file_sha256

log = logging.getLogger(__name__)

PROFILE_VERSION = 1
CBH_SANE_KM = (-1.0, 25.0)  # a predicted cloud base outside this range is not physical
SHIFT_SD = 10.0  # a feature median or pixel mean this many training sds away is refused
MISSING_SHARE = 0.5  # more of a feature missing than this is said
SPREAD_RATIO = 10.0  # a spread this many times larger (or smaller) than in training is refused
PIXEL_BUDGET = 2**24  # pixel values read to compare image statistics (64 MB of float32)

_TEMPERATURE = dict.fromkeys(("k", "kelvin"), 0.0)  # kelvin = value + offset
_TEMPERATURE.update(dict.fromkeys(("degc", "c", "°c", "celsius", "deg c", "degrees_c", "degrees c"), 273.15))
_TEMPERATURE.update(dict.fromkeys(("degree_celsius", "degrees_celsius"), 273.15))
_FACTORS = {"pa": ("pressure", 1.0), "hpa": ("pressure", 100.0), "kpa": ("pressure", 1000.0)}
_FACTORS.update({"m": ("length", 1.0), "km": ("length", 1000.0)})


def campaign_profile(camp: Campaign) -> dict[str, Any]:
    """What a head's checkpoint records about the campaign it was trained on (plain values, no pixels read)."""
    return {
        "version": PROFILE_VERSION,
        "campaign_sha256": camp.fingerprint(),
        "features": {
            f"{g}/{n}": {"units": str(u)}
            for g, fg in camp.features.items()
            for n, u in zip(fg.names, fg.units, strict=True)
        },
        "images": (
            {"shape": [int(s) for s in camp.image_shape], "dtype": str(np.dtype(camp.image_dtype))}
            if camp.has_images
            else None
        ),
    }


def read_profile(raw: Any, path: object) -> dict[str, Any] | None:
    """The training-campaign profile of a checkpoint; None for checkpoints written before profiles."""
    if raw is None:
        return None
    try:
        prof = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        prof = None
    if (
        not isinstance(prof, dict)
        or prof.get("version") != PROFILE_VERSION
        or not isinstance(prof.get("features"), dict)
    ):
        raise CheckpointError(
            f"{path}: training_campaign: expected a version-{PROFILE_VERSION} profile; found {raw!r:.80}"
        )
    return prof


def inside_run(root: Path, rel: object, source: object, what: str) -> Path:
    """``root / rel`` if it is a file inside the run folder ``root`` (links resolved), else refuse."""
    if not isinstance(rel, str) or not rel:
        raise CheckpointError(f"{source}: {what}: expected a path inside the run folder; found {rel!r}")
    path = root / rel
    base = root.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise CheckpointError(
            f"{source}: {what}: expected a file inside the run folder {root}; found {rel!r}, which resolves to "
            f"{resolved} outside it"
        )
    if not resolved.is_file():
        raise CheckpointError(f"{source}: {what}: expected a file inside the run folder; found no file at {path}")
    return path


def verify_sha(path: Path, expected: object, source: object) -> None:
    """Refuse a file whose sha256 differs from the one recorded in ``source``."""
    if not isinstance(expected, str) or len(expected) != 64:
        raise CheckpointError(f"{source}: expected a recorded sha256 for {path}; found {expected!r}")
    got = file_sha256(path)
    if got != expected:
        raise CheckpointError(
            f"{path}: expected sha256 {expected[:16]}... (recorded in {source}); found {got[:16]}...: "
            "the file was replaced or altered after training"
        )


def verify_weights(path: Path, expected: object, source: object) -> None:
    """Refuse an encoder whose weights differ from those recorded in ``source`` (a head's checkpoint)."""
    if not isinstance(expected, str) or len(expected) != 64:
        raise CheckpointError(f"{source}: expected a recorded weights sha256 for {path}; found {expected!r}")
    got = weights_sha256(path)
    if got != expected:
        raise CheckpointError(
            f"{path}: expected encoder weights with sha256 {expected[:16]}... (recorded in {source}); found "
            f"{got[:16]}...: the encoder was replaced or retrained after this head was trained"
        )


def _norm(units: str) -> str:
    return units.strip().lower().replace("deg_c", "degc").replace("degree_c", "degc")


def unit_conversion(want: str, got: str) -> tuple[float, float] | None:
    """``(scale, offset)`` with ``want_value = got_value * scale + offset``, or None if not a safe conversion."""
    a, b = _norm(want), _norm(got)
    if a == b:
        return 1.0, 0.0
    if a in _TEMPERATURE and b in _TEMPERATURE:
        return 1.0, _TEMPERATURE[b] - _TEMPERATURE[a]
    if a in _FACTORS and b in _FACTORS and _FACTORS[a][0] == _FACTORS[b][0]:
        return _FACTORS[b][1] / _FACTORS[a][1], 0.0
    return None


def campaign_units(camp: Campaign) -> dict[str, str]:
    return {f"{g}/{n}": str(u) for g, fg in camp.features.items() for n, u in zip(fg.names, fg.units, strict=True)}


def match_units(
    X: np.ndarray, names: list[str], prof: dict[str, Any] | None, camp: Campaign, what: str
) -> tuple[np.ndarray, list[str]]:
    """Convert columns whose recorded units differ safely from training's; refuse other unit mismatches.

    Returns:
        (X, notes): converted copy and one note per conversion.
    """
    if prof is None:
        return X, []
    have = campaign_units(camp)
    X, notes = X.astype(np.float64, copy=True), []
    for j, name in enumerate(names):
        want = str(prof["features"].get(name, {}).get("units", "") or "")
        got = have.get(name, "")
        if not want or not got or _norm(want) == _norm(got):
            continue
        conv = unit_conversion(want, got)
        if conv is None:
            raise CbhError(
                f"{camp.path}: features/{name}: expected units '{want}' (as {what} was trained on); found '{got}', "
                "which cannot be converted safely: convert it first"
            )
        X[:, j] = X[:, j] * conv[0] + conv[1]
        notes.append(
            f"{camp.path}: features/{name}: converted from '{got}' to '{want}' (the units {what} was trained on)"
        )
    return X, notes


def check_feature_stats(
    X: np.ndarray,
    names: list[str],
    mean: np.ndarray,
    scale: np.ndarray,
    camp: Campaign,
    what: str,
    allow_shift: bool,
    said: set[str] | None = None,
) -> None:
    """Refuse features whose median lies ``SHIFT_SD`` training sds from the training mean, or whose spread
    is ``SPREAD_RATIO`` times the training spread (scaled values, other units)."""
    for j, name in enumerate(names):
        _say_missing(X[:, j], name, camp, said)
        col = X[:, j][np.isfinite(X[:, j])]
        if len(col) == 0:
            continue
        sd = float(scale[j]) if math.isfinite(float(scale[j])) and float(scale[j]) > 0 else 1.0
        mu, med = float(mean[j]), float(np.median(col))
        z = abs(med - mu) / sd
        ratio = float(col.std()) / sd if len(col) >= 10 else 1.0
        if z <= SHIFT_SD and ratio <= SPREAD_RATIO:
            continue
        hint = ""
        if abs(med + 273.15 - mu) <= 3 * sd:
            hint = " (it looks like degrees C where training had K: record the units or add 273.15)"
        elif abs(med - 273.15 - mu) <= 3 * sd:
            hint = " (it looks like K where training had degrees C: record the units or subtract 273.15)"
        found = f"median {med:.4g}, {z:.0f} sds away" if z > SHIFT_SD else f"a spread {ratio:.0f}x the training one"
        msg = (
            f"{camp.path}: features/{name}: expected values like those {what} was trained on (mean {mu:.4g}, "
            f"sd {sd:.3g}); found {found}{hint}"
        )
        if not allow_shift:
            raise CbhError(msg + "; check units and scaling (--allow-shift predicts anyway)")
        if said is None or f"{camp.path}: features/{name}" not in said:
            log.warning("%s; predicting anyway (--allow-shift)", msg)
            if said is not None:
                said.add(f"{camp.path}: features/{name}")  # once per feature, not once per head


def _say_missing(x: np.ndarray, name: str, camp: Campaign, said: set[str] | None) -> None:
    """Warn (once per feature) where most of a feature is missing, or all of it on a flight: those
    samples get the training median, and their predictions rest on the other inputs."""
    miss = ~np.isfinite(x)
    flights = [camp.flight_names[k] for k in np.unique(camp.flight) if miss[camp.flight == k].all()]
    key = f"{camp.path}: features/{name} missing"
    if (miss.mean() <= MISSING_SHARE and not flights) or (said is not None and key in said):
        return
    where = f"; every sample of flight(s) {', '.join(flights)}" if flights else ""
    log.warning(
        "%s: features/%s: %d of %d samples missing%s: predicted with the training median in its place",
        camp.path, name, int(miss.sum()), len(x), where,
    )  # fmt: skip
    if said is not None:
        said.add(key)


def check_image_format(
    camp: Campaign, prof: dict[str, Any] | None, geometry: tuple[int, ...] | None, what: str
) -> None:
    """Refuse images of another shape, channel count or dtype than training's (nothing is cropped or cast)."""
    if not camp.has_images:
        raise CbhError(f"{camp.path}: images: expected images ({what} needs them); found none")
    found = tuple(int(s) for s in camp.image_shape)
    images = (prof or {}).get("images") or {}
    want = tuple(geometry) if geometry is not None else tuple(images.get("shape") or ()) or None
    if want is not None and found != want:
        if found == (*want[1:], want[0]):  # stored channels-last, not another resolution
            fix = "store them channels first (N, C, H, W), e.g. np.moveaxis(images, -1, 1)"
        elif sorted(found) == sorted(want):
            fix = "the same sizes with the axes in another order: store them as channels x height x width"
        else:
            fix = "resample them first (predict never crops or pads)"
        raise CbhError(
            f"{camp.path}: images: expected {'x'.join(map(str, want))} (channels x height x width, as {what} was "
            f"trained on); found {'x'.join(map(str, found))}: {fix}"
        )
    dtype, got = images.get("dtype"), str(np.dtype(camp.image_dtype))
    if dtype and dtype != got:
        raise CbhError(
            f"{camp.path}: images: expected {dtype} pixels (as {what} was trained on); found {got}: "
            "quantised or rescaled pixels change the predictions; store them as training did"
        )


def sample_images(camp: Campaign) -> np.ndarray:
    """A bounded, evenly spaced sample of the campaign's images (at most ``PIXEL_BUDGET`` values)."""
    n_max = max(1, min(256, PIXEL_BUDGET // max(1, int(np.prod(camp.image_shape)))))
    idx = np.unique(np.linspace(0, camp.n_samples - 1, min(camp.n_samples, n_max)).astype(np.int64))
    return camp.images(idx)


@torch.no_grad()
def check_pixel_stats(camp: Campaign, encoder: Any, what: str, allow_shift: bool) -> None:
    """Compare the pixels as the encoder sees them (after its centring) with the statistics it was fitted on."""
    x = encoder.centre(torch.from_numpy(sample_images(camp))).double()
    mean, sd = x.mean(dim=(0, 2, 3)), torch.std(x, dim=(0, 2, 3), correction=0)
    pm, ps = encoder.pixel_mean.double(), encoder.pixel_std.double().clamp_min(1e-6)
    for c in range(len(pm)):
        z, ratio = float((mean[c] - pm[c]).abs() / ps[c]), float(sd[c] / ps[c])
        if z <= SHIFT_SD and 1 / SPREAD_RATIO <= ratio <= SPREAD_RATIO:
            continue
        msg = (
            f"{camp.path}: images: channel {c}: expected pixels like those {what} was trained on "
            f"(mean {float(pm[c]):.4g}, sd {float(ps[c]):.3g} after the encoder's centring); "
            f"found mean {float(mean[c]):.4g}, sd {float(sd[c]):.3g}"
        )
        if not allow_shift:
            raise CbhError(msg + ": scaled pixels or other units? (--allow-shift predicts anyway)")
        log.warning("%s; predicting anyway (--allow-shift)", msg)


def check_predictions(pred_km: np.ndarray, source: object, what: str) -> None:
    """Refuse non-finite or physically impossible predicted cloud base heights."""
    bad = ~np.isfinite(pred_km)
    if bad.any():
        raise CbhError(
            f"{source}: {what} predicted a non-finite CBH for {int(bad.sum())} of {len(pred_km)} samples "
            f"(first: sample {int(np.flatnonzero(bad)[0])}); expected finite values: the head or its inputs are broken"
        )
    lo, hi = CBH_SANE_KM
    out = (pred_km < lo) | (pred_km > hi)
    if out.any():
        i = int(np.flatnonzero(out)[np.argmax(np.abs(pred_km[out]))])
        raise CbhError(
            f"{source}: {what} predicted a CBH of {pred_km[i]:.4g} km for sample {i} ({int(out.sum())} samples out of "
            f"range); expected {lo:g} to {hi:g} km (a physical cloud base): the head or its inputs are broken"
        )
