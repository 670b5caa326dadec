"""Shared fixtures: small campaigns generated once per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cbhlib.data.campaign import CampaignData, FeatureGroup, write_campaign
from cbhlib.sources import synth

ROOT = Path(__file__).resolve().parents[1]


def project_copy(root: Path) -> Path:
    """A user's copy of the project in ``root``: notebooks/, params/ and an empty data/."""
    import shutil

    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copytree(ROOT / "params", root / "params")
    (root / "data").mkdir()
    return root


@pytest.fixture(scope="session")
def tiny_campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~233 samples, 5 flights, 1 x 32 x 32 images."""
    path = tmp_path_factory.mktemp("camp") / "tiny.h5"
    synth.generate(synth.preset("tiny"), path)
    return path


@pytest.fixture(scope="session")
def tiny_easy_campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny campaign with the previous (easy) feature model: for tests of the trainer
    that need signal a model can learn, not the calibrated difficulty."""
    path = tmp_path_factory.mktemp("camp") / "tiny_easy.h5"
    synth.generate(synth.preset("tiny", feature_model="easy"), path)
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
        flight_names=[f"F{k}" for k in range(len(n_per_flight))],
        flight=flight,
        cbh_km=cbh,
        time_utc=time,
        sza_deg=np.full(n, 45.0),
        saa_deg=np.full(n, 180.0),
        source="test",
        features={
            "era5": FeatureGroup(
                rng.normal(size=(n, k_features)).astype(np.float32),
                [f"x{j}" for j in range(k_features)],
                ["K"] * k_features,
            )
        },
    )


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    """A valid small campaign with images (1 x 4 x 4)."""
    data = small_data()
    rng = np.random.default_rng(1)
    images = rng.normal(280, 2, size=(data.n_samples, 1, 4, 4)).astype(np.float32)
    return write_campaign(tmp_path / "small.h5", data, images=images)


def smooth_images(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Learnable images: random ramps plus a smooth blob, in kelvin (n, 1, size, size)."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    a, b, cx, cy = rng.normal(size=(4, n, 1, 1))
    blob = np.exp(-((xx - 0.4 * cx) ** 2 + (yy - 0.4 * cy) ** 2) / 0.3)
    return (280 + 3 * (a * yy + b * xx) - 4 * blob)[:, None].astype(np.float32)


@pytest.fixture
def pool_file(tmp_path: Path) -> Path:
    """3 flights (40/30/30 samples) with smooth 1 x 16 x 16 images and 2 unlabelled frames per sample."""
    rng = np.random.default_rng(5)
    data = small_data((40, 30, 30), seed=4)
    m = 2 * data.n_samples
    data.unlabelled_flight = np.repeat(data.flight, 2)
    data.unlabelled_time_utc = np.repeat(data.time_utc, 2) + np.tile([3.0, 6.0], data.n_samples)
    return write_campaign(
        tmp_path / "pool.h5", data, images=smooth_images(data.n_samples, 16, rng), unlabelled=smooth_images(m, 16, rng)
    )
