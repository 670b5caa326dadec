"""The ER-2 import config: one YAML (paths relative to it), type-checked like every other config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbhlib.config import read_yaml
from cbhlib.errors import ER2ImportError, ParamsError
from cbhlib.fields import opt, parse_dataclass


@dataclass
class FlightFiles:
    """One flight's raw files."""

    name: str = opt("", "flight name, e.g. 10Feb25 (unique)")
    camera: str = opt("", "IRAI L1B HDF5 file (Product/Signal, Time/TimeUTC)")
    lidar: str = opt("", "CPL L2 layer HDF5 file (its name ends in the date, e.g. ..._10feb25.hdf5)")
    navigation: str = opt("", "navigation file (nav/solarZenith, nav/sunAzGrd, nav/IWG_lat, nav/IWG_lon)")
    campaign: str = opt("", "field campaign, e.g. GLOVE")


@dataclass
class FeatureTable:
    """Features attached by time and position from a CSV of points."""

    group: str = opt("", "feature group to fill, e.g. era5")
    file: str = opt("", "CSV with time_utc, lat, lon and one column per feature ('t2m [K]')")
    max_time_s: float = opt(3600.0, "a point serves samples within this many seconds", above=0)
    max_distance_km: float = opt(50.0, "and within this distance", above=0)


@dataclass
class ImportConfig:
    """A campaign import (YAML; paths relative to the YAML's folder)."""

    flights: list[dict[str, Any]] = opt([], "one entry per flight, in fold order")
    cbh_range_km: list[float] = opt([0.1, 2.0], "keep lowest-layer bases in this range [low, high]", min=0, max=20)
    time_tolerance_s: float = opt(0.5, "a profile labels the nearest camera frame within this", above=0)
    image_rows: list[int] = opt([40, 480], "rows of Product/Signal to keep [start, stop)", min=0)
    frames_per_sample: int = opt(1, "odd; neighbouring frames stacked as channels", min=1, max=63)
    ocean_surface_km: float = opt(0.9, "ocean: DEM altitude 0 and |lidar surface| within this", min=0)
    unlabelled_every: int = opt(
        10, "keep every n-th camera frame no profile labels as the unlabelled pool (0: none)", min=0
    )
    wp1_features: str = opt("", "WP1 shadow features HDF5 (optional) -> features/geometric")
    wp2_features: str = opt("", "WP2 ERA5 features HDF5 (optional) -> features/era5")
    feature_tables: list[dict[str, Any]] = opt([], "CSV point tables attached by time and position (optional)")
    source: str = opt("er2-import", "the campaign's source attribute")
    # resolved by load_import_config
    base: Path = field(default=Path("."), repr=False)
    flight_files: list[FlightFiles] = field(default_factory=list, repr=False)
    tables: list[FeatureTable] = field(default_factory=list, repr=False)

    def path(self, rel: str) -> Path:
        return self.base / rel

    def inputs(self) -> list[Path]:
        """Every file this import reads (a writer must never replace one of them)."""
        out = [self.path(p) for f in self.flight_files for p in (f.camera, f.lidar, f.navigation)]
        out += [self.path(p) for p in (self.wp1_features, self.wp2_features) if p]
        return out + [self.path(t.file) for t in self.tables]


def load_import_config(path: str | Path) -> ImportConfig:
    """Read and check an import YAML: unknown keys, wrong types, duplicates, each one line."""
    path = Path(path)
    raw = read_yaml(path)
    for key in ("base", "flight_files", "tables"):
        if key in raw:
            raise ParamsError(path, key, "a setting of the import", "an unknown key")
    try:
        cfg: ImportConfig = parse_dataclass(ImportConfig, raw, path)
        if not cfg.flights:
            raise ParamsError(path, "flights", "a list of flights (name, camera, lidar, navigation)", "none")
        cfg.base = path.parent
        cfg.flight_files = [parse_dataclass(FlightFiles, f, path, f"flights[{i}].") for i, f in enumerate(cfg.flights)]
        cfg.tables = [
            parse_dataclass(FeatureTable, t, path, f"feature_tables[{i}].") for i, t in enumerate(cfg.feature_tables)
        ]
    except ParamsError as exc:
        raise ER2ImportError(str(exc)) from None
    for i, f in enumerate(cfg.flight_files):
        missing = [k for k in ("name", "camera", "lidar", "navigation") if not getattr(f, k)]
        if missing:
            raise ER2ImportError(f"{path}: flights[{i}]: expected {', '.join(missing)}; found none")
    names = [f.name for f in cfg.flight_files]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ER2ImportError(f"{path}: flights: expected unique names; found '{dup}' twice")
    for role in ("camera", "lidar"):
        files = [cfg.path(getattr(f, role)).resolve() for f in cfg.flight_files]
        twice = next((p for p in files if files.count(p) > 1), None)
        if twice:
            raise ER2ImportError(
                f"{path}: flights: expected each flight's own {role} file; found {twice.name} listed "
                "twice (the same flight twice would let a model be tested on its training data)"
            )
    lo, hi = (cfg.cbh_range_km + [None, None])[:2]
    if len(cfg.cbh_range_km) != 2 or lo >= hi:
        raise ER2ImportError(f"{path}: 'cbh_range_km': expected [low, high] with low < high; found {cfg.cbh_range_km}")
    if len(cfg.image_rows) != 2 or cfg.image_rows[0] >= cfg.image_rows[1]:
        raise ER2ImportError(f"{path}: 'image_rows': expected [start, stop] with start < stop; found {cfg.image_rows}")
    if cfg.frames_per_sample % 2 == 0:
        raise ER2ImportError(
            f"{path}: 'frames_per_sample': expected an odd number >= 1 (centred on the frame); "
            f"found {cfg.frames_per_sample}"
        )
    return cfg
