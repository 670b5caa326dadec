"""Campaigns from the tables scientists already have (pandas in; xarray out is :mod:`cbhlib.data.xarray_view`).

Columns (names are arguments of :func:`campaign_from_dataframe`):

=============  ========  ================================================================
column         needed    meaning
=============  ========  ================================================================
``flight``     required  flight name of each row (no missing names)
``time_utc``   required  datetime64 (naive = UTC, or tz-aware), or POSIX seconds
``cbh_km``     labels    lidar cloud base (km); ``cbh=None``: an inputs-only campaign
                         (for ``cbh predict``), refused by training
``sza_deg``    optional  solar zenith; computed from time, lat, lon when absent
``saa_deg``    optional  solar azimuth; computed from time, lat, lon when absent
``lat/lon``    optional  position (degrees north / east)
features       optional  numeric columns named in ``features=`` (group -> columns)
=============  ========  ================================================================
"""

from __future__ import annotations

import difflib
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cbhlib.data.campaign import CampaignData
from cbhlib.data.contract import POSIX_SECONDS_MAX, POSIX_SECONDS_MIN, FeatureGroup, time_unit
from cbhlib.data.solar import solar_angles
from cbhlib.errors import CbhError

log = logging.getLogger(__name__)

LABEL_LIKE = re.compile(r"cbh|cloud.?base|label|target|truth|lidar", re.I)


def _posix_seconds(col: pd.Series, name: str) -> np.ndarray:
    """POSIX seconds (float64) from datetime64 (naive = UTC, or tz-aware) or numeric seconds."""
    if pd.api.types.is_datetime64_any_dtype(col):
        t = pd.to_datetime(col, utc=True)
        return (t - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy(np.float64)
    if pd.api.types.is_numeric_dtype(col):
        t = col.to_numpy(np.float64)
        big = np.abs(t[np.isfinite(t)])
        if big.size and np.median(big) > POSIX_SECONDS_MAX:
            unit = time_unit(float(np.median(big))) or "not seconds"
            raise CbhError(
                f"dataframe column '{name}': expected POSIX seconds (about 1.7e9 in 2025) or datetime64; found values "
                f"like {np.median(big):.4g}, which look like {unit}: convert them, e.g. "
                f"pd.to_datetime(df['{name}'], unit='ms')"
            )
        if big.size and np.median(big) < POSIX_SECONDS_MIN:
            raise CbhError(
                f"dataframe column '{name}': expected POSIX seconds (about 1.7e9 in 2025) or datetime64; found values "
                f"like {np.median(big):.6g}, before 1980: seconds of the day, elapsed time, hours or spreadsheet "
                "days? Give the date and time, e.g. pd.to_datetime(...)"
            )
        return t
    try:
        return _posix_seconds(pd.to_datetime(col, utc=True), name)
    except (ValueError, TypeError):
        raise CbhError(f"dataframe column '{name}': expected datetime64 or POSIX seconds; found {col.dtype}") from None


def _flight_names(col: pd.Series, name: str) -> pd.Series:
    missing = col.isna() | (col.astype(str).str.strip() == "")
    if missing.any():
        rows = np.flatnonzero(missing.to_numpy())
        raise CbhError(
            f"dataframe column '{name}': expected a flight name in every row; found {len(rows)} missing "
            f"(first at row {rows[0]}, index {col.index[rows[0]]!r})"
        )
    return col.astype(str)


def _default_features(d: pd.DataFrame, used: set[str | None]) -> dict[str, list[str]]:
    """Every numeric column not used otherwise, refusing columns that look like labels."""
    cols = [c for c in d.columns if c not in used and pd.api.types.is_numeric_dtype(d[c])]
    suspect = [str(c) for c in cols if LABEL_LIKE.search(str(c))]
    if suspect:
        raise CbhError(
            f"dataframe: features=None would use every unused numeric column; found {suspect}, which look like "
            f"labels (a label among the features leaks the answer): pass features={{'group': [columns]}} explicitly"
        )
    if cols:
        log.warning(
            "campaign_from_dataframe: features=None: columns %s became group 'features' (pass features= to choose)",
            ", ".join(map(str, cols)),
        )
    return {"features": cols} if cols else {}


def _feature_groups(
    d: pd.DataFrame, features: Mapping[str, Sequence[str]], units: Mapping[str, str] | None, reserved: dict[str, str]
) -> dict[str, FeatureGroup]:
    groups = {}
    all_cols: list[str] = []
    for g, cols in features.items():
        if not isinstance(g, str) or not g or "/" in g:
            raise CbhError(
                f"dataframe: features: expected group names without '/' (an HDF5 path separator); found {g!r}"
            )
        if isinstance(cols, str):
            raise CbhError(f"dataframe: features '{g}': expected a list of columns; found the string {cols!r}")
        missing = [c for c in cols if c not in d.columns]
        if missing:
            raise CbhError(f"dataframe: features '{g}': expected columns {missing}; found {list(d.columns)}")
        for c in cols:
            if c in reserved:
                raise CbhError(
                    f"dataframe: features '{g}': expected input columns; found '{c}', the "
                    f"{reserved[c]} column (a label among the features leaks the answer)"
                    if reserved[c] == "label"
                    else f"dataframe: features '{g}': expected input columns; found '{c}', the {reserved[c]} column"
                )
            if not pd.api.types.is_numeric_dtype(d[c]):
                raise CbhError(
                    f"dataframe: features '{g}': expected numeric columns; found '{c}' of dtype {d[c].dtype}"
                )
        all_cols += [str(c) for c in cols]
        groups[g] = FeatureGroup(
            d[list(cols)].to_numpy(np.float32), [str(c) for c in cols], [str((units or {}).get(c, "")) for c in cols]
        )
    unknown = [k for k in (units or {}) if k not in all_cols]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), all_cols, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise CbhError(f"dataframe: units: expected keys among the feature columns {all_cols}; found {unknown}{hint}")
    return groups


