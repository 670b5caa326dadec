"""Campaigns from the tables scientists already have (pandas in; xarray out is :mod:`cbhlib.data.xarray_view`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cbhlib.data.campaign import CampaignData
from cbhlib.data.contract import FeatureGroup
from cbhlib.errors import CbhError


def _posix_seconds(col: pd.Series, name: str) -> np.ndarray:
    """POSIX seconds (float64) from datetime64 (naive = UTC, or tz-aware) or numeric seconds."""
    if pd.api.types.is_datetime64_any_dtype(col):
        t = pd.to_datetime(col, utc=True)
        return (t - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy(np.float64)
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(np.float64)
    try:
        return _posix_seconds(pd.to_datetime(col, utc=True), name)
    except (ValueError, TypeError):
        raise CbhError(f"dataframe column '{name}': expected datetime64 or POSIX seconds; found {col.dtype}") from None


def campaign_from_dataframe(
    df: pd.DataFrame,
    *,
    flight: str = "flight",
    cbh: str = "cbh_km",
    time: str = "time_utc",
    sza: str = "sza_deg",
    saa: str = "saa_deg",
    lat: str | None = "lat",
    lon: str | None = "lon",
    features: Mapping[str, Sequence[str]] | None = None,
    units: Mapping[str, str] | None = None,
    campaign: str | None = None,
    source: str = "dataframe",
) -> CampaignData:
    """A campaign table from one row per labelled sample.

    Rows are ordered by flight (first appearance) then time; ``data.row_order`` gives
    each sample's source row, so images in the table's order are ``images[data.row_order]``.

    Args:
        features: group -> columns, e.g. ``{"era5": ["t2m", "d2m"]}``; default: every
            numeric column not used otherwise, as group ``features``.
        units: column -> unit string.
        campaign: optional column naming each flight's field campaign.
    """
    needed = [c for c in (flight, cbh, time, sza, saa) if c not in df.columns]
    if needed:
        raise CbhError(f"dataframe: expected columns {needed}; found {list(df.columns)}")
    names = list(dict.fromkeys(df[flight].astype(str)))
    k = df[flight].astype(str).map({n: i for i, n in enumerate(names)}).to_numpy()
    t = _posix_seconds(df[time], time)
    order = np.lexsort((t, k))
    d = df.iloc[order]
    used = {flight, cbh, time, sza, saa, lat, lon, campaign}
    if features is None:
        cols = [c for c in d.columns if c not in used and pd.api.types.is_numeric_dtype(d[c])]
        features = {"features": cols} if cols else {}
    groups = {}
    for g, cols in features.items():
        missing = [c for c in cols if c not in d.columns]
        if missing:
            raise CbhError(f"dataframe: features '{g}': expected columns {missing}; found {list(d.columns)}")
        groups[g] = FeatureGroup(
            d[list(cols)].to_numpy(np.float32), [str(c) for c in cols], [(units or {}).get(c, "") for c in cols]
        )
    camps = None
    if campaign:
        first = d.drop_duplicates(flight).set_index(d.drop_duplicates(flight)[flight].astype(str))[campaign]
        camps = [str(first[n]) for n in names]
    opt = lambda c: d[c].to_numpy(np.float32) if c and c in d.columns else None
    return CampaignData(
        flight_names=names,
        flight=k[order],
        cbh_km=d[cbh].to_numpy(np.float32),
        time_utc=t[order],
        sza_deg=d[sza].to_numpy(np.float32),
        saa_deg=d[saa].to_numpy(np.float32),
        source=source,
        flight_campaigns=camps,
        lat=opt(lat),
        lon=opt(lon),
        features=groups,
        row_order=order.astype(np.int64),
    )
