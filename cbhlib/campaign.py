"""The campaign file contract: one HDF5 layout that every source becomes.

Layout (N samples, F flights; see README "Campaign file contract"):

    attrs format="cbh-campaign", format_version=1, source
    flights/name            str (F,)
    flights/campaign        str (F,)            optional
    samples/flight          int (N,)            index into flights/name
    samples/cbh_km          float32 (N,)        lidar cloud base, finite, 0-20 km
    samples/time_utc        float64 (N,)        POSIX seconds, increasing within a flight
    samples/sza_deg|saa_deg float32 (N,)
    samples/lat|lon         float32 (N,)        optional
    features/<g>/values     float32 (N, K)      NaN allowed
    features/<g>/names      str (K,)            attr units (K,) optional
    images                  float32|uint16 (N, C, H, W), optional, one sample per chunk
    truth/...               optional, synthetic ground truth

Reading is lazy: small arrays are read once into memory on open; the h5py handle for
images is opened on first use in each process (DataLoader workers open their own).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from cbhlib.errors import CampaignFormatError

FORMAT = "cbh-campaign"
FORMAT_VERSION = 1
REQUIRED_SAMPLES = ("flight", "cbh_km", "time_utc", "sza_deg", "saa_deg")
OPTIONAL_SAMPLES = ("lat", "lon")
CBH_RANGE_KM = (0.0, 20.0)
IMAGE_DTYPES = (np.dtype("float32"), np.dtype("uint16"))


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
class CampaignData:
    """Everything but the images of a campaign, in memory; the writer's input."""

    flight_names: list[str]
    flight: np.ndarray
    cbh_km: np.ndarray
    time_utc: np.ndarray
    sza_deg: np.ndarray
    saa_deg: np.ndarray
    source: str
    flight_campaigns: list[str] | None = None
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None
    features: dict[str, FeatureGroup] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    truth_attrs: dict[str, object] = field(default_factory=dict)
    attrs: dict[str, object] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(len(self.cbh_km))


# --------------------------------------------------------------------------- writing