def campaign_from_dataframe(
    df: pd.DataFrame,
    *,
    flight: str = "flight",
    cbh: str | None = "cbh_km",
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
    """A campaign table from one row per sample (the columns: this module's docstring).

    Rows are ordered by flight (first appearance) then time; ``data.row_order`` gives
    each sample's source row: :func:`cbhlib.data.campaign.write_campaign` takes images in the
    table's order and writes each beside its own row (sample i gets ``images[data.row_order[i]]``).

    Args:
        cbh: the label column (km); None for an inputs-only campaign (``cbh predict`` only).
        features: group -> columns, e.g. ``{"era5": ["t2m", "d2m"]}``; default: every
            numeric column not used otherwise, as group ``features`` (refused when one
            looks like a label, e.g. ``cbh_m``; the columns chosen are logged).
        units: feature column -> unit string (every key must be a feature column).
        campaign: optional column naming each flight's field campaign.
    """
    if not isinstance(df, pd.DataFrame):
        raise CbhError(f"dataframe: expected a pandas DataFrame (one row per sample); found {type(df).__name__}")
    dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if dup:
        raise CbhError(f"dataframe: expected unique column names; found {dup} more than once")
    for c in (cbh, sza, saa, lat, lon):
        if c is not None and c in df.columns and not pd.api.types.is_numeric_dtype(df[c]):
            bad = pd.to_numeric(df[c], errors="coerce").isna() & df[c].notna()
            if not bad.any():  # numbers and None in an object column: numbers, None missing
                df = df.assign(**{c: pd.to_numeric(df[c])})
                continue
            first = int(np.flatnonzero(bad.to_numpy())[0])
            raise CbhError(
                f"dataframe column '{c}': expected numbers; found dtype {df[c].dtype} "
                f"({df[c].iloc[first]!r} at row {first}): convert it, e.g. pd.to_numeric(df['{c}'], errors='coerce')"
            )
    needed = [c for c in (flight, cbh, time) if c is not None and c not in df.columns]
    if needed:
        hint = " (cbh=None makes a campaign without labels, for cbh predict)" if cbh in needed else ""
        raise CbhError(f"dataframe: expected columns {needed}{hint}; found {list(df.columns)}")
    flights = _flight_names(df[flight], flight)
    names = list(dict.fromkeys(flights))
    k = flights.map({n: i for i, n in enumerate(names)}).to_numpy()
    t = _posix_seconds(df[time], time)
    order = np.lexsort((t, k))
    d = df.iloc[order]
    used = {flight, cbh, time, sza, saa, lat, lon, campaign}
    if features is None:
        features = _default_features(d, used)
    reserved = {c: role for c, role in ((cbh, "label"), (flight, "flight"), (time, "time")) if c is not None}
    groups = _feature_groups(d, features, units, reserved)
    camps = None
    if campaign:
        first = d.drop_duplicates(flight).set_index(d.drop_duplicates(flight)[flight].astype(str))[campaign]
        camps = [str(first[n]) for n in names]
    opt = lambda c: d[c].to_numpy(np.float32) if c and c in d.columns else None
    angles = {"sza_deg": opt(sza), "saa_deg": opt(saa)}
    if any(v is None for v in angles.values()) and opt(lat) is not None and opt(lon) is not None:
        computed = dict(zip(angles, solar_angles(t[order], d[lat].to_numpy(), d[lon].to_numpy()), strict=True))
        log.info(
            "campaign_from_dataframe: %s computed from time, %s and %s (pvlib)",
            " and ".join(k for k, v in angles.items() if v is None),
            lat,
            lon,
        )
        angles = {k: computed[k] if v is None else v for k, v in angles.items()}
    return CampaignData(
        flight_names=names,
        flight=k[order],
        cbh_km=opt(cbh),
        time_utc=t[order],
        source=source,
        flight_campaigns=camps,
        lat=opt(lat),
        lon=opt(lon),
        features=groups,
        row_order=order.astype(np.int64),
        **angles,
    )


def labels_from_csv(path: str | Path, n_samples: int) -> np.ndarray:
    """(n_samples,) lidar labels (km) from a CSV with columns ``sample`` (the row number ``cbh
    predict`` writes, 0 to n_samples - 1) and ``cbh_km``; NaN for a sample the table leaves out
    or whose cbh_km is blank or missing (no label has arrived for it). Anything else: one line naming the file, the
    column and the data row (1 = the first row under the header)."""
    if not str(path).strip():
        raise CbhError("labels: expected a CSV table with columns sample, cbh_km; found an empty file name")
    if not Path(path).is_file():
        found = "a folder" if Path(path).exists() else "no such file"
        raise CbhError(f"{path}: expected a CSV table with columns sample, cbh_km; found {found}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # a row longer than the header: refused
            d = pd.read_csv(path, index_col=False, dtype=str, keep_default_na=False)
    except pd.errors.ParserWarning:
        raise CbhError(
            f"{path}: expected a CSV table with columns sample, cbh_km; found a row with more fields than the header "
            "(a trailing comma?)"
        ) from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        why = f"{type(e).__name__}: {' '.join(str(e).split())}"  # one line
        raise CbhError(f"{path}: expected a CSV table with columns sample, cbh_km; found {why}") from None
    d.columns = [str(c).strip() for c in d.columns]
    cols = list(d.columns)
    twice = [c for c in ("sample", "cbh_km") if cols.count(c) > 1 or (c in cols and f"{c}.1" in cols)]
    if twice:
        raise CbhError(f"{path}: expected the columns sample, cbh_km once each; found {twice[0]!r} twice")
    missing = [c for c in ("sample", "cbh_km") if c not in d.columns]
    if missing:
        hint = " (cbh_m: convert to km, divide by 1000)" if "cbh_m" in d.columns else ""
        raise CbhError(f"{path}: expected columns sample, cbh_km{hint}; found {list(d.columns)} (missing {missing})")
    raw_s, raw_y = d["sample"].str.strip(), d["cbh_km"].str.strip()
    s = pd.to_numeric(raw_s, errors="coerce").to_numpy(float)
    bad = ~(np.isfinite(s) & (s == np.round(s)) & (s >= 0) & (s < n_samples))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CbhError(
            f"{path}: column 'sample': expected row numbers of the campaign, 0 to {n_samples - 1}; "
            f"found {raw_s.iloc[i]!r} in data row {i + 1}"
        )
    dup = pd.Series(s).duplicated().to_numpy()
    if dup.any():
        raise CbhError(f"{path}: column 'sample': expected each sample once; found {int(s[dup][0])} twice")
    blank = raw_y.isin(["", "nan", "NaN", "NA"]).to_numpy()  # no label yet
    y = pd.to_numeric(raw_y.where(~blank), errors="coerce").to_numpy(float)
    bad = ~blank & ~(np.isfinite(y) & (y >= 0) & (y <= 20))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        given = y[~blank & np.isfinite(y)]
        metres = len(given) > 0 and np.median(given) > 20 and np.isfinite(y[i]) and 20 < y[i] <= 20_000
        raise CbhError(
            f"{path}: column 'cbh_km': expected a cloud base in km, 0 to 20 (blank: no label yet); "
            f"found {raw_y.iloc[i]!r} in data row {i + 1}" + (": metres? divide by 1000" if metres else "")
        )
    out = np.full(n_samples, np.nan)
    out[s[~blank].astype(int)] = y[~blank]
    return out
