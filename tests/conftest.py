"""Shared fixtures: small campaigns generated once per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cbhlib import synth
from cbhlib.campaign import CampaignData, FeatureGroup, write_campaign

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~233 samples, 5 flights, 1 x 32 x 32 images."""
    path = tmp_path_factory.mktemp("camp") / "tiny.h5"
    synth.generate(synth.preset("tiny"), path)
    return path


@pytest.fixture(scope="session")
def default_campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default (933 samples, 1 x 64 x 64 images)."""
    path = tmp_path_factory.mktemp("camp") / "default.h5"
    synth.generate(synth.preset("default"), path)
    return path


def small_data(n_per_flight: tuple[int, ...] = (6, 5, 4), k_features: int = 2, seed: int = 0) -> CampaignData:
    """A hand-made valid campaign table (no images)."""
    rng = np.random.default_rng(seed)
    flight = np.concatenate([np.full(n, k) for k, n in enumerate(n_per_flight)])
    n = len(flight)
    time = np.concatenate([1.7e9 + k * 1e5 + np.arange(c) * 10.0 for k, c in enumerate(n_per_flight)])
    cbh = np.round(rng.uniform(0.2, 1.5, n) / 0.03) * 0.03
    return CampaignData(
        flight_names=[f"F{k}" for k in range(len(n_per_flight))], flight=flight, cbh_km=cbh, time_utc=time,
        sza_deg=np.full(n, 45.0), saa_deg=np.full(n, 180.0), source="test",
        features={"era5": FeatureGroup(rng.normal(size=(n, k_features)).astype(np.float32),
                                       [f"x{j}" for j in range(k_features)], ["K"] * k_features)},
    )


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    """A valid small campaign with images (1 x 4 x 4)."""
    data = small_data()
    rng = np.random.default_rng(1)
    images = rng.normal(280, 2, size=(data.n_samples, 1, 4, 4)).astype(np.float32)
    return write_campaign(tmp_path / "small.h5", data, images=images)
