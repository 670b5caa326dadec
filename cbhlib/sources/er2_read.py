"""Reading the raw ER-2 layouts (er2-data-facts.md): camera, CPL lidar, navigation, feature files.

Every problem is an :class:`ER2ImportError` naming the file, the dataset, what was
expected and what was found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from cbhlib.constants import ERA5_VARIABLES, GEOMETRY_VARIABLES
from cbhlib.data.campaign import FeatureGroup
from cbhlib.errors import ER2ImportError

HDF4_MAGIC = b"\x0e\x03\x13\x01"
NAV_KEYS = {"sza": "nav/solarZenith", "saa": "nav/sunAzGrd", "lat": "nav/IWG_lat", "lon": "nav/IWG_lon"}


class Hdf4File(Exception):
    """Raised by :func:`open_h5` for an HDF4 file (navigation files may be HDF4)."""


def open_h5(path: Path, role: str) -> h5py.File:
    if not path.is_file():
        raise ER2ImportError(f"{path}: {role} file not found")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:4] == HDF4_MAGIC:
        raise Hdf4File(path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ER2ImportError(
            f"{path}: {role} file: expected a readable HDF5 file; found one h5py cannot open "
            f"({str(exc).splitlines()[0]})"
        ) from None


def read(f: h5py.File, key: str, path: Path, role: str, rank: tuple[int, ...] = (1,)) -> np.ndarray:
    if key not in f or not isinstance(f[key], h5py.Dataset):
        raise ER2ImportError(f"{path}: {role} file: dataset '{key}' is missing")
    ds = f[key]
    if ds.ndim not in rank:
        raise ER2ImportError(
            f"{path}: {role} file: '{key}': expected rank {' or '.join(map(str, rank))}; found shape {ds.shape}"
        )
    return ds[()]


def first_col(a: np.ndarray) -> np.ndarray:
    return a[:, 0] if a.ndim == 2 else a


def read_navigation(path: Path, n_frames: int) -> dict[str, np.ndarray]:
    """Solar angles and position per camera frame (fill rules of the earlier pipeline), checked."""
    try:
        with open_h5(path, "navigation") as f:
            out = {k: np.asarray(read(f, v, path, "navigation"), float) for k, v in NAV_KEYS.items()}
    except Hdf4File:
        out = _read_hdf4_nav(path)
    for k, v in out.items():
        if len(v) < n_frames:
            raise ER2ImportError(
                f"{path}: navigation file: '{NAV_KEYS[k]}': expected at least {n_frames} values "
                f"(one per camera frame); found {len(v)}"
            )
        out[k] = v[:n_frames].copy()
    sza = out["sza"]
    if np.isnan(sza).all():
        raise ER2ImportError(f"{path}: navigation file: 'nav/solarZenith': expected some finite values; found all NaN")
    sza[np.isnan(sza)] = np.nanmean(sza)
    bad = (sza < 0) | (sza > 90)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ER2ImportError(
            f"{path}: navigation file: 'nav/solarZenith': expected degrees within 0-90; found {sza[i]:g} at frame {i}"
        )
    saa = out["saa"]
    saa[~np.isfinite(saa)] = 0.0
    out["saa"] = np.mod(saa, 360.0)
    return out


def _read_hdf4_nav(path: Path) -> dict[str, np.ndarray]:
    try:
        from pyhdf.SD import SD, SDC  # type: ignore[import-not-found]
    except ImportError:
        raise ER2ImportError(
            f"{path}: navigation file is HDF4, which needs the optional extra: pip install 'cbhlib[hdf4]' (pyhdf)"
        ) from None
    sd = SD(str(path), SDC.READ)
    names = sd.datasets()
    out = {}
    for k, v in NAV_KEYS.items():
        short = v.split("/")[-1]
        if short not in names:
            raise ER2ImportError(f"{path}: navigation file (HDF4): dataset '{short}' is missing")
        out[k] = np.asarray(sd.select(short)[:], float)
    sd.end()
    return out


def year_from_lidar_name(path: Path) -> int:
    """The year of a CPL file from its name: the part before the first dot ends in e.g. ``10feb25``."""
    stem = path.name.split(".")[0]
    m = re.search(r"(\d{2})([a-z]{3})(\d{2})$", stem.lower())
    if not m:
        raise ER2ImportError(
            f"{path}: lidar file name: expected it to end (before the first dot) in a date like "
            f"'10feb25'; found '{stem}'"
        )
    return 2000 + int(m.group(3))


def julian_to_posix(jday: np.ndarray, year: int) -> np.ndarray:
    """Decimal Julian day (integer part: day of year; fraction: time of day) -> POSIX seconds.

    The day is the first *finite* profile's; a drop of the fraction by more than 0.2
    between consecutive valid profiles is a midnight rollover and adds one day from there
    on. Profiles without a time stay NaN (and are dropped as invalid), so one bad value
    never takes the whole flight with it.
    """
    jday = np.asarray(jday, float)
    out = np.full(len(jday), np.nan)
    ok = np.flatnonzero(np.isfinite(jday) & (jday > 0))
    if not len(ok):
        return out
    frac = jday[ok] - np.floor(jday[ok])
    rollover = np.concatenate([[0], np.cumsum(np.diff(frac) < -0.2)])
    start = datetime(year, 1, 1, tzinfo=UTC).timestamp()
    out[ok] = start + (np.floor(jday[ok[0]]) - 1 + rollover + frac) * 86400.0
    return out


@dataclass
class Cascade:
    """How many lidar profiles survive each rule."""

    flight: str
    read: int = 0
    valid: int = 0
    in_range: int = 0
    over_ocean: int = 0
    matched: int = 0

    def line(self) -> str:
        return (
            f"{self.flight}: {self.read} profiles read -> {self.valid} valid -> {self.in_range} in range -> "
            f"{self.over_ocean} over ocean -> {self.matched} matched frames"
        )


@dataclass
class FlightSamples:
    frames: np.ndarray  # camera frame index per sample, time order
    cbh_km: np.ndarray
    time_utc: np.ndarray
    sza: np.ndarray = field(default_factory=lambda: np.array([]))
    saa: np.ndarray = field(default_factory=lambda: np.array([]))
    lat: np.ndarray = field(default_factory=lambda: np.array([]))
    lon: np.ndarray = field(default_factory=lambda: np.array([]))
    cascade: Cascade = field(default_factory=lambda: Cascade(""))


def match_flight(
    name: str, lidar: Path, cam_time: np.ndarray, cbh_range: tuple[float, float], tolerance_s: float, ocean_km: float
) -> FlightSamples:
    """Apply the lidar rules and match profiles to the nearest camera frames (the later profile wins)."""
    with open_h5(lidar, "lidar") as f:
        base = np.asarray(read(f, "layer_descriptor/Layer_Base_Altitude", lidar, "lidar", (1, 2)), float)
        jd = first_col(
            np.asarray(read(f, "layer_descriptor/Profile_Decimal_Julian_Day", lidar, "lidar", (1, 2)), float)
        )
        surf = first_col(np.asarray(read(f, "layer_descriptor/Lidar_Surface_Altitude", lidar, "lidar", (1, 2)), float))
        dem = first_col(np.asarray(read(f, "layer_descriptor/DEM_Surface_Altitude", lidar, "lidar", (1, 2)), float))
    base0 = base[:, 0] if base.ndim == 2 else base
    n = len(base0)
    for key, arr in (
        ("Profile_Decimal_Julian_Day", jd),
        ("Lidar_Surface_Altitude", surf),
        ("DEM_Surface_Altitude", dem),
    ):
        if len(arr) != n:
            raise ER2ImportError(
                f"{lidar}: lidar file: 'layer_descriptor/{key}': expected {n} profiles (as "
                f"Layer_Base_Altitude); found {len(arr)} (length mismatch)"
            )
    t = julian_to_posix(jd, year_from_lidar_name(lidar))
    c = Cascade(name, read=n)
    valid = np.isfinite(base0) & (base0 > -999) & np.isfinite(t)
    c.valid = int(valid.sum())
    lo, hi = cbh_range
    in_range = valid & (base0 >= lo) & (base0 <= hi)
    c.in_range = int(in_range.sum())
    ocean = in_range & (dem == 0) & (np.abs(surf) / 1000.0 <= ocean_km)
    c.over_ocean = int(ocean.sum())
    order = np.argsort(cam_time, kind="stable")
    ct = cam_time[order]
    prof = np.flatnonzero(ocean)
    pos = np.clip(np.searchsorted(ct, t[prof]), 1, max(len(ct) - 1, 1))
    left, right = ct[pos - 1], ct[np.minimum(pos, len(ct) - 1)]
    nearest = np.minimum(np.where(np.abs(t[prof] - left) <= np.abs(right - t[prof]), pos - 1, pos), len(ct) - 1)
    ok = np.abs(ct[nearest] - t[prof]) <= tolerance_s
    label: dict[int, float] = {}
    for p, fr in zip(prof[ok], order[nearest[ok]], strict=True):
        label[int(fr)] = float(base0[p])  # profiles in file order: the later one wins
    c.matched = len(label)
    frames = np.array(sorted(label, key=lambda fr: cam_time[fr]), dtype=np.int64)
    cbh = np.array([label[int(fr)] for fr in frames], dtype=np.float32)
    return FlightSamples(frames, cbh, cam_time[frames] if len(frames) else np.array([]), cascade=c)


def read_wp2(path: Path, n: int) -> FeatureGroup:
    """The seed's ERA5 features (WP2_Features.hdf5), placed by ``sample_indices``."""
    with open_h5(path, "WP2 features") as f:
        X = np.asarray(read(f, "features", path, "WP2 features", (2,)), np.float32)
        names_raw = read(f, "feature_names", path, "WP2 features")
        idx = (
            np.asarray(read(f, "sample_indices", path, "WP2 features"), np.int64)
            if "sample_indices" in f
            else np.arange(len(X))
        )
    names = [v.decode() if isinstance(v, bytes) else str(v) for v in names_raw]
    if len(names) != X.shape[1]:
        raise ER2ImportError(
            f"{path}: WP2 features: 'feature_names': expected {X.shape[1]} names (columns of "
            f"'features'); found {len(names)}"
        )
    return FeatureGroup(
        align(X, idx, n, path, "WP2 features", "sample_indices"), names, [ERA5_VARIABLES.get(nm, "") for nm in names]
    )


