"""A campaign as an ``xarray.Dataset`` (CF-style units, decoded times), for NetCDF and plotting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cbhlib.errors import CbhError

if TYPE_CHECKING:  # Campaign.to_xarray calls this module: no import back at run time
    import xarray as xr

    from cbhlib.data.campaign import Campaign


def to_xarray(camp: Campaign, images: bool = False) -> xr.Dataset:
    """The labelled samples as an ``xarray.Dataset``: dimension ``sample`` with decoded times,
    flight names, position; CF-style units; features as variables; images (read into
    memory) as ``images(sample, channel, y, x)`` when asked."""
    try:
        import xarray as xr
    except ImportError:
        raise CbhError("to_xarray needs xarray: pip install xarray (it comes with the notebooks extra)") from None
    t = pd.to_datetime(camp.time_utc, unit="s", utc=True).tz_localize(None)
    coords: dict[str, Any] = {
        "sample": np.arange(camp.n_samples),
        "time": ("sample", t.to_numpy()),
        "flight": ("sample", np.array([camp.flight_names[i] for i in camp.flight], dtype=object)),
    }
    if camp.lat is not None and camp.lon is not None:
        coords["lat"] = ("sample", camp.lat, {"units": "degrees_north", "standard_name": "latitude"})
        coords["lon"] = ("sample", camp.lon, {"units": "degrees_east", "standard_name": "longitude"})
    data: dict[str, Any] = {}
    if camp.has_labels:  # an inputs-only campaign has no cbh variable
        data["cbh"] = ("sample", camp.cbh_km, {"units": "km", "long_name": "lidar cloud base height"})
    if camp.has_solar_angles:
        data["sza"] = ("sample", camp.sza_deg, {"units": "degree", "long_name": "solar zenith angle"})
        data["saa"] = ("sample", camp.saa_deg, {"units": "degree", "long_name": "solar azimuth angle"})
    taken = {k: k for k in (*data, *coords, "cbh", "sza", "saa", "images")}
    for g, fg in camp.features.items():
        for j, (name, unit) in enumerate(zip(fg.names, fg.units, strict=True)):
            var = f"{g}_{name}"
            if var in taken:
                raise CbhError(
                    f"{camp.path}: to_xarray: expected distinct variable names; found '{var}' twice (feature "
                    f"'{g}/{name}' and {taken[var]!r}): rename one group or feature"
                )
            taken[var] = f"{g}/{name}"
            data[var] = ("sample", fg.values[:, j], {"units": unit or "1", "long_name": f"{g} {name}"})
    if images and camp.has_images:
        data["images"] = (
            ("sample", "channel", "y", "x"),
            camp.images(slice(0, camp.n_samples)),
            {"units": "K" if camp.image_dtype == np.float32 else "1", "long_name": "thermal image"},
        )
    ds = xr.Dataset(
        data,
        coords=coords,
        attrs={"source": camp.source, "Conventions": "CF-1.10", "title": f"cbh-fusion campaign {camp.path.name}"},
    )
    ds["time"].encoding["units"] = "seconds since 1970-01-01"
    return ds
