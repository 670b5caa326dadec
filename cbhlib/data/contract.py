"""The rules of the campaign file contract, checked on every open.

Layout (N samples, F flights, M unlabelled frames; README "The campaign file contract"):

    attrs format="cbh-campaign", format_version=1, source
    flights/name            str (F,), unique, F >= 2 (F >= 1 without labels)
    flights/campaign        str (F,)            optional
    samples/flight          int (N,)            index into flights/name, >= 2 per flight (>= 1 without labels)
    samples/cbh_km          float32 (N,)        lidar cloud base, finite, 0-20 km; absent: inputs only
    samples/time_utc        float64 (N,)        POSIX seconds, increasing within a flight
    samples/sza_deg|saa_deg float32 (N,)        optional: solar zenith 0-180 / azimuth, degrees
    samples/lat|lon         float32 (N,)        optional
    features/<g>/values     float32 (N, K)      NaN allowed
    features/<g>/names      str (K,)            attr units (K,) optional
    images                  float32|uint16 (N, C, H, W), optional, one sample per chunk
    unlabelled/images       float32|uint16 (M, C, H, W), optional, same C, H, W as images
    unlabelled/flight       int (M,)            index into flights/name
    unlabelled/time_utc     float64 (M,)        optional
    truth/...               optional, synthetic ground truth

Each violation raises one :class:`CampaignFormatError` (file, path, expected, found).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from cbhlib.data.h5safe import check_declared_size, check_self_contained, read_bounded
from cbhlib.errors import CampaignFormatError

FORMAT = "cbh-campaign"
FORMAT_VERSION = 1
REQUIRED_SAMPLES = ("flight", "time_utc")
FILL_VALUES = np.array([-9999.0, -999.0, -99999.0], np.float32)  # and |v| >= 1e30 (netCDF's 9.97e36): not data
POSIX_SECONDS_MIN = 315_532_800.0  # 1980-01-01: smaller "seconds" are seconds of the day, hours or spreadsheet days
POSIX_SECONDS_MAX = 1e11  # year 5138: larger "seconds" are milliseconds, microseconds or nanoseconds
PLAUSIBLE_POSIX_S = 1e10  # year 2286: a too-large time divided into this range names its unit
UNITS = ((1e3, "milliseconds"), (1e6, "microseconds"), (1e9, "nanoseconds"))
OPTIONAL_SAMPLES = ("cbh_km", "sza_deg", "saa_deg", "lat", "lon")
CBH_RANGE_KM = (0.0, 20.0)
IMAGE_DTYPES = (np.dtype("float32"), np.dtype("uint16"))
MAX_IMAGE_SIDE = 16384


def fill_values(values: np.ndarray) -> np.ndarray:
    """Where ``values`` holds a fill value (:data:`FILL_VALUES`, or |v| >= 1e30): a boolean mask, same shape."""
    return np.isin(values, FILL_VALUES) | (np.abs(values) >= 1e30)


def _fail(file: object, where: str, expected: str, found: str) -> CampaignFormatError:
    return CampaignFormatError(file, where, expected, found)


@dataclass
class FeatureGroup:
    """Physical features of one group (``era5``, ``geometric``...).

    Attributes:
        values: (N, K) float32, NaN where missing.
        names: K feature names.
        units: K unit strings ("" where unknown).
    """

    values: np.ndarray
    names: list[str]
    units: list[str]


@dataclass
class Tables:
    """Small arrays read and validated on open."""

    flight_names: list[str]
    flight_campaigns: list[str] | None
    samples: dict[str, np.ndarray]
    features: dict[str, FeatureGroup]
    image_shape: tuple[int, int, int] | None
    image_dtype: np.dtype | None
    unlabelled_flight: np.ndarray | None
    unlabelled_time: np.ndarray | None
    source: str
    attrs: dict[str, object]


def _dataset(f: h5py.File, path: Path, key: str, required: bool = True) -> h5py.Dataset | None:
    if key not in f:
        if required:
            parent = key.rsplit("/", 1)[0] if "/" in key else "/"
            what = "missing" if parent == "/" or parent in f else f"missing (no group '{parent}')"
            group = f[parent] if parent in f and isinstance(f[parent], h5py.Group) else None
            close = difflib.get_close_matches(key.rsplit("/", 1)[-1], list(group.keys()), n=1) if group else []
            if close:  # a renamed field: say what the file has instead
                what += f"; the file has '{parent.strip('/') + '/' if parent != '/' else ''}{close[0]}' (rename it)"
            raise _fail(path, key, "a dataset", what)
        return None
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise _fail(path, key, "a dataset", f"a {type(obj).__name__}")
    return obj


def _check_shape(
    path: Path, key: str, ds: h5py.Dataset, rank: int, n: int | None = None, like: str = "samples/flight"
) -> None:
    if ds.ndim != rank:
        raise _fail(path, key, f"rank {rank}", f"rank {ds.ndim} with shape {ds.shape}")
    if n is not None and ds.shape[0] != n:
        raise _fail(path, key, f"length {n} (as {like})", f"length {ds.shape[0]} (length mismatch)")


def _check_kind(path: Path, key: str, ds: h5py.Dataset, kinds: str, what: str) -> None:
    if ds.dtype.kind not in kinds:
        raise _fail(path, key, what, f"dtype {ds.dtype}")


def _read_strings(path: Path, key: str, ds: h5py.Dataset) -> list[str]:
    if ds.dtype.kind not in "SOU" and h5py.check_string_dtype(ds.dtype) is None:
        raise _fail(path, key, "strings", f"dtype {ds.dtype}")
    values = read_bounded(ds, path, key)
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]


def _attr_str(value: object) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_tables(f: h5py.File, path: Path) -> Tables:
    """Validate every rule except the pixel values and return the small arrays."""
    check_self_contained(f, path)
    fmt = _attr_str(f.attrs.get("format"))
    if fmt != FORMAT:
        raise _fail(path, "attrs/format", f"'{FORMAT}'", repr(fmt) if fmt is not None else "missing")
    version = f.attrs.get("format_version")
    try:
        ok = version is not None and np.asarray(version).size == 1 and int(np.asarray(version)) == FORMAT_VERSION
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise _fail(path, "attrs/format_version", f"the integer {FORMAT_VERSION}", repr(version))
    source = _attr_str(f.attrs.get("source", "")) or ""

    first_key = "samples/cbh_km" if "samples/cbh_km" in f else "samples/flight"  # no labels: inputs only
    flight_names, campaigns = _read_flights(f, path, 2 if first_key == "samples/cbh_km" else 1)
    first = _dataset(f, path, first_key)
    _check_shape(path, first_key, first, 1)
    n = first.shape[0]
    if n == 0:
        raise _fail(path, first_key, "at least one sample", "0 samples")
    samples: dict[str, np.ndarray] = {}
    kinds = {"flight": ("iu", "integers"), "time_utc": ("f", "float64 POSIX seconds")}
    for key in REQUIRED_SAMPLES + OPTIONAL_SAMPLES:
        ds = _dataset(f, path, f"samples/{key}", required=key in REQUIRED_SAMPLES)
        if ds is None:
            continue
        _check_shape(path, f"samples/{key}", ds, 1, n, first_key)
        kind, what = kinds.get(key, ("f", "floating point"))
        _check_kind(path, f"samples/{key}", ds, kind, what)
        samples[key] = read_bounded(ds, path, f"samples/{key}")
    if samples["time_utc"].dtype != np.float64:
        raise _fail(
            path,
            "samples/time_utc",
            "float64 (float32 loses seconds at POSIX scale)",
            f"dtype {samples['time_utc'].dtype}",
        )
    _check_samples(path, samples, flight_names)
    features = _read_features(f, path, n)
    image_shape, image_dtype = _check_images(f, path, "images", n, None)
    unl_flight, unl_time = _read_unlabelled(f, path, flight_names, image_shape)
    if "truth" in f and isinstance(f["truth"], h5py.Group):
        for key, ds in f["truth"].items():
            if isinstance(ds, h5py.Dataset) and ds.ndim >= 1 and ds.shape[0] not in (n, len(flight_names)):
                raise _fail(path, f"truth/{key}", f"length {n} or {len(flight_names)}", f"length {ds.shape[0]}")
    attrs = {k: v for k, v in f.attrs.items()}
    return Tables(
        flight_names, campaigns, samples, features, image_shape, image_dtype, unl_flight, unl_time, source, attrs
    )


def _read_flights(f: h5py.File, path: Path, least: int = 2) -> tuple[list[str], list[str] | None]:
    names_ds = _dataset(f, path, "flights/name")
    _check_shape(path, "flights/name", names_ds, 1)
    names = _read_strings(path, "flights/name", names_ds)
    if len(names) < least:
        raise _fail(
            path,
            "flights/name",
            "at least 2 flights in a labelled campaign (leave-one-flight-out needs one to hold out)"
            if least == 2
            else "at least 1 flight",
            f"{len(names)} flight{'s' if len(names) != 1 else ''}",
        )
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        if not name.strip():
            raise _fail(path, "flights/name", "non-empty flight names", f"an empty name at index {k}")
        if name in seen:
            raise _fail(path, "flights/name", "unique flight names", f"'{name}' twice (indices {seen[name]} and {k})")
        seen[name] = k
    campaigns = None
    camp_ds = _dataset(f, path, "flights/campaign", required=False)
    if camp_ds is not None:
        _check_shape(path, "flights/campaign", camp_ds, 1, len(names), "flights/name")
        campaigns = _read_strings(path, "flights/campaign", camp_ds)
    return names, campaigns


def _check_samples(path: Path, s: dict[str, np.ndarray], flight_names: list[str]) -> None:
    cbh = s.get("cbh_km")  # None: an inputs-only campaign
    bad = ~np.isfinite(cbh) if cbh is not None else np.zeros(0, bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(
            path,
            "samples/cbh_km",
            "finite labels (or no samples/cbh_km at all: an inputs-only campaign for cbh predict)",
            f"{int(bad.sum())} non-finite values (first at sample {i}: {cbh[i]})",
        )
    lo, hi = CBH_RANGE_KM
    out = ((cbh < lo) | (cbh > hi)) if cbh is not None else bad
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise _fail(
            path,
            "samples/cbh_km",
            f"values within {lo}-{hi} km",
            f"{int(out.sum())} outside (first at sample {i}: {cbh[i]:g} km)",
        )
    fl = s["flight"]
    n_flights = len(flight_names)
    out = (fl < 0) | (fl >= n_flights)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise _fail(
            path,
            "samples/flight",
            f"indices in 0..{n_flights - 1} (flights/name)",
            f"{int(out.sum())} out of range (first at sample {i}: {fl[i]})",
        )
    counts = np.bincount(fl.astype(np.int64), minlength=n_flights)
    least = 1 if cbh is None else 2
    for k, c in enumerate(counts):
        if c < least:
            raise _fail(
                path,
                "samples/flight",
                f"at least {least} sample{'s' if least > 1 else ''} for every flight in flights/name",
                f"{c} for flight '{flight_names[k]}' (index {k})",
            )
    for key in ("time_utc", "sza_deg", "saa_deg"):
        bad = ~np.isfinite(s[key]) if key in s else np.zeros(0, bool)
        if bad.any():
            raise _fail(
                path,
                f"samples/{key}",
                "finite values",
                f"{int(bad.sum())} non-finite (first at sample {int(np.flatnonzero(bad)[0])})",
            )
    sza = s.get("sza_deg", np.zeros(0))
    if ((sza < 0) | (sza > 180)).any():  # over 90: the sun below the horizon (a night flight)
        i = int(np.flatnonzero((sza < 0) | (sza > 180))[0])
        raise _fail(path, "samples/sza_deg", "solar zenith within 0-180 deg", f"{sza[i]:g} at sample {i}")
    t = s["time_utc"]
    _check_posix(path, "samples/time_utc", t)
    for k in range(n_flights):
        idx = np.flatnonzero(fl == k)
        dt = np.diff(t[idx])
        if (dt <= 0).any():
            j = int(np.flatnonzero(dt <= 0)[0])
            what = "a duplicated time (duplicated sample?)" if dt[j] == 0 else "a time going backwards"
            raise _fail(
                path,
                "samples/time_utc",
                f"strictly increasing times within flight '{flight_names[k]}'",
                f"{what} at samples {idx[j]} -> {idx[j + 1]} ({t[idx[j]]:.3f} -> {t[idx[j + 1]]:.3f})",
            )


def _read_features(f: h5py.File, path: Path, n: int) -> dict[str, FeatureGroup]:
    out: dict[str, FeatureGroup] = {}
    if "features" not in f:
        return out
    if not isinstance(f["features"], h5py.Group):
        raise _fail(path, "features", "a group", "a dataset")
    for group in f["features"]:
        base = f"features/{group}"
        if not isinstance(f[base], h5py.Group):
            raise _fail(path, base, "a group with values and names", "a dataset")
        vals_ds = _dataset(f, path, f"{base}/values")
        names_ds = _dataset(f, path, f"{base}/names")
        _check_shape(path, f"{base}/values", vals_ds, 2, n)
        _check_kind(path, f"{base}/values", vals_ds, "f", "floating point (float32)")
        _check_shape(path, f"{base}/names", names_ds, 1)
        names = _read_strings(path, f"{base}/names", names_ds)
        k = vals_ds.shape[1]
        if k == 0:
            raise _fail(path, f"{base}/values", "at least one feature column", f"none (shape {vals_ds.shape})")
        if len(names) != k:
            raise _fail(path, f"{base}/names", f"{k} names (one per column of values)", f"{len(names)} names")
        if len(set(names)) != len(names):
            dup = next(nm for nm in names if names.count(nm) > 1)
            raise _fail(path, f"{base}/names", "unique feature names", f"'{dup}' twice")
        values = read_bounded(vals_ds, path, f"{base}/values").astype(np.float32)
        if np.isinf(values).any():
            col = int(np.flatnonzero(np.isinf(values).any(axis=0))[0])
            raise _fail(
                path, f"{base}/values", "finite values or NaN for missing", f"infinite values in column '{names[col]}'"
            )
        fill = fill_values(values)
        if fill.any():
            i, col = (int(v[0]) for v in np.nonzero(fill))
            raise _fail(
                path,
                f"{base}/values",
                "measurements, NaN for missing",
                f"{values[i, col]:.6g} in column '{names[col]}' at sample {i}, a fill value: write NaN for missing",
            )
        all_nan = np.isnan(values).all(axis=0)
        if all_nan.any():
            col = int(np.flatnonzero(all_nan)[0])
            raise _fail(
                path,
                f"{base}/values",
                "at least one finite value per column",
                f"column '{names[col]}' is NaN for every sample",
            )
        units_attr = names_ds.attrs.get("units", vals_ds.attrs.get("units"))
        units = [""] * k
        if units_attr is not None:
            units = [u.decode() if isinstance(u, bytes) else str(u) for u in np.atleast_1d(units_attr)]
            if len(units) != k:
                raise _fail(path, f"{base}/names attrs/units", f"{k} units", f"{len(units)}")
        out[group] = FeatureGroup(values, names, units)
    return out


def _check_images(
    f: h5py.File, path: Path, key: str, n: int | None, like: tuple[int, int, int] | None
) -> tuple[tuple[int, int, int] | None, np.dtype | None]:
    img = _dataset(f, path, key, required=False)
    if img is None:
        return None, None
    _check_shape(path, key, img, 4, n)
    if img.dtype not in IMAGE_DTYPES:
        raise _fail(path, key, "dtype float32 or uint16", f"dtype {img.dtype}")
    if min(img.shape[1:]) < 1 or max(img.shape[1:]) > MAX_IMAGE_SIDE:
        raise _fail(path, key, f"non-empty (C, H, W), each at most {MAX_IMAGE_SIDE}", f"shape {img.shape}")
    check_declared_size(img, path, key)
    shape = tuple(int(s) for s in img.shape[1:])
    if like is not None and shape != like:
        raise _fail(path, key, f"images of shape (C, H, W) = {like} (as images)", f"{shape}")
    return shape, img.dtype  # type: ignore[return-value]


def _read_unlabelled(
    f: h5py.File, path: Path, flight_names: list[str], image_shape: tuple[int, int, int] | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if "unlabelled" not in f:
        return None, None
    if not isinstance(f["unlabelled"], h5py.Group):
        raise _fail(path, "unlabelled", "a group with images and flight", "a dataset")
    if image_shape is None:
        raise _fail(path, "unlabelled", "labelled 'images' beside an unlabelled pool", "no 'images' dataset")
    fl_ds = _dataset(f, path, "unlabelled/flight")
    _check_shape(path, "unlabelled/flight", fl_ds, 1)
    _check_kind(path, "unlabelled/flight", fl_ds, "iu", "integers")
    m = fl_ds.shape[0]
    _check_images(f, path, "unlabelled/images", m, image_shape)
    if "unlabelled/images" not in f:
        raise _fail(path, "unlabelled/images", "a dataset", "missing")
    fl = read_bounded(fl_ds, path, "unlabelled/flight").astype(np.int64)
    out = (fl < 0) | (fl >= len(flight_names))
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise _fail(
            path,
            "unlabelled/flight",
            f"indices in 0..{len(flight_names) - 1} (flights/name)",
            f"{int(out.sum())} out of range (first at frame {i}: {fl[i]})",
        )
    t = None
    t_ds = _dataset(f, path, "unlabelled/time_utc", required=False)
    if t_ds is not None:
        _check_shape(path, "unlabelled/time_utc", t_ds, 1, m, "unlabelled/flight")
        _check_kind(path, "unlabelled/time_utc", t_ds, "f", "float64 POSIX seconds")
        t = read_bounded(t_ds, path, "unlabelled/time_utc").astype(np.float64)
        if not np.isfinite(t).all():
            raise _fail(path, "unlabelled/time_utc", "finite values", "non-finite times")
        _check_posix(path, "unlabelled/time_utc", t)
    return fl, t


def _check_posix(path: Path, key: str, t: np.ndarray) -> None:
    """Times are POSIX seconds: not before 1980 (POSIX_SECONDS_MIN: elapsed seconds, hours of the day and
    spreadsheet day numbers are refused), not past POSIX_SECONDS_MAX (milliseconds and finer are refused)."""
    bad = (t < POSIX_SECONDS_MIN) | (t > POSIX_SECONDS_MAX)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        unit = time_unit(t[i])
        if 0 <= t[i] < POSIX_SECONDS_MIN:
            unit = "a time before 1980 (seconds of the day, elapsed time, hours or spreadsheet days?)"
        raise _fail(
            path,
            key,
            "POSIX seconds since 1970 (about 1.7e9 in 2025)",
            f"{t[i]:.6g} at index {i}" + (f", which looks like {unit}" if unit else ""),
        )


def time_unit(t: float) -> str | None:
    """The unit a too-large POSIX time was likely written in (milliseconds... nanoseconds), or None."""
    return next((u for d, u in UNITS if t > 0 and t / d <= PLAUSIBLE_POSIX_S), None)
