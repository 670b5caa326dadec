"""Importing raw ER-2 files written in the exact layouts of er2-data-facts.md."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from cbhlib.cli import main
from cbhlib.data.campaign import Campaign, validate_campaign
from cbhlib.sources.er2 import ER2ImportError, import_campaign, julian_to_posix, year_from_lidar_name

T0 = datetime(2025, 2, 10, 23, 55, tzinfo=UTC).timestamp()  # crosses midnight after 300 s


def _write(path: Path, datasets: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return path


def make_flight(
    d: Path, tag: str, t0: float, n_frames: int = 300, n_profiles: int = 200, layout: str = "mixed"
) -> dict:
    """Camera frames every 2 s. Profile i sits 0.2 s after frame i (matched) or 0.8 s (outside 0.5 s).

    ``mixed``: i % 10 == 0 no layer (-9999), 1 out of range (2.5 km), 2 over land (DEM 100 m),
    odd i unmatched, and the last profile is moved next to the one before it (same frame: the later wins).
    """
    rng = np.random.default_rng(len(tag))
    cam_t = t0 + 2.0 * np.arange(n_frames)
    signal = rng.integers(1000, 5000, size=(n_frames, 500, 16), dtype=np.uint16)
    signal[:, 40:480, 0] = np.arange(n_frames)[:, None]  # frame number in column 0 of kept rows
    _write(d / f"IRAI_L1B_{tag}.h5", {"Product/Signal": signal, "Time/TimeUTC": cam_t})
    i = np.arange(n_profiles)
    off = np.where(i % 2 == 0, 0.2, 0.8) if layout == "mixed" else np.full(n_profiles, 0.2)
    t = t0 + 2.0 * i + off
    base = 0.3 + 0.01 * (i % 50)
    dem = np.zeros(n_profiles)
    if layout == "mixed":
        base[i % 10 == 0] = -9999.0
        base[i % 10 == 1] = 2.5
        dem[i % 10 == 2] = 100.0
        t[-1] = t[-2] + 0.05  # the last profile picks the same frame as the one before: later wins
        base[-1] = 1.23
    doy = datetime.fromtimestamp(t0, UTC).timetuple().tm_yday
    midnight = datetime.fromtimestamp(t0, UTC).replace(hour=0, minute=0, second=0).timestamp()
    frac = ((t - midnight) / 86400.0) % 1.0  # the integer part stays the first day (rollover rule)
    layers = np.stack([base, np.full(n_profiles, 5.0)], 1)
    date = datetime.fromtimestamp(t0, UTC).strftime("%d%b%y").lower()
    lidar = _write(
        d / f"CPL_L2_V1-02_01kmLay_259015_{date}.hdf5",
        {
            "layer_descriptor/Layer_Base_Altitude": layers,
            "layer_descriptor/Profile_Decimal_Julian_Day": np.stack([doy + frac, doy + frac], 1),
            "layer_descriptor/Lidar_Surface_Altitude": rng.uniform(-20, 20, n_profiles),
            "layer_descriptor/DEM_Surface_Altitude": dem,
            "geolocation/CPL_Latitude": np.full(n_profiles, 33.0),
            "geolocation/CPL_Longitude": np.full(n_profiles, -120.0),
            "geolocation/Solar_Zenith_Angle": np.full(n_profiles, 45.0),
            "geolocation/Solar_Azimuth_Angle": np.full(n_profiles, 180.0),
        },
    )
    sza = np.full(n_frames + 5, 40.0)
    sza[3] = np.nan
    sza[4] = 60.0
    saa = np.full(n_frames + 5, 370.0)
    saa[6] = np.nan
    nav = _write(
        d / f"CRS_{tag}_nav.hdf",
        {
            "nav/solarZenith": sza,
            "nav/sunAzGrd": saa,
            "nav/IWG_lat": np.linspace(33, 34, n_frames + 5),
            "nav/IWG_lon": np.linspace(-121, -120, n_frames + 5),
        },
    )
    return {
        "name": tag,
        "campaign": "GLOVE",
        "camera": f"IRAI_L1B_{tag}.h5",
        "lidar": lidar.name,
        "navigation": nav.name,
        "cam_t": cam_t,
        "t": t,
        "base": base,
        "dem": dem,
    }


def expected_matches(fl: dict, lo: float = 0.1, hi: float = 2.0, tol: float = 0.5) -> dict[int, float]:
    """Brute force: nearest frame within tolerance for valid in-range ocean profiles; the later wins."""
    out: dict[int, float] = {}
    for t, b, dem in zip(fl["t"], fl["base"], fl["dem"], strict=True):
        if b <= -999 or not (lo <= b <= hi) or dem != 0:
            continue
        k = int(np.argmin(np.abs(fl["cam_t"] - t)))
        if abs(fl["cam_t"][k] - t) <= tol:
            out[k] = b
    return out


@pytest.fixture
def raw(tmp_path: Path) -> tuple[Path, list[dict]]:
    a = make_flight(tmp_path, "A", T0)
    b = make_flight(tmp_path, "B", datetime(2025, 2, 12, 18, 0, tzinfo=UTC).timestamp(), 60, 30, "clean")
    cfg = {"flights": [{k: fl[k] for k in ("name", "campaign", "camera", "lidar", "navigation")} for fl in (a, b)]}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, [a, b]


def test_cascade_counts_are_those_the_fixture_implies(raw, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, (a, b) = raw
    assert main(["import-er2", str(cfg), "-o", str(tmp_path / "cli.h5")]) == 0
    out = capsys.readouterr().out
    assert "200 profiles read -> 180 valid -> 160 in range -> 140 over ocean -> 60 matched" in out
    cascades = import_campaign(cfg, tmp_path / "out.h5")
    ca = cascades[0]
    # 200 read; 20 without a layer; 20 out of range; 20 over land; of the 140 left, the 60 even ones
    # are within 0.5 s of a frame, and the last (odd, moved) profile takes the frame of the one before it.
    assert (ca.read, ca.valid, ca.in_range, ca.over_ocean, ca.matched) == (200, 180, 160, 140, 60)
    assert ca.matched == len(expected_matches(a))
    assert (cascades[1].read, cascades[1].matched) == (30, 30)


def test_labels_frames_and_angles(raw, tmp_path: Path) -> None:
    cfg, (a, b) = raw
    import_campaign(cfg, tmp_path / "out.h5")
    camp = validate_campaign(tmp_path / "out.h5")
    assert camp.flight_names == ["A", "B"] and np.bincount(camp.flight).tolist() == [60, 30]
    exp = expected_matches(a)
    frames = sorted(exp)
    ia = camp.flight_indices(0)
    np.testing.assert_allclose(camp.cbh_km[ia], [exp[k] for k in frames], rtol=1e-6)
    np.testing.assert_array_equal(camp.time_utc[ia], a["cam_t"][frames])
    assert camp.cbh_km[ia][-1] == pytest.approx(1.23)  # the later profile won frame 198
    imgs = camp.images(ia)
    assert imgs.shape[1:] == (1, 440, 16) and camp.image_dtype == np.uint16
    np.testing.assert_array_equal(imgs[:, 0, 0, 0], frames)  # the right frame, rows 40:480
    nav_sza = np.full(300, 40.0)
    nav_sza[3] = np.nan
    nav_sza[4] = 60.0
    nav_sza[3] = np.nanmean(nav_sza)
    np.testing.assert_allclose(camp.sza_deg[ia], nav_sza[frames], rtol=1e-5)
    assert (camp.saa_deg >= 0).all() and (camp.saa_deg < 360).all()
    assert np.isclose(camp.saa_deg[ia], 10.0).sum() >= 59  # 370 mod 360; NaN -> 0
    assert camp.attrs["import_cascade"]


def test_julian_day_rollover_and_year_from_name() -> None:
    assert year_from_lidar_name(Path("CPL_L2_V1-02_01kmLay_259015_10feb25.hdf5")) == 2025
    assert year_from_lidar_name(Path("CPL_L2_V1-02_01kmLay_24013_30oct24.hdf5")) == 2024
    t = T0 + np.array([0.0, 200.0, 299.0, 301.0, 400.0])  # midnight at +300 s
    midnight = datetime(2025, 2, 10, tzinfo=UTC).timestamp()
    jd = 41 + ((t - midnight) / 86400.0) % 1.0  # Feb 10 is day 41; the integer part never changes
    np.testing.assert_allclose(julian_to_posix(jd, 2025), t, atol=1e-3)
    with pytest.raises(ER2ImportError, match="10feb25"):
        year_from_lidar_name(Path("lidar_file.hdf5"))


def test_frames_outside_the_tolerance_stay_unlabelled(raw, tmp_path: Path) -> None:
    cfg, (a, _) = raw
    import_campaign(cfg, tmp_path / "out.h5")
    camp = Campaign(tmp_path / "out.h5")
    labelled = set(np.asarray(camp.time_utc[camp.flight_indices(0)]).round(3).tolist())
    odd_frames = {round(float(a["cam_t"][i]), 3) for i in range(1, 197, 2)}  # reached only by odd (0.8 s) profiles
    assert not (labelled & odd_frames)
    text = yaml.safe_load(cfg.read_text())
    text["time_tolerance_s"] = 0.1  # now even the 0.2 s offsets are too far
    cfg.write_text(yaml.safe_dump(text))
    with pytest.raises(ER2ImportError, match="expected at least 2 flights with at least 2 matched samples"):
        import_campaign(cfg, tmp_path / "none.h5")
    assert not (tmp_path / "none.h5").exists()


def test_seed_feature_files_align_by_sample_index(raw, tmp_path: Path) -> None:
    cfg, _ = raw
    n = 90
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 9)).astype(np.float32)
    perm = rng.permutation(n)
    _write(
        tmp_path / "WP2_Features.hdf5",
        {
            "features": X[perm],
            "sample_indices": perm,
            "feature_names": np.array(
                [
                    s.encode()
                    for s in [
                        "blh",
                        "lcl",
                        "inversion_height",
                        "moisture_gradient",
                        "stability_index",
                        "t2m",
                        "d2m",
                        "sp",
                        "tcwv",
                    ]
                ]
            ),
        },
    )
    geo = rng.normal(size=(n, 3)).astype(np.float32)
    geo[5, 0] = np.nan
    _write(
        tmp_path / "WP1_Features.hdf5",
        {
            "sample_id": np.arange(n),
            "derived_geometric_H": geo[:, 0],
            "shadow_length_pixels": geo[:, 1],
            "shadow_detection_confidence": geo[:, 2],
        },
    )
    text = yaml.safe_load(cfg.read_text())
    text.update(wp1_features="WP1_Features.hdf5", wp2_features="WP2_Features.hdf5")
    cfg.write_text(yaml.safe_dump(text))
    import_campaign(cfg, tmp_path / "out.h5")
    camp = Campaign(tmp_path / "out.h5")
    np.testing.assert_array_equal(camp.features["era5"].values, X)
    np.testing.assert_array_equal(camp.features["geometric"].values, geo)
    assert camp.features["era5"].units[0] == "km" and camp.features["geometric"].names[0] == "derived_geometric_H"
    # counts that disagree with the imported samples are refused clearly
    _write(
        tmp_path / "WP2_Features.hdf5",
        {"features": X[:80], "sample_indices": np.arange(80), "feature_names": np.array([b"a"] * 9)},
    )
    with pytest.raises(ER2ImportError, match="expected 90 rows .* found 80"):
        import_campaign(cfg, tmp_path / "out2.h5")


def test_imported_campaign_runs_through_the_exploration_notebook(raw, tmp_path: Path) -> None:
    import papermill

    from tests.conftest import ROOT

    cfg, _ = raw
    import_campaign(cfg, tmp_path / "out.h5")
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "pipeline.yaml").write_text((ROOT / "params" / "pipeline.yaml").read_text())
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "01_explore_campaign.ipynb"),
        str(tmp_path / "explore.ipynb"),
        parameters={"campaign": "out.h5", "run_dir": "run", "progress": False},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    assert (tmp_path / "run" / "figures" / "explore_example_images.png").exists()


BROKEN = {
    "missing dataset": (lambda d: _drop(d / "IRAI_L1B_A.h5", "Time/TimeUTC"), "'Time/TimeUTC' is missing"),
    "mismatched lengths": (
        lambda d: _drop(
            d / "CPL_L2_V1-02_01kmLay_259015_10feb25.hdf5", "layer_descriptor/DEM_Surface_Altitude", np.zeros(7)
        ),
        "length mismatch",
    ),
    "unreadable file": (
        lambda d: (d / "CRS_A_nav.hdf").write_bytes(b"not a navigation file"),
        "expected a readable HDF5",
    ),
    "short navigation": (lambda d: _drop(d / "CRS_A_nav.hdf", "nav/IWG_lat", np.zeros(10)), "at least 300 values"),
    "missing file": (lambda d: (d / "IRAI_L1B_A.h5").unlink(), "camera file not found"),
}


def _drop(path: Path, key: str, replacement: np.ndarray | None = None) -> None:
    with h5py.File(path, "a") as f:
        del f[key]
        if replacement is not None:
            f.create_dataset(key, data=replacement)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_raw_files_give_clear_errors(case: str, raw, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = raw
    breaker, phrase = BROKEN[case]
    breaker(tmp_path)
    assert main(["import-er2", str(cfg), "-o", str(tmp_path / "out.h5")]) == 2
    err = capsys.readouterr().err
    assert phrase in err and "Traceback" not in err, err
    assert not (tmp_path / "out.h5").exists()


def _hdf4_nav(path: Path, n: int) -> None:
    from pyhdf.SD import SD, SDC

    path.unlink(missing_ok=True)
    sd = SD(str(path), SDC.WRITE | SDC.CREATE)
    values = {
        "solarZenith": np.full(n, 41.0),
        "sunAzGrd": np.full(n, 200.0),
        "IWG_lat": np.full(n, 33.5),
        "IWG_lon": np.full(n, -120.5),
    }
    for name, arr in values.items():
        ds = sd.create(name, SDC.FLOAT64, (n,))
        ds[:] = arr
        ds.endaccess()
    sd.end()


def test_true_hdf4_navigation_reads_through_pyhdf(raw, tmp_path: Path) -> None:
    pytest.importorskip("pyhdf")
    cfg, _ = raw
    _hdf4_nav(tmp_path / "CRS_A_nav.hdf", 305)
    assert (tmp_path / "CRS_A_nav.hdf").read_bytes()[:4] == b"\x0e\x03\x13\x01"
    import_campaign(cfg, tmp_path / "out.h5")
    camp = Campaign(tmp_path / "out.h5")
    ia = camp.flight_indices(0)
    np.testing.assert_allclose(camp.sza_deg[ia], 41.0)
    np.testing.assert_allclose(camp.lat[ia], 33.5)


def test_hdf4_without_the_extra_names_it(
    raw,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import sys

    cfg, _ = raw
    (tmp_path / "CRS_A_nav.hdf").write_bytes(b"\x0e\x03\x13\x01" + b"\0" * 64)
    monkeypatch.setitem(sys.modules, "pyhdf", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "pyhdf.SD", None)
    assert main(["import-er2", str(cfg), "-o", str(tmp_path / "out.h5")]) == 2
    err = capsys.readouterr().err
    assert "HDF4" in err and "cbhlib[hdf4]" in err and "CRS_A_nav.hdf" in err


def test_features_attach_by_time_and_position(raw, tmp_path: Path) -> None:
    import pandas as pd

    cfg, (a, b) = raw
    # two ERA5-like points per hour: one near the track (33.5 N, -120.5 E), one 500 km away
    rows = []
    for t in (T0 - 1800, T0 + 1800, b["cam_t"][0]):
        rows.append({"time_utc": t, "lat": 33.5, "lon": -120.5, "t2m [K]": 290.0 + (t > T0), "blh [km]": 0.8})
        rows.append({"time_utc": t, "lat": 38.0, "lon": -120.5, "t2m [K]": 250.0, "blh [km]": 9.9})
    pd.DataFrame(rows).to_csv(tmp_path / "era5_points.csv", index=False)
    text = yaml.safe_load(cfg.read_text())
    text["feature_tables"] = [{"group": "era5", "file": "era5_points.csv", "max_time_s": 3600, "max_distance_km": 200}]
    cfg.write_text(yaml.safe_dump(text))
    import_campaign(cfg, tmp_path / "out.h5")
    camp = Campaign(tmp_path / "out.h5")
    era5 = camp.features["era5"]
    assert era5.names == ["t2m", "blh"] and era5.units == ["K", "km"]
    assert set(np.unique(era5.values[:, 1])) == {np.float32(0.8)}  # never the far point
    assert set(np.unique(era5.values[:, 0])) <= {290.0, 291.0}
    # the source tables' fill values (-999) are missing data in the campaign, not a refusal after the images
    filled = pd.DataFrame(rows)
    filled.loc[filled["time_utc"] == b["cam_t"][0], "blh [km]"] = -999.0
    filled.to_csv(tmp_path / "era5_points.csv", index=False)
    import_campaign(cfg, tmp_path / "out2.h5")
    blh = Campaign(tmp_path / "out2.h5").features["era5"].values[:, 1]
    assert np.isnan(blh).any() and set(np.unique(blh[np.isfinite(blh)])) == {np.float32(0.8)}


def test_unmatched_frames_become_the_unlabelled_pool(raw, tmp_path: Path) -> None:
    cfg, (a, b) = raw
    import_campaign(cfg, tmp_path / "out.h5")
    camp = validate_campaign(tmp_path / "out.h5")
    labelled_a = set(camp.time_utc[camp.flight_indices(0)].round(3).tolist())
    pool_a = camp.unlabelled_time_utc[camp.unlabelled_flight == 0]
    assert len(pool_a) == (300 - 60 + 9) // 10 and not labelled_a & set(pool_a.round(3).tolist())
    assert (camp.unlabelled_flight == 1).sum() == 3  # 60 frames, 30 labelled: every 10th of the other 30
    text = yaml.safe_load(cfg.read_text())
    text["unlabelled_every"] = 0
    cfg.write_text(yaml.safe_dump(text))
    import_campaign(cfg, tmp_path / "none.h5")
    assert Campaign(tmp_path / "none.h5").n_unlabelled == 0


def test_outputs_never_replace_inputs(raw, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    cfg, _ = raw
    inputs = sorted(p for p in tmp_path.iterdir() if p.is_file())
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs}
    for target in (tmp_path / "IRAI_L1B_A.h5", cfg, tmp_path / "CRS_A_nav.hdf"):
        for extra in ([], ["--force"]):
            assert main(["import-er2", str(cfg), "-o", str(target), *extra]) == 2
            assert "one of this command's own inputs" in capsys.readouterr().err
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs} == before
    assert main(["import-er2", str(cfg), "-o", str(tmp_path / "out.h5")]) == 0
    assert main(["import-er2", str(cfg), "-o", str(tmp_path / "out.h5")]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["import-er2", str(cfg), "-o", str(tmp_path / "out.h5"), "--force"]) == 0


def test_one_nan_julian_day_drops_one_profile_not_the_flight(raw, tmp_path: Path) -> None:
    cfg, (a, _) = raw
    with h5py.File(tmp_path / "CPL_L2_V1-02_01kmLay_259015_10feb25.hdf5", "a") as f:
        jd = f["layer_descriptor/Profile_Decimal_Julian_Day"]
        jd[0, 0] = np.nan  # the first profile: its day was the day of the whole flight
        jd[4, 0] = np.nan  # a matched profile
    ca = import_campaign(cfg, tmp_path / "out.h5")[0]
    assert ca.valid == 179 and ca.matched == 59  # only profile 4 is lost (profile 0 had no layer anyway)


CONFIG_CASES = {
    "camera of the wrong type": (lambda t: t["flights"][0].__setitem__("camera", 5), "flights[0].camera", "a string"),
    "range of words": (lambda t: t.__setitem__("cbh_range_km", ["low", "high"]), "cbh_range_km[0]", "a number"),
    "unknown key": (lambda t: t.__setitem__("tolerance", 1), "tolerance", "an unknown key"),
    "duplicate names": (lambda t: t["flights"][1].__setitem__("name", "A"), "flights", "'A' twice"),
    "the same flight twice": (
        lambda t: t["flights"].append(dict(t["flights"][0], name="C")),
        "flights",
        "listed twice",
    ),
    "even frames per sample": (lambda t: t.__setitem__("frames_per_sample", 2), "frames_per_sample", "odd"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_import_configs_are_one_line(case: str, raw, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = raw
    text = yaml.safe_load(cfg.read_text())
    edit, key, phrase = CONFIG_CASES[case]
    edit(text)
    cfg.write_text(yaml.safe_dump(text))
    assert main(["import-er2", str(cfg), "-o", str(tmp_path / "out.h5")]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and key in err and phrase in err and err.count("\n") == 1
    assert not (tmp_path / "out.h5").exists()


def test_bad_navigation_values_name_the_navigation_file(
    raw, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _ = raw
    with h5py.File(tmp_path / "CRS_A_nav.hdf", "a") as f:
        f["nav/solarZenith"][7] = 120.0
    assert main(["import-er2", str(cfg), "-o", str(tmp_path / "out.h5")]) == 2
    err = capsys.readouterr().err
    assert "CRS_A_nav.hdf" in err and "0-90" in err and "frame 7" in err and ".tmp" not in err


def test_nan_pixels_are_refused_at_import(raw, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, (a, _) = raw
    cam = tmp_path / "IRAI_L1B_A.h5"
    with h5py.File(cam, "a") as f:
        sig = f["Product/Signal"][()].astype(np.float32)
        sig[4, 100, 3] = np.nan  # frame 4 is labelled
        del f["Product/Signal"]
        f.create_dataset("Product/Signal", data=sig)
    assert main(["import-er2", str(cfg), "-o", str(tmp_path / "out.h5")]) == 2
    err = capsys.readouterr().err
    assert "IRAI_L1B_A.h5" in err and "frame 4" in err and not (tmp_path / "out.h5").exists()
