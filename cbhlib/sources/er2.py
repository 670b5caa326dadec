"""Import real ER-2 flights (camera, CPL lidar, navigation files) into a campaign file.

Matching (er2-data-facts.md): ocean profiles (DEM altitude 0, lidar surface within the
ocean limit) with a finite lowest base inside the CBH range label the camera frame
nearest in time within the tolerance; when several profiles pick one frame, the later
wins. The cascade (read, valid, in range, over ocean, matched) is logged and stored in
the file's attributes. Every ``unlabelled_every``-th camera frame that no profile labels
goes to the unlabelled pool (for MAE pretraining). The output is never one of the inputs
and an existing file is replaced only with ``force``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from cbhlib.atomic import refuse_overwrite
from cbhlib.data.campaign import CampaignData, write_campaign
from cbhlib.data.contract import fill_values
from cbhlib.errors import CampaignFormatError, ER2ImportError
from cbhlib.sources.er2_config import ImportConfig, load_import_config
from cbhlib.sources.er2_read import (
    Cascade,
    FlightSamples,
    attach_by_time_and_position,
    julian_to_posix,
    match_flight,
    open_h5,
    read,
    read_navigation,
    read_wp1,
    read_wp2,
    year_from_lidar_name,
)

__all__ = ["import_campaign", "julian_to_posix", "year_from_lidar_name", "ER2ImportError", "Cascade"]

log = logging.getLogger(__name__)


def _camera(cfg: ImportConfig, name: str, camera: Path) -> tuple[np.ndarray, tuple[int, int, int], str]:
    """Frame times, Signal shape and dtype of a camera file (checked)."""
    r0, r1 = cfg.image_rows
    with open_h5(camera, "camera") as f:
        cam_time = np.asarray(read(f, "Time/TimeUTC", camera, "camera"), float)
        sig = f["Product/Signal"] if "Product/Signal" in f else None
        if sig is None:
            raise ER2ImportError(f"{camera}: camera file: dataset 'Product/Signal' is missing")
        if sig.ndim != 3:
            raise ER2ImportError(
                f"{camera}: camera file: 'Product/Signal': expected [frame, row, column]; found shape {sig.shape}"
            )
        if sig.shape[0] != len(cam_time):
            raise ER2ImportError(
                f"{camera}: camera file: 'Product/Signal' has {sig.shape[0]} frames but "
                f"'Time/TimeUTC' has {len(cam_time)} (length mismatch)"
            )
        if not (0 <= r0 < r1 <= sig.shape[1]):
            raise ER2ImportError(
                f"{camera}: camera file: image_rows {r0}:{r1} expected within the "
                f"{sig.shape[1]} rows of 'Product/Signal'"
            )
        dtype = "uint16" if sig.dtype == np.uint16 else "float32"
        shape = tuple(int(s) for s in sig.shape)
    if not np.isfinite(cam_time).all():
        raise ER2ImportError(
            f"{camera}: camera file: 'Time/TimeUTC': expected finite POSIX seconds; found "
            f"{int((~np.isfinite(cam_time)).sum())} non-finite"
        )
    return cam_time, shape, dtype  # type: ignore[return-value]


def _unlabelled(frames: np.ndarray, cam_time: np.ndarray, every: int) -> np.ndarray:
    """Every n-th camera frame (in time) that no profile labels."""
    if every <= 0:
        return np.array([], np.int64)
    order = np.argsort(cam_time, kind="stable")
    free = order[~np.isin(order, frames)]
    return np.sort(free[::every])


def _blocks(camera: Path, frames: np.ndarray, cfg: ImportConfig, width: int) -> Iterator[np.ndarray]:
    """Images (1, C, H, W) of ``frames``; C neighbouring frames stacked; pixels checked."""
    r0, r1 = cfg.image_rows
    half = cfg.frames_per_sample // 2
    with h5py.File(camera, "r") as f:
        sig = f["Product/Signal"]
        if sig.shape[2] != width:
            raise ER2ImportError(
                f"{camera}: camera file: expected {width} columns like the first flight; found {sig.shape[2]}"
            )
        for fr in frames:
            idx = np.clip(np.arange(int(fr) - half, int(fr) + half + 1), 0, sig.shape[0] - 1)
            block = np.stack([sig[int(i), r0:r1, :] for i in idx])[None]
            if block.dtype.kind == "f" and not np.isfinite(block).all():
                raise ER2ImportError(
                    f"{camera}: camera file: 'Product/Signal': expected finite pixels; found NaN or "
                    f"inf in frame {int(fr)}"
                )
            yield block


def import_campaign(config_path: str | Path, output: str | Path, force: bool = False) -> list[Cascade]:
    """Import every flight of ``config_path`` into the campaign file ``output``.

    Returns:
        The matching cascade of every flight (also stored in the file's ``import_cascade``).
    """
    config_path, output = Path(config_path), Path(output)
    cfg = load_import_config(config_path)
    refuse_overwrite(output, [config_path, *cfg.inputs()], force, "campaign file")
    flights, samples, pools, cams = [], [], [], []
    cascades, dtype, width = [], "float32", 0
    for ff in cfg.flight_files:
        camera = cfg.path(ff.camera)
        cam_time, shape, dt = _camera(cfg, ff.name, camera)
        fs: FlightSamples = match_flight(
            ff.name,
            cfg.path(ff.lidar),
            cam_time,
            tuple(cfg.cbh_range_km),  # type: ignore[arg-type]
            cfg.time_tolerance_s,
            cfg.ocean_surface_km,
        )
        nav = read_navigation(cfg.path(ff.navigation), len(cam_time))
        fs.sza, fs.saa, fs.lat, fs.lon = (nav[k][fs.frames] for k in ("sza", "saa", "lat", "lon"))
        cascades.append(fs.cascade)
        log.info("%s", fs.cascade.line())
        if len(fs.frames) < 2:
            continue
        if not flights:
            dtype, width = dt, shape[2]
        flights.append(ff)
        samples.append(fs)
        pools.append(_unlabelled(fs.frames, cam_time, cfg.unlabelled_every))
        cams.append((camera, cam_time))
    left_out = [ff.name for ff in cfg.flight_files if ff not in flights]
    if len(flights) < 2:
        raise ER2ImportError(
            f"{config_path}: expected at least 2 flights with at least 2 matched samples "
            f"(leave-one-flight-out holds one out); found {len(flights)}"
            + (f" (left out: {', '.join(left_out)}: check the tolerance, range and clocks)" if left_out else "")
        )
    if left_out:
        log.warning("flights with fewer than 2 matched samples left out: %s", ", ".join(left_out))
    cat = lambda a: np.concatenate([getattr(s, a) for s in samples])
    n = sum(len(s.frames) for s in samples)
    features = {}
    if cfg.wp2_features:
        features["era5"] = read_wp2(cfg.path(cfg.wp2_features), n)
    if cfg.wp1_features:
        features["geometric"] = read_wp1(cfg.path(cfg.wp1_features), n)
    for t in cfg.tables:
        if t.group in features:
            raise ER2ImportError(f"{config_path}: feature_tables: group '{t.group}' is already filled")
        fg = attach_by_time_and_position(
            cfg.path(t.file), t.max_time_s, t.max_distance_km, cat("time_utc"), cat("lat"), cat("lon")
        )
        empty = np.isnan(fg.values).all(axis=0)
        if empty.any():
            raise ER2ImportError(
                f"{cfg.path(t.file)}: feature table: column '{fg.names[int(np.flatnonzero(empty)[0])]}' "
                f"matched no sample within {t.max_time_s:g} s and {t.max_distance_km:g} km"
            )
        features[t.group] = fg
    data = CampaignData(
        flight_names=[f.name for f in flights],
        flight_campaigns=[f.campaign for f in flights],
        flight=np.concatenate([np.full(len(s.frames), k) for k, s in enumerate(samples)]),
        cbh_km=cat("cbh_km"),
        time_utc=cat("time_utc"),
        sza_deg=cat("sza"),
        saa_deg=cat("saa"),
        lat=cat("lat"),
        lon=cat("lon"),
        source=cfg.source,
        features=features,
        unlabelled_flight=np.concatenate([np.full(len(p), k) for k, p in enumerate(pools)])
        if any(len(p) for p in pools)
        else None,
        unlabelled_time_utc=np.concatenate([ct[p] for (_, ct), p in zip(cams, pools, strict=True)])
        if any(len(p) for p in pools)
        else None,
        attrs={
            "import_cascade": json.dumps([c.__dict__ for c in cascades]),
            "import_config": json.dumps(
                {
                    "cbh_range_km": cfg.cbh_range_km,
                    "time_tolerance_s": cfg.time_tolerance_s,
                    "image_rows": cfg.image_rows,
                    "frames_per_sample": cfg.frames_per_sample,
                    "unlabelled_every": cfg.unlabelled_every,
                }
            ),
        },
    )
    shape = (cfg.frames_per_sample, cfg.image_rows[1] - cfg.image_rows[0], width)
    n_pool = int(sum(len(p) for p in pools))
    for group, fg in data.features.items():  # the source files' fill values are missing data in a campaign
        fill = fill_values(fg.values)
        if fill.any():
            log.info("%s: features/%s: %d fill values read as missing (NaN)", output, group, int(fill.sum()))
            fg.values[fill] = np.nan

    def stream(which: list[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        start = 0
        for (camera, _), frames in zip(cams, which, strict=True):
            for j, block in enumerate(_blocks(camera, frames, cfg, width)):
                yield start + j, block
            start += len(frames)

    try:
        write_campaign(
            output,
            data,
            images=stream([s.frames for s in samples]),
            image_shape=shape,
            image_dtype=dtype,
            unlabelled=stream(pools) if n_pool else None,
            overwrite=force,  # refused above unless forced
        )
    except CampaignFormatError as exc:
        raise ER2ImportError(
            f"{output}: the imported data break the campaign contract at {exc.where}: expected "
            f"{exc.expected}; found {exc.found}"
        ) from None
    log.info(
        "wrote %s: %d samples in %d flights, %d unlabelled frames, images %s", output, n, len(flights), n_pool, shape
    )
    return cascades
