"""The synthetic campaign behaves like the real one (er2-data-facts.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_val_predict

from cbhlib import synth
from cbhlib.campaign import Campaign
from cbhlib.explore import image_statistics, pooled_lag1

# fold order, name, campaign, n, mean, std (er2-data-facts.md)
REFERENCE = [("30Oct24", "WHySMIE", 501, 0.893, 0.333), ("10Feb25", "GLOVE", 163, 0.708, 0.142),
             ("23Oct24", "WHySMIE", 101, 0.705, 0.449), ("12Feb25", "GLOVE", 144, 0.937, 0.483),
             ("18Feb25", "GLOVE", 24, 0.249, 0.102)]


@pytest.fixture(scope="module")
def tables() -> synth.CampaignData:
    return synth.build_tables(synth.preset("default"))[0]


def test_flights_counts_and_statistics(tables: synth.CampaignData) -> None:
    assert tables.flight_names == [r[0] for r in REFERENCE]
    assert tables.flight_campaigns == [r[1] for r in REFERENCE]
    assert np.bincount(tables.flight).tolist() == [501, 163, 101, 144, 24]
    for k, (_, _, _, mean, std) in enumerate(REFERENCE):
        y = tables.cbh_km[tables.flight == k]
        assert abs(y.mean() - mean) < 0.05, (k, y.mean())
        assert abs(y.std() - std) < 0.25 * std, (k, y.std())
        assert 0.1 <= y.min() and y.max() <= 2.0


def test_labels_sit_on_the_lidar_grid(tables: synth.CampaignData) -> None:
    steps = tables.cbh_km / 0.03
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert 40 <= len(np.unique(np.round(steps))) <= 70


def test_track_autocorrelation(default_campaign: Path) -> None:
    assert pooled_lag1(Campaign(default_campaign)) >= 0.8


def test_geometry_missing_fraction_and_no_label_copies(tables: synth.CampaignData) -> None:
    geom = tables.features["geometric"]
    h = geom.values[:, geom.names.index("derived_geometric_H")]
    assert 0.09 <= np.isnan(h).mean() <= 0.18
    for group in tables.features.values():
        for j, name in enumerate(group.names):
            v = group.values[:, j]
            ok = np.isfinite(v)
            r = abs(np.corrcoef(v[ok], tables.cbh_km[ok])[0, 1])
            assert r < 0.9, f"{name} is a near copy of the label (|r| = {r:.2f})"


def test_physical_features_follow_the_seed_units(tables: synth.CampaignData) -> None:
    era5 = tables.features["era5"]
    assert era5.names == synth.ERA5_NAMES
    col = {n: era5.values[:, i] for i, n in enumerate(era5.names)}
    assert 270 < col["t2m"].mean() < 300 and 80_000 < col["sp"].mean() < 105_000
    assert (col["lcl"] >= 0).all()
    np.testing.assert_allclose(col["lcl"], np.maximum((col["t2m"] - col["d2m"]) / 8, 0), atol=1e-4)


def test_truth_ceiling(default_campaign: Path) -> None:
    camp = Campaign(default_campaign)
    attrs = camp.truth_attrs()
    assert 0.9 < attrs["best_r2"] < 1.0
    truth = camp.truth("cbh_km")
    assert truth.shape == camp.cbh_km.shape
    assert np.abs(truth - camp.cbh_km).max() < 0.25  # noise plus the 0.03 km grid
    assert camp.truth("best_r2_per_flight").shape == (5,)


def test_deterministic(tmp_path: Path) -> None:
    cfg = synth.preset("tiny")
    a, b = synth.generate(cfg, tmp_path / "a.h5"), synth.generate(cfg, tmp_path / "b.h5")
    ca, cb = Campaign(a), Campaign(b)
    np.testing.assert_array_equal(ca.cbh_km, cb.cbh_km)
    np.testing.assert_array_equal(ca.feature_matrix()[0], cb.feature_matrix()[0])
    np.testing.assert_array_equal(ca.images(slice(0, None)), cb.images(slice(0, None)))
    other = Campaign(synth.generate(synth.preset("tiny", seed=1), tmp_path / "c.h5"))
    assert not np.array_equal(ca.cbh_km, other.cbh_km)


def test_cache_reused_only_for_identical_parameters(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    cfg = synth.preset("tiny")
    assert synth.ensure_campaign(cfg, path, log=None)[1] is True
    assert synth.ensure_campaign(cfg, path, log=None)[1] is False
    assert synth.ensure_campaign(synth.preset("tiny", label_noise_km=0.05), path, log=None)[1] is True


def test_seed_shape_preset_matches_the_seed() -> None:
    cfg = synth.preset("seed-shape")
    data, _ = synth.build_tables(cfg)
    assert data.n_samples == 933
    assert (cfg.image_channels, cfg.image_height, cfg.image_width) == (3, 440, 640)


def test_each_modality_alone_beats_climatology_under_a_random_split(default_campaign: Path) -> None:
    camp = Campaign(default_campaign)
    y = camp.cbh_km
    stats = image_statistics(camp).to_numpy()
    blocks = {"image statistics": stats, "era5": camp.features["era5"].values,
              "geometry": camp.features["geometric"].values}
    cv = KFold(5, shuffle=True, random_state=0)
    clim = r2_score(y, cross_val_predict(HistGradientBoostingRegressor(max_iter=1), np.zeros((len(y), 1)), y, cv=cv))
    for name, X in blocks.items():
        pred = cross_val_predict(HistGradientBoostingRegressor(max_iter=150, random_state=0), X, y, cv=cv)
        r2 = r2_score(y, pred)
        assert r2 > clim + 0.4, f"{name}: R2 {r2:.2f} vs climatology {clim:.2f}"


def test_images_carry_height_but_no_pixel_encodes_it(default_campaign: Path) -> None:
    camp = Campaign(default_campaign)
    imgs = camp.images(slice(0, 300)).reshape(300, -1)
    y = camp.cbh_km[:300]
    corr = np.array([abs(np.corrcoef(imgs[:, j], y)[0, 1]) for j in range(0, imgs.shape[1], 7)])
    assert np.nanmax(corr) < 0.9
