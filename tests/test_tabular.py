"""DataFrame -> campaign: what a table may hold, what is refused, what is computed (issues 21.6 and 22.2)."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from cbhlib.data.campaign import Campaign, write_campaign
from cbhlib.data.solar import solar_angles
from cbhlib.data.tabular import campaign_from_dataframe
from cbhlib.errors import CampaignFormatError, CbhError


def _table(n: int = 8, flights: tuple[str, ...] = ("A", "B")) -> pd.DataFrame:
    rows = []
    for k, name in enumerate(flights):
        rows.append(
            pd.DataFrame(
                {
                    "flight": name,
                    "time_utc": 1.74e9 + k * 86400 + 10.0 * np.arange(n),
                    "cbh_km": np.linspace(0.5, 1.2, n),
                    "lat": 33.0,
                    "lon": -120.0,
                    "t2m": 285.0 + np.arange(n),
                    "d2m": 280.0 + np.arange(n),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_missing_flight_names_are_refused() -> None:
    df = _table()
    df.loc[3, "flight"] = np.nan
    with pytest.raises(CbhError, match=r"column 'flight': expected a flight name in every row; found 1 missing"):
        campaign_from_dataframe(df, features={"era5": ["t2m"]})
    df.loc[3, "flight"] = "  "
    with pytest.raises(CbhError, match="found 1 missing"):
        campaign_from_dataframe(df, features={"era5": ["t2m"]})


def test_default_features_never_swallow_a_label_and_say_what_they_took(caplog: pytest.LogCaptureFixture) -> None:
    df = _table().assign(cbh_m=lambda d: 1000 * d["cbh_km"])
    with pytest.raises(CbhError, match=r"\['cbh_m'\], which look like labels.*pass features="):
        campaign_from_dataframe(df)
    with caplog.at_level(logging.WARNING, logger="cbhlib"):
        data = campaign_from_dataframe(df.drop(columns="cbh_m"))
    assert data.features["features"].names == ["t2m", "d2m"]
    assert "columns t2m, d2m became group 'features'" in caplog.text


def test_the_label_column_cannot_be_a_feature() -> None:
    with pytest.raises(CbhError, match="found 'cbh_km', the label column"):
        campaign_from_dataframe(_table(), features={"era5": ["t2m", "cbh_km"]})


def test_unknown_units_keys_are_refused_with_a_suggestion() -> None:
    with pytest.raises(CbhError, match=r"units: expected keys among the feature columns.*'t2n'.*did you mean 't2m'"):
        campaign_from_dataframe(_table(), features={"era5": ["t2m", "d2m"]}, units={"t2n": "K"})
    data = campaign_from_dataframe(_table(), features={"era5": ["t2m", "d2m"]}, units={"t2m": "K"})
    assert data.features["era5"].units == ["K", ""]


@pytest.mark.parametrize("day", [0.0, 18.0, 45698.75])  # seconds or hours of the day, a spreadsheet day number
def test_times_of_the_day_or_spreadsheet_days_are_refused(day: float) -> None:
    df = _table().assign(time_utc=lambda d: day + np.arange(len(d), dtype=float))
    with pytest.raises(CbhError, match=r"dataframe column 'time_utc': expected POSIX seconds .* before 1980"):
        campaign_from_dataframe(df, features={"era5": ["t2m"]})


@pytest.mark.parametrize("scale,unit", [(1e3, "milliseconds"), (1e9, "nanoseconds")])
def test_times_not_in_seconds_are_refused(scale: float, unit: str) -> None:
    df = _table().assign(time_utc=lambda d: d["time_utc"] * scale)
    with pytest.raises(CbhError, match=f"column 'time_utc': expected POSIX seconds.*look like {unit}"):
        campaign_from_dataframe(df, features={"era5": ["t2m"]})


def test_a_group_name_with_a_slash_is_refused_when_written(tmp_path: Path) -> None:
    with pytest.raises(CbhError, match="expected group names without '/'"):
        campaign_from_dataframe(_table(), features={"era5/x": ["t2m"]})
    data = campaign_from_dataframe(_table(), features={"era5": ["t2m"]})
    data.features["era5/x"] = data.features.pop("era5")
    with pytest.raises(CampaignFormatError, match=r"features/era5/x: expected a feature group name without '/'"):
        write_campaign(tmp_path / "c.h5", data)
    assert not (tmp_path / "c.h5").exists()


def test_to_xarray_refuses_colliding_flattened_names(tmp_path: Path) -> None:
    df = _table().rename(columns={"t2m": "a_b", "d2m": "b"})
    data = campaign_from_dataframe(df, features={"era5": ["a_b"], "era5_a": ["b"]})
    camp = Campaign(write_campaign(tmp_path / "c.h5", data))
    with pytest.raises(CbhError, match=r"found 'era5_a_b' twice \(feature 'era5_a/b' and 'era5/a_b'\)"):
        camp.to_xarray()


def test_solar_angles_match_the_sun_at_noon() -> None:
    # 21 June 2025, 20:00 UTC at 33 N 120 W: local solar noon, sun about 33 - 23.44 deg from the zenith, due south
    t = pd.Timestamp("2025-06-21 20:00", tz="UTC").timestamp()
    sza, saa = solar_angles(np.array([t]), np.array([33.0]), np.array([-120.0]))
    assert abs(float(sza[0]) - 9.56) < 0.5 and abs(float(saa[0]) - 180) < 10
    with pytest.raises(CbhError, match="lat: expected finite degrees"):
        solar_angles(np.array([t]), np.array([np.nan]), np.array([0.0]))


def test_solar_angles_are_computed_when_absent_and_optional_without_a_position(tmp_path: Path) -> None:
    data = campaign_from_dataframe(_table(), features={"era5": ["t2m"]})
    expected, _ = solar_angles(data.time_utc, np.full(16, 33.0), np.full(16, -120.0))
    np.testing.assert_allclose(data.sza_deg, expected)
    night = campaign_from_dataframe(_table().assign(time_utc=lambda d: d["time_utc"] + 12 * 3600), features={})
    camp = Campaign(write_campaign(tmp_path / "night.h5", night))  # sun below the horizon: still valid
    assert (camp.sza_deg > 90).all()
    bare = campaign_from_dataframe(_table().drop(columns=["lat", "lon"]), features={"era5": ["t2m"]})
    assert bare.sza_deg is None and bare.saa_deg is None
    camp = Campaign(write_campaign(tmp_path / "bare.h5", bare))
    assert not camp.has_solar_angles and np.isnan(camp.sza_deg).all() and "sza" not in camp.to_xarray()


def test_a_labels_table_reads_blanks_as_no_label_yet_and_names_metres(tmp_path: Path) -> None:
    """The online intervals' labels: a blank cbh_km is a label not yet arrived, a sample left out
    too; metres, a folder or a missing file are one line saying what to do."""
    from cbhlib.data.tabular import labels_from_csv

    table = tmp_path / "arrived.csv"
    table.write_text("sample, cbh_km ,note\n3,0.8,x\n1,,late\n0,1.25,\n")
    y = labels_from_csv(table, 5)
    np.testing.assert_array_equal(np.isfinite(y), [True, False, False, True, False])
    assert y[0] == 1.25 and y[3] == 0.8
    table.write_text("sample,cbh_km\n0,1250\n1,800\n")
    with pytest.raises(CbhError, match=r"found '1250' in data row 1: metres\? divide by 1000$"):
        labels_from_csv(table, 5)
    table.write_text("sample,cbh_km, cbh_km\n0,1.2,1.3\n")
    with pytest.raises(CbhError, match=r"expected the columns sample, cbh_km once each; found 'cbh_km' twice$"):
        labels_from_csv(table, 5)
    table.write_text("sample,cbh_km\n0\n2,\n4,0.5\n")  # a missing or blank cbh_km: no label yet
    np.testing.assert_array_equal(np.isfinite(labels_from_csv(table, 5)), [False, False, False, False, True])
    table.write_text("sample,cbh_m\n0,1250\n")
    with pytest.raises(CbhError, match=r"cbh_km \(cbh_m: convert to km, divide by 1000\)"):
        labels_from_csv(table, 5)
    with pytest.raises(CbhError, match="found a folder$"):
        labels_from_csv(tmp_path, 5)
    with pytest.raises(CbhError, match="found an empty file name$"):
        labels_from_csv("", 5)
    with pytest.raises(CbhError, match="found no such file$"):
        labels_from_csv(tmp_path / "nowhere.csv", 5)


def test_images_of_a_shuffled_table_stay_beside_their_rows(tmp_path: Path) -> None:
    """campaign_from_dataframe sorts rows by flight and time; write_campaign takes the images in the
    table's order and writes each beside its own row (they were paired with other rows' labels)."""
    df = _table().sample(frac=1.0, random_state=3).reset_index(drop=True)
    images = np.broadcast_to(df["cbh_km"].to_numpy(np.float32)[:, None, None, None], (len(df), 1, 4, 4)).copy()
    data = campaign_from_dataframe(df, features={"era5": ["t2m"]})
    assert not np.array_equal(data.row_order, np.arange(len(df)))  # the shuffle did reorder
    camp = Campaign(write_campaign(tmp_path / "c.h5", data, images=images))
    np.testing.assert_array_equal(camp.images(np.arange(camp.n_samples))[:, 0, 0, 0], camp.cbh_km)
    with h5py.File(tmp_path / "big.h5", "w") as f:  # too big for memory: an h5py dataset, read in slices
        f["x"] = images
    with h5py.File(tmp_path / "big.h5", "r") as f:
        camp = Campaign(write_campaign(tmp_path / "from_h5.h5", data, images=f["x"]))
    np.testing.assert_array_equal(camp.images(np.arange(camp.n_samples))[:, 0, 0, 0], camp.cbh_km)
    with pytest.raises(CampaignFormatError, match=r"images: expected an \(N, C, H, W\) array in the table's row order"):
        write_campaign(tmp_path / "d.h5", data, images=iter([(0, images)]), image_shape=(1, 4, 4))
    assert not (tmp_path / "d.h5").exists()


@pytest.mark.parametrize(
    ("blocks", "found"),
    [
        ([(0, 10)], r"found \(10, 1, 4, 4\)"),  # an array of too few images (read back as zeros before)
        ([(0, 20)], r"found \(20, 1, 4, 4\)"),  # too many (a broadcasting TypeError before)
        ([(0, 5), (10, 6)], r"an image for each of the 16 samples; found 11 \(first without one: sample 5\)"),
        ([(5, 5), (0, 8)], "each sample's image once; found sample 5 written twice"),
        ([(0, 8), (8, 9)], "blocks within samples 0 to 15; found samples 8 to 16"),
    ],
)
def test_images_must_cover_every_sample_once(tmp_path: Path, blocks: list[tuple[int, int]], found: str) -> None:
    data = campaign_from_dataframe(_table(), features={"era5": ["t2m"]})
    if len(blocks) == 1:
        images: object = np.ones((blocks[0][1], 1, 4, 4), np.float32)
    else:
        images = iter([(s, np.ones((n, 1, 4, 4), np.float32)) for s, n in blocks])
    with pytest.raises(CampaignFormatError, match=found):
        write_campaign(tmp_path / "c.h5", data, images=images, image_shape=(1, 4, 4))
    assert not (tmp_path / "c.h5").exists()


def test_an_existing_campaign_file_is_replaced_only_when_asked(tmp_path: Path) -> None:
    path = write_campaign(tmp_path / "c.h5", campaign_from_dataframe(_table(), features={"era5": ["t2m"]}))
    other = campaign_from_dataframe(_table(n=5), features={"era5": ["t2m"]})
    with pytest.raises(
        CbhError, match=r"c.h5: expected a new campaign file name; found an existing file .*overwrite=True"
    ):
        write_campaign(path, other)
    assert Campaign(path).n_samples == 16
    assert Campaign(write_campaign(path, other, overwrite=True)).n_samples == 10
    with pytest.raises(CbhError, match="found an existing folder"):
        write_campaign(tmp_path, other, overwrite=True)
    link = tmp_path / "link.h5"  # a link to the campaign: the file it points to is replaced, the link kept
    link.symlink_to(path)
    assert write_campaign(link, campaign_from_dataframe(_table(n=3), features={"era5": ["t2m"]}), overwrite=True)
    assert link.is_symlink() and Campaign(path).n_samples == 6


def test_a_wrong_table_a_text_label_or_a_repeated_column_is_one_line() -> None:
    """A dict raised AttributeError, 'n/a' in cbh_km a ValueError naming no column, and a second
    't2m' column was dropped from the features without a word."""
    with pytest.raises(CbhError, match="dataframe: expected a pandas DataFrame .*; found dict"):
        campaign_from_dataframe(_table().to_dict(), features={"era5": ["t2m"]})
    text = _table().astype({"cbh_km": object})
    text.loc[text.index[3], "cbh_km"] = "n/a"
    with pytest.raises(CbhError, match=r"column 'cbh_km': expected numbers; found dtype object \('n/a' at row 3\)"):
        campaign_from_dataframe(text, features={"era5": ["t2m"]})
    gaps = _table().assign(sza_deg=45.0, saa_deg=180.0).astype({"sza_deg": object})
    gaps.loc[gaps.index[2], "sza_deg"] = None  # numbers and None in an object column are numbers
    assert np.isnan(campaign_from_dataframe(gaps, features={"era5": ["t2m"]}).sza_deg).sum() == 1
    twice = pd.concat([_table(), _table()[["t2m"]]], axis=1)
    with pytest.raises(CbhError, match=r"expected unique column names; found \['t2m'\] more than once"):
        campaign_from_dataframe(twice, features={"era5": ["t2m"]})