def write_campaign(
    path: str | os.PathLike,
    data: CampaignData,
    images: np.ndarray | Iterable[tuple[int, np.ndarray]] | None = None,
    image_shape: tuple[int, int, int] | None = None,
    image_dtype: str = "float32",
) -> Path:
    """Write a campaign file atomically (temporary file, then rename).

    Args:
        path: destination ``.h5``.
        data: labels, metadata and features.
        images: None, an (N, C, H, W) array, or an iterable of ``(start, block)`` with
            blocks of shape (n, C, H, W), for streaming large image sets.
        image_shape: (C, H, W); required when ``images`` is an iterable.
        image_dtype: ``float32`` or ``uint16``.

    Returns:
        The path written. The result is validated before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            _write_tables(f, data)
            if images is not None:
                _write_images(f, data.n_samples, images, image_shape, image_dtype)
        validate_campaign(tmp, scan_images=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _str_array(values: Iterable[str]) -> np.ndarray:
    return np.array([str(v).encode("utf-8") for v in values], dtype=h5py.string_dtype("utf-8"))


def _write_tables(f: h5py.File, d: CampaignData) -> None:
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["source"] = d.source
    for key, value in d.attrs.items():
        f.attrs[key] = value
    f.create_dataset("flights/name", data=_str_array(d.flight_names))
    if d.flight_campaigns is not None:
        f.create_dataset("flights/campaign", data=_str_array(d.flight_campaigns))
    f.create_dataset("samples/flight", data=np.asarray(d.flight, dtype=np.int32))
    f.create_dataset("samples/cbh_km", data=np.asarray(d.cbh_km, dtype=np.float32))
    f.create_dataset("samples/time_utc", data=np.asarray(d.time_utc, dtype=np.float64))
    f.create_dataset("samples/sza_deg", data=np.asarray(d.sza_deg, dtype=np.float32))
    f.create_dataset("samples/saa_deg", data=np.asarray(d.saa_deg, dtype=np.float32))
    for key in OPTIONAL_SAMPLES:
        value = getattr(d, key)
        if value is not None:
            f.create_dataset(f"samples/{key}", data=np.asarray(value, dtype=np.float32))
    for group, fg in d.features.items():
        ds = f.create_dataset(f"features/{group}/values", data=np.asarray(fg.values, np.float32))
        names = f.create_dataset(f"features/{group}/names", data=_str_array(fg.names))
        names.attrs["units"] = _str_array(fg.units)
        ds.attrs["units"] = _str_array(fg.units)
    for key, value in d.truth.items():
        f.create_dataset(f"truth/{key}", data=value)
    if d.truth or d.truth_attrs:
        grp = f.require_group("truth")
        for key, value in d.truth_attrs.items():
            grp.attrs[key] = value


def _write_images(
    f: h5py.File,
    n: int,
    images: np.ndarray | Iterable[tuple[int, np.ndarray]],
    image_shape: tuple[int, int, int] | None,
    image_dtype: str,
) -> None:
    if isinstance(images, np.ndarray):
        image_shape = tuple(images.shape[1:])  # type: ignore[assignment]
        blocks: Iterable[tuple[int, np.ndarray]] = [(0, images)]
    else:
        if image_shape is None:
            raise ValueError("image_shape is required when images are streamed")
        blocks = images
    ds = f.create_dataset(
        "images", shape=(n, *image_shape), dtype=image_dtype, chunks=(1, *image_shape)
    )
    for start, block in blocks:
        ds[start : start + len(block)] = block.astype(image_dtype, copy=False)


# --------------------------------------------------------------------------- validation


def _fail(file: object, where: str, expected: str, found: str) -> CampaignFormatError:
    return CampaignFormatError(file, where, expected, found)


def _open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise _fail(path, "(file)", "an existing campaign file", "no such file")
    if path.is_dir():
        raise _fail(path, "(file)", "an HDF5 campaign file", "a directory")
    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "(file)", "an HDF5 campaign file", "an empty file (0 bytes)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head != b"\x89HDF\r\n\x1a\n":
            raise _fail(
                path, "(file)", "an HDF5 file (signature \\x89HDF)", f"first bytes {head[:8]!r}"
            ) from None
        raise _fail(
            path, "(file)", "a complete, readable HDF5 file",
            f"h5py cannot open it ({str(exc).splitlines()[0]}); the file may be truncated",
        ) from None


def _dataset(f: h5py.File, path: Path, key: str, required: bool = True) -> h5py.Dataset | None:
    if key not in f:
        if required:
            parent = key.rsplit("/", 1)[0] if "/" in key else "/"
            what = "missing" if parent == "/" or parent in f else f"missing (no group '{parent}')"
            raise _fail(path, key, "a dataset", what)
        return None
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise _fail(path, key, "a dataset", f"a {type(obj).__name__}")
    return obj


def _check_shape(path: Path, key: str, ds: h5py.Dataset, rank: int, n: int | None = None) -> None:
    if ds.ndim != rank:
        raise _fail(path, key, f"rank {rank}", f"rank {ds.ndim} with shape {ds.shape}")
    if n is not None and ds.shape[0] != n:
        raise _fail(
            path, key, f"length {n} (as samples/cbh_km)", f"length {ds.shape[0]} (length mismatch)"
        )


def _check_kind(path: Path, key: str, ds: h5py.Dataset, kinds: str, what: str) -> None:
    if ds.dtype.kind not in kinds:
        raise _fail(path, key, what, f"dtype {ds.dtype}")


def _read_strings(path: Path, key: str, ds: h5py.Dataset) -> list[str]:
    if ds.dtype.kind not in "SOU" and h5py.check_string_dtype(ds.dtype) is None:
        raise _fail(path, key, "strings", f"dtype {ds.dtype}")
    values = ds[()]
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]


@dataclass
class _Tables:
    """Small arrays read and validated on open."""

    flight_names: list[str]
    flight_campaigns: list[str] | None
    samples: dict[str, np.ndarray]
    features: dict[str, FeatureGroup]
    image_shape: tuple[int, int, int] | None
    image_dtype: np.dtype | None
    source: str
    attrs: dict[str, object]


def _read_tables(f: h5py.File, path: Path) -> _Tables:
    fmt = f.attrs.get("format")
    fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
    if fmt != FORMAT:
        raise _fail(path, "attrs/format", f"'{FORMAT}'", repr(fmt) if fmt is not None else "missing")
    version = f.attrs.get("format_version")
    if version is None or int(np.asarray(version)) != FORMAT_VERSION:
        raise _fail(path, "attrs/format_version", str(FORMAT_VERSION), repr(version))
    source = f.attrs.get("source", "")
    source = source.decode() if isinstance(source, bytes) else str(source)

    names_ds = _dataset(f, path, "flights/name")
    _check_shape(path, "flights/name", names_ds, 1)
    flight_names = _read_strings(path, "flights/name", names_ds)
    n_flights = len(flight_names)
    if n_flights == 0:
        raise _fail(path, "flights/name", "at least one flight", "an empty list")
    campaigns = None
    camp_ds = _dataset(f, path, "flights/campaign", required=False)
    if camp_ds is not None:
        _check_shape(path, "flights/campaign", camp_ds, 1, None)
        campaigns = _read_strings(path, "flights/campaign", camp_ds)
        if len(campaigns) != n_flights:
            raise _fail(path, "flights/campaign", f"length {n_flights} (as flights/name)",
                        f"length {len(campaigns)}")

    cbh_ds = _dataset(f, path, "samples/cbh_km")
    _check_shape(path, "samples/cbh_km", cbh_ds, 1)
    n = cbh_ds.shape[0]
    if n == 0:
        raise _fail(path, "samples/cbh_km", "at least one sample", "0 samples")
    samples: dict[str, np.ndarray] = {}
    kinds = {"flight": ("iu", "integers"), "time_utc": ("f", "float64 POSIX seconds")}
    for key in REQUIRED_SAMPLES + OPTIONAL_SAMPLES:
        ds = _dataset(f, path, f"samples/{key}", required=key in REQUIRED_SAMPLES)
        if ds is None:
            continue
        _check_shape(path, f"samples/{key}", ds, 1, n)
        kind, what = kinds.get(key, ("f", "floating point"))
        _check_kind(path, f"samples/{key}", ds, kind, what)
        samples[key] = ds[()]
    if samples["time_utc"].dtype != np.float64:
        raise _fail(path, "samples/time_utc", "float64 (float32 loses seconds at POSIX scale)",
                    f"dtype {samples['time_utc'].dtype}")
    _check_samples(path, samples, flight_names)

    features = _read_features(f, path, n)
    image_shape, image_dtype = None, None
    img = _dataset(f, path, "images", required=False)
    if img is not None:
        _check_shape(path, "images", img, 4, n)
        if img.dtype not in IMAGE_DTYPES:
            raise _fail(path, "images", "dtype float32 or uint16", f"dtype {img.dtype}")
        if min(img.shape[1:]) < 1:
            raise _fail(path, "images", "non-empty (C, H, W)", f"shape {img.shape}")
        image_shape, image_dtype = tuple(int(s) for s in img.shape[1:]), img.dtype
    if "truth" in f:
        for key, ds in f["truth"].items():
            if isinstance(ds, h5py.Dataset) and ds.ndim >= 1 and ds.shape[0] not in (n, n_flights):
                raise _fail(path, f"truth/{key}", f"length {n} or {n_flights}",
                            f"length {ds.shape[0]}")
    attrs = {k: v for k, v in f.attrs.items()}
    return _Tables(flight_names, campaigns, samples, features, image_shape,  # type: ignore[arg-type]
                   image_dtype, source, attrs)


def _check_samples(path: Path, s: dict[str, np.ndarray], flight_names: list[str]) -> None:
    cbh = s["cbh_km"]
    bad = ~np.isfinite(cbh)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(path, "samples/cbh_km", "finite labels",
                    f"{int(bad.sum())} non-finite values (first at sample {i}: {cbh[i]})")
    lo, hi = CBH_RANGE_KM
    out = (cbh < lo) | (cbh > hi)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise _fail(path, "samples/cbh_km", f"values within {lo}-{hi} km",
                    f"{int(out.sum())} outside (first at sample {i}: {cbh[i]:g} km)")
    fl = s["flight"]
    n_flights = len(flight_names)
    out = (fl < 0) | (fl >= n_flights)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise _fail(path, "samples/flight", f"indices in 0..{n_flights - 1} (flights/name)",
                    f"{int(out.sum())} out of range (first at sample {i}: {fl[i]})")
    counts = np.bincount(fl.astype(np.int64), minlength=n_flights)
    for k, c in enumerate(counts):
        if c < 2:
            raise _fail(path, "samples/flight",
                        "at least 2 samples for every flight in flights/name",
                        f"{c} for flight '{flight_names[k]}' (index {k})")
    for key in ("time_utc", "sza_deg", "saa_deg"):
        bad = ~np.isfinite(s[key])
        if bad.any():
            raise _fail(path, f"samples/{key}", "finite values",
                        f"{int(bad.sum())} non-finite (first at sample {int(np.flatnonzero(bad)[0])})")
    sza = s["sza_deg"]
    if ((sza < 0) | (sza > 90)).any():
        i = int(np.flatnonzero((sza < 0) | (sza > 90))[0])
        raise _fail(path, "samples/sza_deg", "solar zenith within 0-90 deg", f"{sza[i]:g} at sample {i}")
    t = s["time_utc"]
    for k in range(n_flights):
        idx = np.flatnonzero(fl == k)
        dt = np.diff(t[idx])
        if (dt <= 0).any():
            j = int(np.flatnonzero(dt <= 0)[0])
            what = "a duplicated time (duplicated sample?)" if dt[j] == 0 else "a time going backwards"
            raise _fail(path, "samples/time_utc",
                        f"strictly increasing times within flight '{flight_names[k]}'",
                        f"{what} at samples {idx[j]} -> {idx[j + 1]} ({t[idx[j]]:.3f} -> {t[idx[j + 1]]:.3f})")


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
        if len(names) != k or k == 0:
            raise _fail(path, f"{base}/names", f"{k} names (one per column of values, at least 1)",
                        f"{len(names)} names")
        values = vals_ds[()].astype(np.float32)
        if np.isinf(values).any():
            col = int(np.flatnonzero(np.isinf(values).any(axis=0))[0])
            raise _fail(path, f"{base}/values", "finite values or NaN for missing",
                        f"infinite values in column '{names[col]}'")
        all_nan = np.isnan(values).all(axis=0)
        if all_nan.any():
            col = int(np.flatnonzero(all_nan)[0])
            raise _fail(path, f"{base}/values", "at least one finite value per column",
                        f"column '{names[col]}' is NaN for every sample")
        units_attr = names_ds.attrs.get("units", vals_ds.attrs.get("units"))
        units = [""] * k
        if units_attr is not None:
            units = [u.decode() if isinstance(u, bytes) else str(u) for u in np.atleast_1d(units_attr)]
            if len(units) != k:
                raise _fail(path, f"{base}/names attrs/units", f"{k} units", f"{len(units)}")
        out[group] = FeatureGroup(values, names, units)
    return out


def scan_image_pixels(path: str | os.PathLike, batch: int = 64) -> dict[str, float]:
    """Stream every image once: reject NaN/inf pixels and a constant image set.

    Returns:
        Pixel statistics ``{"min", "max", "mean", "std"}``.
    """
    path = Path(path)
    with _open_h5(path) as f:
        if "images" not in f:
            return {}
        ds = f["images"]
        n = ds.shape[0]
        lo, hi, total, total_sq, count = np.inf, -np.inf, 0.0, 0.0, 0
        for start in range(0, n, batch):
            block = ds[start : start + batch].astype(np.float64)
            finite = np.isfinite(block)
            if not finite.all():
                bad = start + int(np.flatnonzero(~finite.reshape(len(block), -1).all(axis=1))[0])
                raise _fail(path, "images", "finite pixel values",
                            f"NaN or inf pixels in sample {bad}")
            lo, hi = min(lo, block.min()), max(hi, block.max())
            total += block.sum()
            total_sq += np.square(block).sum()
            count += block.size
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean**2, 0.0)))
    if hi - lo <= 0:
        raise _fail(path, "images", "images with some contrast",
                    f"every pixel of every image equals {lo:g} (a constant image set)")
    return {"min": float(lo), "max": float(hi), "mean": float(mean), "std": std}


def validate_campaign(path: str | os.PathLike, scan_images: bool = True) -> "Campaign":
    """Check a campaign file against the contract; raise ``CampaignFormatError`` if broken.

    Args:
        path: the campaign file.
        scan_images: also stream all pixels (NaN/inf, constant image set).
    """
    camp = Campaign(path)
    if scan_images and camp.has_images:
        scan_image_pixels(path)
    return camp


# --------------------------------------------------------------------------- reading


class Campaign:
    """A validated campaign file: small arrays in memory, images read lazily by index.

    Safe to pickle into DataLoader workers: the h5py handle is dropped and reopened in
    each process on first use.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with _open_h5(self.path) as f:
            try:
                t = _read_tables(f, self.path)
            except (OSError, KeyError, ValueError, TypeError) as exc:
                raise _fail(self.path, "(file)", "a readable campaign file",
                            f"{type(exc).__name__}: {exc}") from None
        self.flight_names = t.flight_names
        self.flight_campaigns = t.flight_campaigns
        self.flight = t.samples["flight"].astype(np.int64)
        self.cbh_km = t.samples["cbh_km"].astype(np.float32)
        self.time_utc = t.samples["time_utc"]
        self.sza_deg = t.samples["sza_deg"].astype(np.float32)
        self.saa_deg = t.samples["saa_deg"].astype(np.float32)
        self.lat = t.samples.get("lat")
        self.lon = t.samples.get("lon")
        self.features = t.features
        self.image_shape = t.image_shape
        self.image_dtype = t.image_dtype
        self.source = t.source
        self.attrs = t.attrs
        self._h5: h5py.File | None = None
        self._pid: int | None = None
        self._fingerprint: str | None = None

    # -- basic facts
    @property
    def n_samples(self) -> int:
        return int(len(self.cbh_km))

    @property
    def n_flights(self) -> int:
        return len(self.flight_names)

    @property
    def has_images(self) -> bool:
        return self.image_shape is not None

    @property
    def feature_groups(self) -> list[str]:
        return list(self.features)

    def flight_indices(self, k: int) -> np.ndarray:
        """Sample indices of flight ``k`` in time order."""
        return np.flatnonzero(self.flight == k)

    def feature_matrix(self, groups: Iterable[str] | None = None) -> tuple[np.ndarray, list[str]]:
        """Stack feature groups column-wise.

        Returns:
            X: (N, K) float32 with NaN where missing; names: K ``group/name`` strings.
        """
        groups = list(self.features) if groups is None else list(groups)
        for g in groups:
            if g not in self.features:
                raise _fail(self.path, f"features/{g}", "a feature group",
                            f"missing (groups present: {', '.join(self.features) or 'none'})")
        if not groups:
            return np.zeros((self.n_samples, 0), np.float32), []
        X = np.concatenate([self.features[g].values for g in groups], axis=1)
        names = [f"{g}/{n}" for g in groups for n in self.features[g].names]
        return X, names

    # -- lazy handle
    @property
    def h5(self) -> h5py.File:
        """The h5py handle of this process, opened on first use."""
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = _open_h5(self.path)
            self._pid = os.getpid()
        return self._h5

    def images(self, indices: np.ndarray | list[int] | slice) -> np.ndarray:
        """Read images by sample index.

        Returns:
            (n, C, H, W) float32.
        """
        if not self.has_images:
            raise _fail(self.path, "images", "an images dataset (needed by image modes)",
                        "none: this campaign has no images; use physical_only or baselines")
        ds = self.h5["images"]
        if isinstance(indices, slice):
            out = ds[indices].astype(np.float32)
            base = indices.start or 0
        else:
            idx = np.asarray(indices, dtype=np.int64)
            order = np.argsort(idx, kind="stable")
            sorted_idx = idx[order]
            uniq, inverse = np.unique(sorted_idx, return_inverse=True)
            block = _read_rows(ds, uniq)
            out = np.empty((len(idx), *ds.shape[1:]), dtype=np.float32)
            out[order] = block[inverse]
            base = None
        if not np.isfinite(out).all():
            bad = np.flatnonzero(~np.isfinite(out.reshape(len(out), -1)).all(axis=1))[0]
            sample = (base + bad) if base is not None else int(np.asarray(indices)[bad])
            raise _fail(self.path, "images", "finite pixel values", f"NaN or inf pixels in sample {sample}")
        return out

    def truth(self, key: str) -> np.ndarray | None:
        """A ``truth/`` dataset (synthetic campaigns), or None."""
        f = self.h5
        return f[f"truth/{key}"][()] if f"truth/{key}" in f else None

    def truth_attrs(self) -> dict[str, object]:
        f = self.h5
        return dict(f["truth"].attrs) if "truth" in f else {}

    def fingerprint(self) -> str:
        """sha256 of the file's bytes (streamed; cached per instance)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            with open(self.path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5, self._pid = None, None

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_h5"], state["_pid"] = None, None
        return state

    def __enter__(self) -> "Campaign":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        img = "x".join(map(str, self.image_shape)) if self.image_shape else "none"
        return (f"Campaign({self.path.name}: {self.n_samples} samples, {self.n_flights} flights, "
                f"features {[f'{g}[{len(v.names)}]' for g, v in self.features.items()]}, images {img})")


def _read_rows(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Read sorted unique rows, merging contiguous runs into slice reads."""
    out = np.empty((len(rows), *ds.shape[1:]), dtype=np.float32)
    if len(rows) == 0:
        return out
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    pos = 0
    for run in np.split(rows, breaks):
        out[pos : pos + len(run)] = ds[int(run[0]) : int(run[-1]) + 1]
        pos += len(run)
    return out


def iter_image_batches(camp: Campaign, indices: np.ndarray, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, images)`` batches in the given order; images (b, C, H, W) float32."""
    for start in range(0, len(indices), batch):
        idx = indices[start : start + batch]
        yield idx, camp.images(idx)
