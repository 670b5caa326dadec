"""Import real ER-2 flights (camera, CPL lidar, navigation files) into a campaign file.

Follows the rules of ../shared/reference/er2-data-facts.md:

* camera (IRAI L1B, HDF5): ``Product/Signal[frame, row, col]`` (rows ``image_rows`` kept),
  ``Time/TimeUTC[frame]`` POSIX seconds;
* lidar (CPL L2 layer product, HDF5): ``layer_descriptor/Layer_Base_Altitude[profile, layer]``
  km (-9999: none; layer 0 is the label), ``Profile_Decimal_Julian_Day[:, 0]``, surface and
  DEM altitudes (m), ``geolocation/...``;
* navigation (``.hdf`` read as HDF5, HDF4 through the optional ``pyhdf``):
  ``nav/solarZenith``, ``nav/sunAzGrd``, ``nav/IWG_lat``, ``nav/IWG_lon`` per frame.

Matching: ocean profiles (DEM altitude 0, lidar surface within 0.9 km) with a finite lowest
base inside the CBH range label the camera frame nearest in time within the tolerance;
when several profiles pick one frame, the later wins. The cascade (read, valid, in range,
over ocean, matched) is printed and stored in the file's attributes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cbhlib.campaign import CampaignData, FeatureGroup, write_campaign
from cbhlib.errors import ER2ImportError
from cbhlib.config import read_yaml as load_params_yaml

HDF4_MAGIC = b"\x0e\x03\x13\x01"
WP2_NAMES = ["blh", "lcl", "inversion_height", "moisture_gradient", "stability_index", "t2m", "d2m", "sp", "tcwv"]
WP2_UNITS = ["km", "km", "km", "g/kg/km", "K/km", "K", "K", "Pa", "kg/m2"]
WP1_USED = ["derived_geometric_H", "shadow_length_pixels", "shadow_detection_confidence"]
WP1_UNITS = ["km", "pixels", "1"]


@dataclass
class FlightFiles:
    name: str
    camera: Path
    lidar: Path
    navigation: Path
    campaign: str = ""


@dataclass
class ImportConfig:
    """A campaign import (YAML; paths relative to the YAML's folder)."""

    flights: list[FlightFiles]
    cbh_range_km: tuple[float, float] = (0.1, 2.0)
    time_tolerance_s: float = 0.5
    image_rows: tuple[int, int] = (40, 480)
    frames_per_sample: int = 1
    ocean_surface_km: float = 0.9
    wp1_features: Path | None = None
    wp2_features: Path | None = None
    feature_tables: list[dict[str, Any]] = field(default_factory=list)
    source: str = "er2-import"


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
        return (f"{self.flight}: {self.read} profiles read -> {self.valid} valid -> {self.in_range} in range -> "
                f"{self.over_ocean} over ocean -> {self.matched} matched frames")


@dataclass
class FlightSamples:
    frames: np.ndarray  # camera frame index per sample, time order
    cbh_km: np.ndarray
    time_utc: np.ndarray
    sza: np.ndarray
    saa: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    cascade: Cascade = field(default_factory=lambda: Cascade(""))


# --------------------------------------------------------------------------- config


def load_config(path: str | Path) -> ImportConfig:
    """Read and check an import YAML (``yaml.safe_load``)."""
    path = Path(path)
    raw = load_params_yaml(path)
    base = path.parent
    known = {"flights", "cbh_range_km", "time_tolerance_s", "image_rows", "frames_per_sample", "ocean_surface_km",
             "wp1_features", "wp2_features", "feature_tables", "source"}
    unknown = set(raw) - known
    if unknown:
        raise ER2ImportError(f"{path}: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
    flights_raw = raw.get("flights")
    if not isinstance(flights_raw, list) or not flights_raw:
        raise ER2ImportError(f"{path}: 'flights': expected a list of flights (name, camera, lidar, navigation); "
                             f"found {flights_raw!r}")
    flights = []
    for i, f in enumerate(flights_raw):
        missing = [k for k in ("name", "camera", "lidar", "navigation") if not isinstance(f, dict) or k not in f]
        if missing:
            raise ER2ImportError(f"{path}: flights[{i}]: missing {', '.join(missing)}")
        flights.append(FlightFiles(str(f["name"]), base / f["camera"], base / f["lidar"], base / f["navigation"],
                                   str(f.get("campaign", ""))))

    def pair(key: str, default: tuple[float, float], cast: type) -> tuple[Any, Any]:
        v = raw.get(key, list(default))
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ER2ImportError(f"{path}: '{key}': expected two numbers [low, high]; found {v!r}")
        return cast(v[0]), cast(v[1])

    cfg = ImportConfig(
        flights=flights,
        cbh_range_km=pair("cbh_range_km", (0.1, 2.0), float),
        time_tolerance_s=float(raw.get("time_tolerance_s", 0.5)),
        image_rows=pair("image_rows", (40, 480), int),
        frames_per_sample=int(raw.get("frames_per_sample", 1)),
        ocean_surface_km=float(raw.get("ocean_surface_km", 0.9)),
        wp1_features=base / raw["wp1_features"] if raw.get("wp1_features") else None,
        wp2_features=base / raw["wp2_features"] if raw.get("wp2_features") else None,
        source=str(raw.get("source", "er2-import")),
        feature_tables=_feature_tables(raw.get("feature_tables", []), base, path),
    )
    if cfg.frames_per_sample < 1 or cfg.frames_per_sample % 2 == 0:
        raise ER2ImportError(f"{path}: 'frames_per_sample': expected an odd number >= 1 (centred on the frame); "
                             f"found {cfg.frames_per_sample}")
    return cfg


def _feature_tables(raw: Any, base: Path, path: Path) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ER2ImportError(f"{path}: 'feature_tables': expected a list of {{group, file, max_time_s, max_distance_km}}")
    out = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict) or "group" not in t or "file" not in t:
            raise ER2ImportError(f"{path}: feature_tables[{i}]: expected 'group' and 'file'; found {t!r}")
        out.append({"group": str(t["group"]), "file": base / t["file"],
                    "max_time_s": float(t.get("max_time_s", 3600.0)),
                    "max_distance_km": float(t.get("max_distance_km", 50.0))})
    return out


# --------------------------------------------------------------------------- reading


def _open(path: Path, role: str) -> h5py.File:
    if not path.is_file():
        raise ER2ImportError(f"{path}: {role} file not found")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:4] == HDF4_MAGIC:
        raise _Hdf4(path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ER2ImportError(f"{path}: {role} file: expected a readable HDF5 file; found one h5py cannot open "
                             f"({str(exc).splitlines()[0]})") from None


class _Hdf4(Exception):
    def __init__(self, path: Path) -> None:
        self.path = path


def _read(f: h5py.File, key: str, path: Path, role: str, rank: tuple[int, ...] = (1,)) -> np.ndarray:
    if key not in f or not isinstance(f[key], h5py.Dataset):
        raise ER2ImportError(f"{path}: {role} file: dataset '{key}' is missing")
    ds = f[key]
    if ds.ndim not in rank:
        raise ER2ImportError(f"{path}: {role} file: '{key}': expected rank {' or '.join(map(str, rank))}; "
                             f"found shape {ds.shape}")
    return ds[()]


def _first_col(a: np.ndarray) -> np.ndarray:
    return a[:, 0] if a.ndim == 2 else a


def read_navigation(path: Path, n_frames: int) -> dict[str, np.ndarray]:
    """Solar angles and position per camera frame (fill rules of the earlier pipeline)."""
    keys = {"sza": "nav/solarZenith", "saa": "nav/sunAzGrd", "lat": "nav/IWG_lat", "lon": "nav/IWG_lon"}
    try:
        with _open(path, "navigation") as f:
            out = {k: np.asarray(_read(f, v, path, "navigation"), float) for k, v in keys.items()}
    except _Hdf4:
        out = _read_hdf4_nav(path, keys)
    for k, v in out.items():
        if len(v) < n_frames:
            raise ER2ImportError(f"{path}: navigation file: '{keys[k]}': expected at least {n_frames} values "
                                 f"(one per camera frame); found {len(v)}")
        out[k] = v[:n_frames].copy()
    sza = out["sza"]
    if np.isnan(sza).all():
        raise ER2ImportError(f"{path}: navigation file: 'nav/solarZenith': expected some finite values; found all NaN")
    sza[np.isnan(sza)] = np.nanmean(sza)
    saa = out["saa"]
    saa[np.isnan(saa)] = 0.0
    out["saa"] = np.mod(saa, 360.0)
    return out


def _read_hdf4_nav(path: Path, keys: dict[str, str]) -> dict[str, np.ndarray]:
    try:
        from pyhdf.SD import SD, SDC  # type: ignore[import-not-found]
    except ImportError:
        raise ER2ImportError(f"{path}: navigation file is HDF4, which needs the optional extra: "
                             "pip install 'cbhlib[hdf4]' (pyhdf)") from None
    sd = SD(str(path), SDC.READ)
    names = sd.datasets()
    out = {}
    for k, v in keys.items():
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
        raise ER2ImportError(f"{path}: lidar file name: expected it to end (before the first dot) in a date like "
                             f"'10feb25'; found '{stem}'")
    return 2000 + int(m.group(3))


def julian_to_posix(jday: np.ndarray, year: int) -> np.ndarray:
    """Decimal Julian day (integer part: day of year; fraction: time of day) -> POSIX seconds.

    The day is the first profile's; a drop of the fraction by more than 0.2 between
    consecutive profiles is a midnight rollover and adds one day from there on.
    """
    jday = np.asarray(jday, float)
    frac = jday - np.floor(jday)
    rollover = np.concatenate([[0], np.cumsum(np.diff(frac) < -0.2)])
    start = datetime(year, 1, 1, tzinfo=timezone.utc).timestamp()
    day0 = np.floor(jday[0]) - 1
    return start + (day0 + rollover + frac) * 86400.0


def match_flight(ff: FlightFiles, cfg: ImportConfig, cam_time: np.ndarray) -> FlightSamples:
    """Apply the lidar rules and match profiles to camera frames."""
    path = ff.lidar
    with _open(path, "lidar") as f:
        base = np.asarray(_read(f, "layer_descriptor/Layer_Base_Altitude", path, "lidar", (1, 2)), float)
        jd = _first_col(np.asarray(_read(f, "layer_descriptor/Profile_Decimal_Julian_Day", path, "lidar", (1, 2)), float))
        surf = _first_col(np.asarray(_read(f, "layer_descriptor/Lidar_Surface_Altitude", path, "lidar", (1, 2)), float))
        dem = _first_col(np.asarray(_read(f, "layer_descriptor/DEM_Surface_Altitude", path, "lidar", (1, 2)), float))
    base0 = base[:, 0] if base.ndim == 2 else base
    n = len(base0)
    for name, arr in (("Profile_Decimal_Julian_Day", jd), ("Lidar_Surface_Altitude", surf), ("DEM_Surface_Altitude", dem)):
        if len(arr) != n:
            raise ER2ImportError(f"{path}: lidar file: 'layer_descriptor/{name}': expected {n} profiles (as "
                                 f"Layer_Base_Altitude); found {len(arr)} (length mismatch)")
    t = julian_to_posix(jd, year_from_lidar_name(path))
    c = Cascade(ff.name, read=n)
    valid = np.isfinite(base0) & (base0 > -999)
    c.valid = int(valid.sum())
    lo, hi = cfg.cbh_range_km
    in_range = valid & (base0 >= lo) & (base0 <= hi)
    c.in_range = int(in_range.sum())
    ocean = in_range & (dem == 0) & (np.abs(surf) / 1000.0 <= cfg.ocean_surface_km)
    c.over_ocean = int(ocean.sum())
    # nearest camera frame in time
    order = np.argsort(cam_time, kind="stable")
    ct = cam_time[order]
    prof = np.flatnonzero(ocean)
    pos = np.clip(np.searchsorted(ct, t[prof]), 1, max(len(ct) - 1, 1))
    left, right = ct[pos - 1], ct[np.minimum(pos, len(ct) - 1)]
    nearest = np.where(np.abs(t[prof] - left) <= np.abs(right - t[prof]), pos - 1, pos)
    nearest = np.minimum(nearest, len(ct) - 1)
    dt = np.abs(ct[nearest] - t[prof])
    ok = dt <= cfg.time_tolerance_s
    label: dict[int, float] = {}
    for p, fr in zip(prof[ok], order[nearest[ok]]):
        label[int(fr)] = float(base0[p])  # profiles in file order: the later one wins
    c.matched = len(label)
    frames = np.array(sorted(label, key=lambda fr: cam_time[fr]), dtype=np.int64)
    cbh = np.array([label[int(fr)] for fr in frames], dtype=np.float32)
    return FlightSamples(frames, cbh, cam_time[frames] if len(frames) else np.array([]),
                         np.array([]), np.array([]), np.array([]), np.array([]), c)


# --------------------------------------------------------------------------- features


def _read_wp2(path: Path, n: int) -> FeatureGroup:
    with _open(path, "WP2 features") as f:
        X = np.asarray(_read(f, "features", path, "WP2 features", (2,)), np.float32)
        names_raw = _read(f, "feature_names", path, "WP2 features")
        idx = np.asarray(_read(f, "sample_indices", path, "WP2 features"), np.int64) if "sample_indices" in f else np.arange(len(X))
    names = [v.decode() if isinstance(v, bytes) else str(v) for v in names_raw]
    if len(names) != X.shape[1]:
        raise ER2ImportError(f"{path}: WP2 features: 'feature_names': expected {X.shape[1]} names (columns of "
                             f"'features'); found {len(names)}")
    return FeatureGroup(_align(X, idx, n, path, "WP2 features", "sample_indices"), names,
                        [dict(zip(WP2_NAMES, WP2_UNITS)).get(nm, "") for nm in names])


def _read_wp1(path: Path, n: int) -> FeatureGroup:
    with _open(path, "WP1 features") as f:
        cols = [np.asarray(_read(f, k, path, "WP1 features"), np.float32) for k in WP1_USED]
        idx = np.asarray(_read(f, "sample_id", path, "WP1 features"), np.int64) if "sample_id" in f else np.arange(len(cols[0]))
    lengths = {len(c) for c in cols} | {len(idx)}
    if len(lengths) != 1:
        raise ER2ImportError(f"{path}: WP1 features: expected {', '.join(WP1_USED)} and sample_id of equal length; "
                             f"found lengths {sorted(lengths)}")
    return FeatureGroup(_align(np.stack(cols, 1), idx, n, path, "WP1 features", "sample_id"), list(WP1_USED), list(WP1_UNITS))


def attach_by_time_and_position(table: dict[str, Any], time_utc: np.ndarray, lat: np.ndarray,
                                lon: np.ndarray) -> FeatureGroup:
    """Features from a CSV of points (``time_utc``, ``lat``, ``lon`` + one column per feature,
    headers ``name`` or ``name [unit]``): each sample takes the nearest point in space among
    those within ``max_time_s``, if within ``max_distance_km``; otherwise NaN (imputed later)."""
    import pandas as pd

    path = Path(table["file"])
    if not path.is_file():
        raise ER2ImportError(f"{path}: feature table not found")
    try:
        df = pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise ER2ImportError(f"{path}: feature table: expected a CSV file; {exc}") from None
    missing = [c for c in ("time_utc", "lat", "lon") if c not in df.columns]
    cols = [c for c in df.columns if c not in ("time_utc", "lat", "lon")]
    if missing or not cols:
        raise ER2ImportError(f"{path}: feature table: expected columns time_utc, lat, lon and at least one feature; "
                             f"found {list(df.columns)}")
    T, la, lo = (df[c].to_numpy(float) for c in ("time_utc", "lat", "lon"))
    V = df[cols].to_numpy(np.float32)
    out = np.full((len(time_utc), len(cols)), np.nan, np.float32)
    r = np.deg2rad
    for i, (t, a, b) in enumerate(zip(time_utc, lat, lon)):
        near = np.flatnonzero(np.abs(T - t) <= table["max_time_s"])
        if not len(near):
            continue
        d = 2 * 6371.0 * np.arcsin(np.sqrt(np.sin(r(la[near] - a) / 2) ** 2 + np.cos(r(a)) * np.cos(r(la[near]))
                                           * np.sin(r(lo[near] - b) / 2) ** 2))
        j = int(np.argmin(d + 1e-9 * np.abs(T[near] - t)))
        if d[j] <= table["max_distance_km"]:
            out[i] = V[near[j]]
    names = [c.split("[")[0].strip() for c in cols]
    units = [c.split("[", 1)[1].rstrip("]").strip() if "[" in c else "" for c in cols]
    return FeatureGroup(out, names, units)


def _align(X: np.ndarray, idx: np.ndarray, n: int, path: Path, role: str, key: str) -> np.ndarray:
    if len(X) != n:
        raise ER2ImportError(f"{path}: {role}: expected {n} rows (one per imported sample); found {len(X)}")
    if len(idx) != n or set(idx.tolist()) != set(range(n)):
        bad = sorted(set(idx.tolist()) - set(range(n)))[:3]
        raise ER2ImportError(f"{path}: {role}: '{key}': expected each of 0..{n - 1} once; found "
                             f"{len(set(idx.tolist()))} distinct values" + (f", e.g. out of range {bad}" if bad else ""))
    out = np.empty_like(X)
    out[idx] = X
    return out


# --------------------------------------------------------------------------- import


def import_campaign(config_path: str | Path, output: str | Path, verbose: bool = True) -> list[Cascade]:
    """Import every flight of ``config_path`` into the campaign file ``output``."""
    cfg = load_config(config_path)
    r0, r1 = cfg.image_rows
    per_flight: list[FlightSamples] = []
    cams: list[tuple[Path, np.ndarray]] = []
    for ff in cfg.flights:
        with _open(ff.camera, "camera") as f:
            cam_time = np.asarray(_read(f, "Time/TimeUTC", ff.camera, "camera"), float)
            sig = f["Product/Signal"] if "Product/Signal" in f else None
            if sig is None:
                raise ER2ImportError(f"{ff.camera}: camera file: dataset 'Product/Signal' is missing")
            if sig.ndim != 3:
                raise ER2ImportError(f"{ff.camera}: camera file: 'Product/Signal': expected [frame, row, column]; "
                                     f"found shape {sig.shape}")
            if sig.shape[0] != len(cam_time):
                raise ER2ImportError(f"{ff.camera}: camera file: 'Product/Signal' has {sig.shape[0]} frames but "
                                     f"'Time/TimeUTC' has {len(cam_time)} (length mismatch)")
            if not (0 <= r0 < r1 <= sig.shape[1]):
                raise ER2ImportError(f"{ff.camera}: camera file: image_rows {r0}:{r1} expected within the "
                                     f"{sig.shape[1]} rows of 'Product/Signal'")
        fs = match_flight(ff, cfg, cam_time)
        nav = read_navigation(ff.navigation, len(cam_time))
        fs.sza, fs.saa = nav["sza"][fs.frames], nav["saa"][fs.frames]
        fs.lat, fs.lon = nav["lat"][fs.frames], nav["lon"][fs.frames]
        if verbose:
            print(fs.cascade.line())
        per_flight.append(fs)
        cams.append((ff.camera, cam_time))
    keep = [k for k, fs in enumerate(per_flight) if len(fs.frames) >= 2]
    dropped = [cfg.flights[k].name for k in range(len(cfg.flights)) if k not in keep]
    if not keep:
        raise ER2ImportError(f"{config_path}: no flight has at least 2 matched samples; nothing to import")
    if dropped and verbose:
        print(f"flights with fewer than 2 matched samples left out: {', '.join(dropped)}")
    flights = [cfg.flights[k] for k in keep]
    samples = [per_flight[k] for k in keep]
    cat = lambda a: np.concatenate([getattr(s, a) for s in samples])  # noqa: E731
    n = sum(len(s.frames) for s in samples)
    features = {}
    if cfg.wp2_features:
        features["era5"] = _read_wp2(cfg.wp2_features, n)
    if cfg.wp1_features:
        features["geometric"] = _read_wp1(cfg.wp1_features, n)
    for table in cfg.feature_tables:
        if table["group"] in features:
            raise ER2ImportError(f"{config_path}: feature_tables: group '{table['group']}' is already filled")
        fg = attach_by_time_and_position(table, cat("time_utc"), cat("lat"), cat("lon"))
        all_nan = np.isnan(fg.values).all(axis=0)
        if all_nan.any():
            raise ER2ImportError(f"{table['file']}: feature table: column '{fg.names[int(np.flatnonzero(all_nan)[0])]}' "
                                 f"matched no sample within {table['max_time_s']:g} s and {table['max_distance_km']:g} km")
        features[table["group"]] = fg
    cascades = [s.cascade for s in per_flight]
    data = CampaignData(
        flight_names=[f.name for f in flights], flight_campaigns=[f.campaign for f in flights],
        flight=np.concatenate([np.full(len(s.frames), k) for k, s in enumerate(samples)]),
        cbh_km=cat("cbh_km"), time_utc=cat("time_utc"), sza_deg=cat("sza"), saa_deg=cat("saa"),
        lat=cat("lat"), lon=cat("lon"), source=cfg.source, features=features,
        attrs={"import_cascade": json.dumps([c.__dict__ for c in cascades]),
               "import_config": json.dumps({"cbh_range_km": cfg.cbh_range_km, "time_tolerance_s": cfg.time_tolerance_s,
                                            "image_rows": cfg.image_rows, "frames_per_sample": cfg.frames_per_sample})},
    )
    with h5py.File(cams[keep[0]][0], "r") as f:
        dtype = "uint16" if f["Product/Signal"].dtype == np.uint16 else "float32"
        W = f["Product/Signal"].shape[2]
    shape = (cfg.frames_per_sample, r1 - r0, W)

    def blocks():  # noqa: ANN202
        start = 0
        half = cfg.frames_per_sample // 2
        for k, s in zip(keep, samples):
            with h5py.File(cams[k][0], "r") as f:
                sig = f["Product/Signal"]
                if sig.shape[2] != W:
                    raise ER2ImportError(f"{cams[k][0]}: camera file: expected {W} columns like the first flight; "
                                         f"found {sig.shape[2]}")
                for j, fr in enumerate(s.frames):
                    lo, hi = int(fr) - half, int(fr) + half + 1
                    idx = np.clip(np.arange(lo, hi), 0, sig.shape[0] - 1)
                    block = np.stack([sig[int(i), r0:r1, :] for i in idx])[None]
                    yield start + j, block
            start += len(s.frames)

    write_campaign(output, data, images=blocks(), image_shape=shape, image_dtype=dtype)
    if verbose:
        print(f"wrote {output}: {n} samples in {len(flights)} flights, images {shape}")
    return cascades