def read_wp1(path: Path, n: int) -> FeatureGroup:
    """The seed's three shadow features (WP1_Features.hdf5), placed by ``sample_id``."""
    used = list(GEOMETRY_VARIABLES)
    with open_h5(path, "WP1 features") as f:
        cols = [np.asarray(read(f, k, path, "WP1 features"), np.float32) for k in used]
        idx = (
            np.asarray(read(f, "sample_id", path, "WP1 features"), np.int64)
            if "sample_id" in f
            else np.arange(len(cols[0]))
        )
    lengths = {len(c) for c in cols} | {len(idx)}
    if len(lengths) != 1:
        raise ER2ImportError(
            f"{path}: WP1 features: expected {', '.join(used)} and sample_id of equal length; "
            f"found lengths {sorted(lengths)}"
        )
    return FeatureGroup(
        align(np.stack(cols, 1), idx, n, path, "WP1 features", "sample_id"), used, list(GEOMETRY_VARIABLES.values())
    )


def align(X: np.ndarray, idx: np.ndarray, n: int, path: Path, role: str, key: str) -> np.ndarray:
    if len(X) != n:
        raise ER2ImportError(f"{path}: {role}: expected {n} rows (one per imported sample); found {len(X)}")
    if len(idx) != n or set(idx.tolist()) != set(range(n)):
        bad = sorted(set(idx.tolist()) - set(range(n)))[:3]
        raise ER2ImportError(
            f"{path}: {role}: '{key}': expected each of 0..{n - 1} once; found "
            f"{len(set(idx.tolist()))} distinct values" + (f", e.g. out of range {bad}" if bad else "")
        )
    out = np.empty_like(X)
    out[idx] = X
    return out


