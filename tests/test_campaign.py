"""The campaign file contract: round trip, lazy reading, and one clear error per broken input."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from cbhlib.cli import main
from cbhlib.data.campaign import Campaign, CampaignFormatError, validate_campaign, write_campaign
from tests.conftest import small_data


def test_round_trip(small_file: Path) -> None:
    camp = Campaign(small_file)
    data = small_data()
    assert camp.flight_names == data.flight_names
    np.testing.assert_allclose(camp.cbh_km, data.cbh_km, rtol=1e-6)
    np.testing.assert_array_equal(camp.time_utc, data.time_utc)
    assert camp.image_shape == (1, 4, 4)
    X, names = camp.feature_matrix()
    assert X.shape == (15, 2) and names == ["era5/x0", "era5/x1"]
    assert camp.features["era5"].units == ["K", "K"]
    imgs = camp.images([3, 1, 3])
    assert imgs.shape == (3, 1, 4, 4)
    np.testing.assert_array_equal(imgs[0], imgs[2])


def test_feature_count_comes_from_the_file(tmp_path: Path) -> None:
    path = write_campaign(tmp_path / "k5.h5", small_data(k_features=5))
    X, names = Campaign(path).feature_matrix()
    assert X.shape[1] == 5 and len(names) == 5


def test_campaign_without_images_is_valid_and_image_reads_refuse_clearly(tmp_path: Path) -> None:
    path = write_campaign(tmp_path / "noimg.h5", small_data())
    camp = validate_campaign(path)
    assert not camp.has_images
    with pytest.raises(CampaignFormatError, match="no images"):
        camp.images([0])


def test_handle_is_lazy_and_per_process(small_file: Path) -> None:
    camp = Campaign(small_file)
    assert camp._h5 is None  # nothing open after construction
    camp.images([0])
    assert camp._h5 is not None and camp._pid == os.getpid()
    clone = pickle.loads(pickle.dumps(camp))  # what a spawned DataLoader worker receives
    assert clone._h5 is None
    np.testing.assert_array_equal(clone.images([2]), camp.images([2]))
    camp._pid = -1  # as if this object had crossed a fork: the next read reopens
    camp.images([1])
    assert camp._pid == os.getpid()


def test_writer_is_atomic(tmp_path: Path) -> None:
    data = small_data()
    data.cbh_km[0] = np.nan  # invalid: the writer validates before renaming
    with pytest.raises(CampaignFormatError) as err:
        write_campaign(tmp_path / "bad.h5", data)
    assert list(tmp_path.iterdir()) == []
    assert str(err.value).startswith(f"{tmp_path / 'bad.h5'}: samples/cbh_km: "), err.value  # the output, not .tmp


# ---------------------------------------------------------------- broken inputs, one per case


def _copy(src: Path, tmp: Path) -> Path:
    dst = tmp / "broken.h5"
    shutil.copy(src, dst)
    return dst


def _edit(path: Path, fn) -> Path:
    with h5py.File(path, "a") as f:
        fn(f)
    return path


def _replace(key: str, value: np.ndarray):
    def fn(f: h5py.File) -> None:
        del f[key]
        f.create_dataset(key, data=value)

    return fn


def _break(case: str, small_file: Path, tmp: Path) -> Path:
    n = 15
    if case == "not_hdf5":
        p = tmp / "notes.h5"
        p.write_text("flight,cbh\n1,0.5\n")
        return p
    if case == "empty":
        p = tmp / "empty.h5"
        p.write_bytes(b"")
        return p
    if case == "truncated":
        p = _copy(small_file, tmp)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 3])
        return p
    if case == "missing_file":
        return tmp / "nope.h5"
    p = _copy(small_file, tmp)
    edits = {
        "bad_format": lambda f: f.attrs.__setitem__("format", "something-else"),
        "missing_group": lambda f: f.__delitem__("samples"),
        "missing_dataset": lambda f: f.__delitem__("samples/time_utc"),
        "renamed_dataset": lambda f: f.move("samples/time_utc", "samples/time"),
        "missing_flights": lambda f: f.__delitem__("flights"),
        "wrong_dtype": _replace("samples/cbh_km", np.array([b"x"] * n)),
        "wrong_rank": _replace("samples/cbh_km", np.ones((n, 2), np.float32)),
        "length_mismatch": _replace("samples/sza_deg", np.ones(n - 1, np.float32)),
        "nan_label": _replace("samples/cbh_km", np.r_[np.nan, np.ones(n - 1)].astype(np.float32)),
        "inf_label": _replace("samples/cbh_km", np.r_[np.inf, np.ones(n - 1)].astype(np.float32)),
        "negative_label": _replace("samples/cbh_km", np.r_[-0.3, np.ones(n - 1)].astype(np.float32)),
        "flight_out_of_range": _replace(
            "samples/flight", np.r_[7, np.zeros(5), np.ones(5), np.full(4, 2)].astype(np.int32)
        ),
        "unsorted_time": lambda f: f["samples/time_utc"].__setitem__(slice(0, 2), [1.7e9 + 50, 1.7e9 + 10]),
        "duplicated_sample": lambda f: f["samples/time_utc"].__setitem__(1, f["samples/time_utc"][0]),
        "time_float32": _replace("samples/time_utc", np.arange(n, dtype=np.float32)),
        "time_milliseconds": lambda f: f["samples/time_utc"].__setitem__(slice(None), f["samples/time_utc"][:] * 1000),
        "time_milliseconds_1990": lambda f: f["samples/time_utc"].__setitem__(
            slice(None), (6.3e8 + np.arange(n) * 10.0) * 1000
        ),
        "time_negative": lambda f: f["samples/time_utc"].__setitem__(slice(None), -1e9 + np.arange(n) * 10.0),
        "feature_no_columns": lambda f: (
            _replace("features/era5/values", np.ones((n, 0), np.float32))(f),
            _replace("features/era5/names", np.array([], dtype=h5py.string_dtype()))(f),
        ),
        "feature_fill_9999": lambda f: f["features/era5/values"].__setitem__((2, 0), -9999.0),
        "feature_fill_netcdf": lambda f: f["features/era5/values"].__setitem__((4, 1), 9.96921e36),
        "time_of_day": lambda f: f["samples/time_utc"].__setitem__(slice(None), 64800.0 + np.arange(n) * 10.0),
        "time_excel_days": lambda f: f["samples/time_utc"].__setitem__(slice(None), 45698.75 + np.arange(n)),
        "flight_without_samples": _replace("flights/name", np.array([b"F0", b"F1", b"F2", b"F3"])),
        "flight_with_one_sample": _replace("samples/flight", np.r_[np.zeros(6), np.ones(8), 2].astype(np.int32)),
        "all_nan_feature": lambda f: f["features/era5/values"].__setitem__((slice(None), 1), np.nan),
        "inf_feature": lambda f: f["features/era5/values"].__setitem__((0, 0), np.inf),
        "feature_names_mismatch": _replace("features/era5/names", np.array([b"only_one"])),
        "images_wrong_rank": _replace("images", np.ones((n, 4, 4), np.float32)),
        "images_wrong_dtype": _replace("images", np.ones((n, 1, 4, 4), np.float64)),
        "images_length_mismatch": _replace("images", np.ones((n + 2, 1, 4, 4), np.float32)),
        "nan_pixels": lambda f: f["images"].__setitem__((4, 0, 1, 1), np.nan),
        "constant_images": lambda f: f["images"].__setitem__(slice(None), 280.0),
        "sza_out_of_range": lambda f: f["samples/sza_deg"].__setitem__(0, 200.0),
        "duplicate_flight_names": _replace("flights/name", np.array([b"F0", b"F0", b"F2"])),
        "format_version_word": lambda f: f.attrs.__setitem__("format_version", "one"),
        "external_link": _external_link,
        "external_storage": _external_storage,
        "virtual_dataset": _virtual,
        "huge_declared_labels": _huge_labels,
        "huge_images": _huge_images,
        "one_flight": _one_flight,
    }
    return _edit(p, edits[case])


def _external_link(f: h5py.File) -> None:
    other = Path(f.filename).with_name("elsewhere.h5")
    with h5py.File(other, "w") as g:
        g.create_dataset("values", data=np.ones((15, 2), np.float32))
    del f["features/era5/values"]
    f["features/era5/values"] = h5py.ExternalLink(other.name, "values")


def _external_storage(f: h5py.File) -> None:
    del f["samples/cbh_km"]
    f.create_dataset("samples/cbh_km", shape=(15,), dtype=np.float32, external=[("/etc/passwd", 0, 60)])


def _virtual(f: h5py.File) -> None:
    layout = h5py.VirtualLayout(shape=(15, 1, 4, 4), dtype=np.float32)
    layout[:] = h5py.VirtualSource("missing_source.h5", "images", shape=(15, 1, 4, 4))
    del f["images"]
    f.create_virtual_dataset("images", layout, fillvalue=0)


def _huge_labels(f: h5py.File) -> None:
    for key in ("flight", "cbh_km", "time_utc", "sza_deg", "saa_deg"):
        dt = f[f"samples/{key}"].dtype
        del f[f"samples/{key}"]
        f.create_dataset(f"samples/{key}", shape=(10**9,), dtype=dt, chunks=(2**20,))


def _huge_images(f: h5py.File) -> None:
    del f["images"]
    f.create_dataset("images", shape=(15, 1, 16000, 16000), dtype=np.float32, chunks=(1, 1, 512, 512))


def _one_flight(f: h5py.File) -> None:
    _replace("flights/name", np.array([b"F0"]))(f)
    _replace("samples/flight", np.zeros(15, np.int32))(f)
    f["samples/time_utc"][...] = 1.7e9 + np.arange(15) * 10.0


CASES = {
    # case: (path inside the file named in the message, a phrase of what was found)
    "not_hdf5": ("(file)", "first bytes"),
    "empty": ("(file)", "empty file"),
    "truncated": ("(file)", "truncated"),
    "missing_file": ("(file)", "no such file"),
    "bad_format": ("attrs/format", "something-else"),
    "missing_group": ("samples/flight", "no group 'samples'"),
    "missing_dataset": ("samples/time_utc", "missing"),
    "renamed_dataset": ("samples/time_utc", "missing; the file has 'samples/time' (rename it)"),
    "missing_flights": ("flights/name", "missing"),
    "wrong_dtype": ("samples/cbh_km", "dtype"),
    "wrong_rank": ("samples/cbh_km", "rank 2"),
    "length_mismatch": ("samples/sza_deg", "length 14"),
    "nan_label": ("samples/cbh_km", "non-finite"),
    "inf_label": ("samples/cbh_km", "non-finite"),
    "negative_label": ("samples/cbh_km", "-0.3"),
    "flight_out_of_range": ("samples/flight", "out of range"),
    "unsorted_time": ("samples/time_utc", "going backwards"),
    "duplicated_sample": ("samples/time_utc", "duplicated"),
    "time_float32": ("samples/time_utc", "float32"),
    "time_milliseconds": ("samples/time_utc", "looks like milliseconds"),
    "time_milliseconds_1990": ("samples/time_utc", "6.3e+11 at index 0, which looks like milliseconds"),
    "time_negative": ("samples/time_utc", "found -1e+09 at index 0"),
    "feature_no_columns": ("features/era5/values", "at least one feature column; found none (shape (15, 0))"),
    "feature_fill_9999": ("features/era5/values", "-9999 in column"),
    "feature_fill_netcdf": ("features/era5/values", "9.96921e+36 in column"),
    "time_of_day": ("samples/time_utc", "found 64800 at index 0, which looks like a time before 1980"),
    "time_excel_days": ("samples/time_utc", "found 45698.8 at index 0, which looks like a time before 1980"),
    "flight_without_samples": ("samples/flight", "0 for flight 'F3'"),
    "flight_with_one_sample": ("samples/flight", "1 for flight 'F2'"),
    "all_nan_feature": ("features/era5/values", "'x1' is NaN for every sample"),
    "inf_feature": ("features/era5/values", "infinite"),
    "feature_names_mismatch": ("features/era5/names", "1 names"),
    "images_wrong_rank": ("images", "rank 3"),
    "images_wrong_dtype": ("images", "float64"),
    "images_length_mismatch": ("images", "length 17"),
    "nan_pixels": ("images", "sample 4"),
    "constant_images": ("images", "constant image set"),
    "sza_out_of_range": ("samples/sza_deg", "200"),
    "duplicate_flight_names": ("flights/name", "'F0' twice"),
    "format_version_word": ("attrs/format_version", "'one'"),
    "external_link": ("features/era5/values", "an external link"),
    "external_storage": ("samples/cbh_km", "external raw storage"),
    "virtual_dataset": ("images", "a virtual dataset"),
    "huge_declared_labels": ("samples/", "declared"),
    "huge_images": ("images", "declared"),
    "one_flight": ("flights/name", "1 flight"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_campaign_gives_one_clear_error(
    case: str, small_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    path = _break(case, small_file, bad_dir)
    where, found = CASES[case]
    with pytest.raises(CampaignFormatError) as info:
        validate_campaign(path)
    msg = str(info.value)
    assert str(path) in msg and where in msg and "expected" in msg and found in msg, msg
    # the command line says the same in one line and exits non-zero, without a traceback
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and where in err and "Traceback" not in err


def _pool_data(m: int = 30) -> tuple:
    data = small_data()
    data.unlabelled_flight = np.arange(m) % 3
    rng = np.random.default_rng(2)
    return (
        data,
        rng.normal(280, 2, (15, 1, 4, 4)).astype(np.float32),
        rng.normal(280, 2, (m, 1, 4, 4)).astype(np.float32),
    )


def test_unlabelled_pool_round_trip(tmp_path: Path) -> None:
    data, images, pool = _pool_data()
    camp = validate_campaign(write_campaign(tmp_path / "p.h5", data, images=images, unlabelled=pool))
    assert camp.n_unlabelled == 30 and camp.unlabelled_flight.tolist() == (np.arange(30) % 3).tolist()
    np.testing.assert_array_equal(camp.images([4, 1], pool="unlabelled"), pool[[4, 1]])
    assert "30 unlabelled frames" in repr(camp)


POOL_CASES = {
    "flight out of range": (lambda f: f["unlabelled/flight"].__setitem__(0, 9), "unlabelled/flight", "out of range"),
    "wrong image shape": (
        lambda f: (
            f.__delitem__("unlabelled/images"),
            f.create_dataset("unlabelled/images", data=np.ones((30, 1, 5, 4), np.float32)),
        ),
        "unlabelled/images",
        "(1, 4, 4)",
    ),
    "length mismatch": (
        lambda f: (
            f.__delitem__("unlabelled/flight"),
            f.create_dataset("unlabelled/flight", data=np.zeros(29, np.int32)),
        ),
        "unlabelled/images",
        "length 29",
    ),
    "nan pixels": (lambda f: f["unlabelled/images"].__setitem__((7, 0, 1, 1), np.nan), "unlabelled/images", "frame 7"),
    "no labelled images": (lambda f: f.__delitem__("images"), "unlabelled", "no 'images'"),
    "times in milliseconds": (
        lambda f: f.create_dataset("unlabelled/time_utc", data=(1.7e9 + np.arange(30.0)) * 1000),
        "unlabelled/time_utc",
        "which looks like milliseconds",
    ),
}


@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_broken_pool_gives_one_clear_error(case: str, tmp_path: Path) -> None:
    data, images, pool = _pool_data()
    path = write_campaign(tmp_path / "p.h5", data, images=images, unlabelled=pool)
    edit, where, found = POOL_CASES[case]
    with h5py.File(path, "a") as f:
        edit(f)
    with pytest.raises(CampaignFormatError) as info:
        validate_campaign(path)
    assert where in str(info.value) and found in str(info.value), str(info.value)


def test_validate_reads_no_more_than_the_file_holds(small_file: Path, tmp_path: Path) -> None:
    """A 1 MB file declaring a billion samples is refused before anything large is read."""
    import resource

    path = _edit(_copy(small_file, tmp_path), _huge_labels)
    assert path.stat().st_size < 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CampaignFormatError, match="declared"):
        validate_campaign(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: well under 200 MB
