"""The campaign file: one HDF5 layout that every source becomes (rules in ``contract.py``).

Reading is lazy: small arrays are read (and validated) once on open; the h5py handle for
images is opened on first use in each process (DataLoader workers open their own).
Writing is atomic and validated before the rename.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from cbhlib.atomic import atomic_path, check_room
from cbhlib.data.contract import FORMAT, FORMAT_VERSION, OPTIONAL_SAMPLES, FeatureGroup, read_tables
from cbhlib.data.h5safe import open_h5
from cbhlib.data.imagewrite import ImageSource, campaign_bytes, write_images
from cbhlib.data.pixels import scan_pixels
from cbhlib.errors import CampaignFormatError, CbhError

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["Campaign", "CampaignData", "FeatureGroup", "write_campaign", "validate_campaign", "iter_image_batches"]


@dataclass
class CampaignData:
    """Everything but the pixels of a campaign, in memory; the writer's input.

    ``unlabelled_flight`` (M,) names the flight of each unlabelled camera frame (no lidar
    label); the frames themselves are passed to :func:`write_campaign` as ``unlabelled``.
    ``cbh_km`` None: an inputs-only campaign (for ``cbh predict``); ``sza_deg``/``saa_deg``
    None: not written (no model uses them; :func:`cbhlib.data.solar.solar_angles` computes them).
    """

    flight_names: list[str]
    flight: np.ndarray
    cbh_km: np.ndarray | None
    time_utc: np.ndarray
    sza_deg: np.ndarray | None
    saa_deg: np.ndarray | None
    source: str
    flight_campaigns: list[str] | None = None
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None
    features: dict[str, FeatureGroup] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    truth_attrs: dict[str, object] = field(default_factory=dict)
    attrs: dict[str, object] = field(default_factory=dict)
    unlabelled_flight: np.ndarray | None = None
    unlabelled_time_utc: np.ndarray | None = None
    row_order: np.ndarray | None = None  # built from a table: each sample's source row (not written)

    @property
    def n_samples(self) -> int:
        return int(len(self.flight))


# --------------------------------------------------------------------------- writing


def write_campaign(
    path: str | os.PathLike,
    data: CampaignData,
    images: ImageSource | None = None,
    image_shape: tuple[int, int, int] | None = None,
    image_dtype: str = "float32",
    unlabelled: ImageSource | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a campaign file atomically (unique temporary file, validated, then renamed).

    Args:
        path: destination ``.h5``; an existing file is replaced only with ``overwrite``
            (it may be an input that finished runs rest on).
        data: labels, metadata and features (and ``unlabelled_flight`` with ``unlabelled``).
        images: None, an (N, C, H, W) array, or an iterable of ``(start, block)`` with
            blocks of shape (n, C, H, W), for streaming large image sets. For a campaign
            built from a table (:func:`cbhlib.data.tabular.campaign_from_dataframe`), the
            array is in the table's row order: each image is written beside its row's
            sample (``data.row_order``).
        image_shape: (C, H, W); required when ``images`` is an iterable.
        image_dtype: ``float32`` or ``uint16``.
        unlabelled: camera frames without labels, (M, C, H, W) or ``(start, block)`` blocks.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.is_dir() or (path.exists() and not overwrite):
        raise CbhError(
            f"{path}: expected a new campaign file name; found an existing {'folder' if path.is_dir() else 'file'}"
            + ("" if path.is_dir() else " (finished runs may rest on it: pass overwrite=True to replace it)")
        )
    for group in data.features:
        if not isinstance(group, str) or not group.strip() or "/" in group:
            raise CampaignFormatError(
                path, f"features/{group}", "a feature group name without '/' (HDF5 would nest it)", repr(group)
            )
    n_pool = 0 if data.unlabelled_flight is None else len(data.unlabelled_flight)
    pools = [(images, data.n_samples), (unlabelled, n_pool)]
    check_room(path, campaign_bytes(data, [(src, n) for src, n in pools if src is not None], image_shape, image_dtype))
    with atomic_path(path) as tmp:
        # no chunk cache: each image chunk is written when assigned, so a full disk or a file-size limit fails
        # there, and no dataset is left holding unwritten chunks that HDF5 flushes (and crashes on) at exit
        with h5py.File(tmp, "w", rdcc_nbytes=0) as f:
            _write_tables(f, data)
            if images is not None:
                image_shape = write_images(
                    f, "images", data.n_samples, images, image_shape, image_dtype, path, data.row_order
                )
            if unlabelled is not None:
                if data.unlabelled_flight is None:
                    raise ValueError("unlabelled frames need data.unlabelled_flight")
                n_pool = len(data.unlabelled_flight)
                write_images(f, "unlabelled/images", n_pool, unlabelled, image_shape, image_dtype, path)
        try:
            Campaign(tmp)  # every contract rule but the pixel scan, before the rename
        except CampaignFormatError as exc:  # name the output, not its temporary file (removed on the way out)
            raise CampaignFormatError(path, exc.where, exc.expected, exc.found) from None
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
    f.create_dataset("samples/time_utc", data=np.asarray(d.time_utc, dtype=np.float64))
    for key in OPTIONAL_SAMPLES:  # cbh_km, sza_deg, saa_deg, lat, lon: written where given
        value = getattr(d, key)
        if value is not None:
            f.create_dataset(f"samples/{key}", data=np.asarray(value, dtype=np.float32))
    for group, fg in d.features.items():
        ds = f.create_dataset(f"features/{group}/values", data=np.asarray(fg.values, np.float32))
        names = f.create_dataset(f"features/{group}/names", data=_str_array(fg.names))
        names.attrs["units"] = _str_array(fg.units)
        ds.attrs["units"] = _str_array(fg.units)
    if d.unlabelled_flight is not None:
        f.create_dataset("unlabelled/flight", data=np.asarray(d.unlabelled_flight, dtype=np.int32))
        if d.unlabelled_time_utc is not None:
            f.create_dataset("unlabelled/time_utc", data=np.asarray(d.unlabelled_time_utc, dtype=np.float64))
    for key, value in d.truth.items():
        f.create_dataset(f"truth/{key}", data=value)
    if d.truth or d.truth_attrs:
        grp = f.require_group("truth")
        for key, value in d.truth_attrs.items():
            grp.attrs[key] = value


# --------------------------------------------------------------------------- reading

_FINGERPRINTS: dict[tuple[str, int, int, int], str] = {}


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, streamed once per process per file version (no HDF5 is opened)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _FINGERPRINTS[key] = h.hexdigest()
    return _FINGERPRINTS[key]


class Campaign:
    """A validated campaign file: small arrays in memory, images read lazily by index.

    Safe to pickle into DataLoader workers: the h5py handle is dropped and reopened in
    each process on first use.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with open_h5(self.path) as f:
            try:
                t = read_tables(f, self.path)
            except (OSError, KeyError, ValueError, TypeError, MemoryError) as exc:
                raise CampaignFormatError(
                    self.path,
                    "(file)",
                    "a readable campaign file",
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                ) from None
        self.flight_names = t.flight_names
        self.flight_campaigns = t.flight_campaigns
        self.flight = t.samples["flight"].astype(np.int64)
        self._cbh_km = t.samples["cbh_km"].astype(np.float32) if "cbh_km" in t.samples else None
        self.time_utc = t.samples["time_utc"]
        self.has_solar_angles = "sza_deg" in t.samples and "saa_deg" in t.samples
        nan = np.full(len(self.flight), np.nan, np.float32)  # absent angles read as NaN (no model uses them)
        self.sza_deg = t.samples["sza_deg"].astype(np.float32) if "sza_deg" in t.samples else nan
        self.saa_deg = t.samples["saa_deg"].astype(np.float32) if "saa_deg" in t.samples else nan.copy()
        self.lat = t.samples.get("lat")
        self.lon = t.samples.get("lon")
        self.features = t.features
        self.image_shape = t.image_shape
        self.image_dtype = t.image_dtype
        self.unlabelled_flight = t.unlabelled_flight
        self.unlabelled_time_utc = t.unlabelled_time
        self.source = t.source
        self.attrs = t.attrs
        self._h5: h5py.File | None = None
        self._pid: int | None = None

    # -- basic facts
    @property
    def n_samples(self) -> int:
        return int(len(self.flight))

    @property
    def has_labels(self) -> bool:
        """False for an inputs-only campaign (no ``samples/cbh_km``): ``cbh predict`` only."""
        return self._cbh_km is not None

    @property
    def cbh_km(self) -> np.ndarray:
        """The lidar labels (km); an inputs-only campaign raises one line here, where training or scoring starts."""
        if self._cbh_km is None:
            raise CampaignFormatError(
                self.path,
                "samples/cbh_km",
                "lidar labels (training, evaluation and the pipeline need them; cbh predict, validate and info do not)",
                "none: an inputs-only campaign",
            )
        return self._cbh_km

    @property
    def n_flights(self) -> int:
        return len(self.flight_names)

    @property
    def n_unlabelled(self) -> int:
        return 0 if self.unlabelled_flight is None else int(len(self.unlabelled_flight))

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
                raise CampaignFormatError(
                    self.path,
                    f"features/{g}",
                    "a feature group",
                    f"missing (groups present: {', '.join(self.features) or 'none'})",
                )
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
            self._h5 = open_h5(self.path)
            self._pid = os.getpid()
        return self._h5

    def images(self, indices: np.ndarray | list[int] | slice, pool: str = "labelled") -> np.ndarray:
        """Read images by index of the labelled samples (``pool="labelled"``) or of the
        unlabelled frames (``pool="unlabelled"``).

        Returns:
            (n, C, H, W) float32.
        """
        if not self.has_images:
            raise CampaignFormatError(
                self.path,
                "images",
                "an images dataset (needed by image modes)",
                "none: this campaign has no images; use physical_only or baselines",
            )
        key = "images" if pool == "labelled" else "unlabelled/images"
        if pool != "labelled" and self.n_unlabelled == 0:
            raise CampaignFormatError(self.path, key, "an unlabelled image pool", "none")
        ds = self.h5[key]
        if isinstance(indices, slice):
            out = ds[indices].astype(np.float32)
            base: int | None = indices.start or 0
        else:
            idx = np.asarray(indices, dtype=np.int64)
            order = np.argsort(idx, kind="stable")
            uniq, inverse = np.unique(idx[order], return_inverse=True)
            block = _read_rows(ds, uniq)
            out = np.empty((len(idx), *ds.shape[1:]), dtype=np.float32)
            out[order] = block[inverse]
            base = None
        if not np.isfinite(out).all():
            bad = int(np.flatnonzero(~np.isfinite(out.reshape(len(out), -1)).all(axis=1))[0])
            which = (base + bad) if base is not None else int(np.asarray(indices)[bad])
            raise CampaignFormatError(self.path, key, "finite pixel values", f"NaN or inf pixels in image {which}")
        return out

    def truth(self, key: str) -> np.ndarray | None:
        """A ``truth/`` dataset (synthetic campaigns), or None."""
        f = self.h5
        return f[f"truth/{key}"][()] if f"truth/{key}" in f else None

    def truth_attrs(self) -> dict[str, object]:
        f = self.h5
        return dict(f["truth"].attrs) if "truth" in f else {}

    def fingerprint(self) -> str:
        """sha256 of the file's bytes (:func:`file_fingerprint`)."""
        return file_fingerprint(self.path)

    def to_xarray(self, images: bool = False) -> xr.Dataset:
        """The labelled samples as an ``xarray.Dataset`` (see :func:`cbhlib.data.xarray_view.to_xarray`)."""
        from cbhlib.data.xarray_view import to_xarray

        return to_xarray(self, images)

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5, self._pid = None, None

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_h5"], state["_pid"] = None, None
        return state

    def __enter__(self) -> Campaign:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        img = "x".join(map(str, self.image_shape)) if self.image_shape else "none"
        pool = f", {self.n_unlabelled} unlabelled frames" if self.n_unlabelled else ""
        return (
            f"Campaign({self.path.name}: {self.n_samples} samples, {self.n_flights} flights, "
            f"features {[f'{g}[{len(v.names)}]' for g, v in self.features.items()]}, images {img}{pool})"
        )


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


def validate_campaign(path: str | os.PathLike, scan_images: bool = True) -> Campaign:
    """Check a campaign file against the contract; raise ``CampaignFormatError`` if broken.

    Args:
        path: the campaign file.
        scan_images: also stream all pixels, labelled and unlabelled (NaN/inf, constant set).
    """
    camp = Campaign(path)
    if scan_images and camp.has_images:
        scan_pixels(camp.path)
    return camp


def scan_image_pixels(path: str | os.PathLike, batch: int = 64) -> dict[str, float]:
    """Stream every image once (see :func:`cbhlib.data.contract.scan_pixels`)."""
    return scan_pixels(Path(path), batch=batch)


def iter_image_batches(
    camp: Campaign, indices: np.ndarray, batch: int, pool: str = "labelled"
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, images)`` batches in the given order; images (b, C, H, W) float32."""
    for start in range(0, len(indices), batch):
        idx = indices[start : start + batch]
        yield idx, camp.images(idx, pool)