def attach_by_time_and_position(
    file: Path, max_time_s: float, max_distance_km: float, time_utc: np.ndarray, lat: np.ndarray, lon: np.ndarray
) -> FeatureGroup:
    """Features from a CSV of points (``time_utc``, ``lat``, ``lon`` + one column per feature,
    headers ``name`` or ``name [unit]``): each sample takes the nearest point in space among
    those within ``max_time_s``, if within ``max_distance_km``; otherwise NaN (imputed later)."""
    import pandas as pd

    if not file.is_file():
        raise ER2ImportError(f"{file}: feature table not found")
    try:
        df = pd.read_csv(file)
    except (ValueError, OSError) as exc:
        raise ER2ImportError(f"{file}: feature table: expected a CSV file; {exc}") from None
    missing = [c for c in ("time_utc", "lat", "lon") if c not in df.columns]
    cols = [c for c in df.columns if c not in ("time_utc", "lat", "lon")]
    if missing or not cols:
        raise ER2ImportError(
            f"{file}: feature table: expected columns time_utc, lat, lon and at least one feature; "
            f"found {list(df.columns)}"
        )
    T, la, lo = (df[c].to_numpy(float) for c in ("time_utc", "lat", "lon"))
    V = df[cols].to_numpy(np.float32)
    out = np.full((len(time_utc), len(cols)), np.nan, np.float32)
    r = np.deg2rad
    for i, (t, a, b) in enumerate(zip(time_utc, lat, lon, strict=True)):
        near = np.flatnonzero(np.abs(T - t) <= max_time_s)
        if not len(near):
            continue
        d = (
            2
            * 6371.0
            * np.arcsin(
                np.sqrt(
                    np.sin(r(la[near] - a) / 2) ** 2
                    + np.cos(r(a)) * np.cos(r(la[near])) * np.sin(r(lo[near] - b) / 2) ** 2
                )
            )
        )
        j = int(np.argmin(d + 1e-9 * np.abs(T[near] - t)))
        if d[j] <= max_distance_km:
            out[i] = V[near[j]]
    names = [c.split("[")[0].strip() for c in cols]
    units = [c.split("[", 1)[1].rstrip("]").strip() if "[" in c else "" for c in cols]
    return FeatureGroup(out, names, units)
