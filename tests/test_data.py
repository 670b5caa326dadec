"""Fold splits, per-fold preprocessing and the lazy image dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cbhlib.data.campaign import Campaign
from cbhlib.data.folds import (
    FeatureScaler,
    image_loader,
    lofo_folds,
    random_folds,
    time_block_split,
    within_flight_folds,
)


def test_lofo_holds_out_one_flight_and_validates_on_training_flights(tiny_campaign: Path) -> None:
    camp = Campaign(tiny_campaign)
    folds = lofo_folds(camp)
    assert [f.test_flight for f in folds] == camp.flight_names
    for f in folds:
        k = camp.flight_names.index(f.test_flight)
        assert set(camp.flight[f.test_idx]) == {k}
        assert k not in set(camp.flight[f.train_idx]) and k not in set(camp.flight[f.val_idx])
        assert len(np.intersect1d(f.train_idx, f.val_idx)) == 0
        assert len(f.train_idx) + len(f.val_idx) + len(f.test_idx) == camp.n_samples
        assert len(f.val_idx) > 0


def test_validation_is_made_of_contiguous_time_blocks() -> None:
    flight = np.repeat([0, 1], [50, 30])
    time = np.arange(80, dtype=float)
    train, val = time_block_split(np.arange(80), flight, time, fraction=0.2, n_blocks=5, seed=3)
    for k in (0, 1):
        v = val[flight[val] == k]
        assert len(v) in (6, 10) and np.all(np.diff(v) == 1)  # one block of 5 per flight
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 80


def test_other_protocols(tiny_campaign: Path) -> None:
    camp = Campaign(tiny_campaign)
    rnd = random_folds(camp)
    assert len(rnd) == 5 and sum(len(f.test_idx) for f in rnd) == camp.n_samples
    wf = within_flight_folds(camp)
    for f in wf:
        flights = set(camp.flight[np.concatenate([f.train_idx, f.val_idx, f.test_idx])])
        assert len(flights) == 1  # train, validation and test from the same flight


def test_scaler_is_fitted_on_training_rows_only() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    X[rng.random((100, 3)) < 0.2] = np.nan
    X[80:] += 100.0  # the "test flight" is far away
    sc = FeatureScaler().fit(X[:80])
    st = sc.state()
    np.testing.assert_allclose(st["median"], np.nanmedian(X[:80], axis=0), rtol=1e-6)
    Z = sc.transform(X)
    assert np.isfinite(Z).all()
    assert abs(Z[:80].mean()) < 0.2 and Z[80:].mean() > 10


def test_dataloader_with_workers_reads_the_right_images(tiny_campaign: Path) -> None:
    camp = Campaign(tiny_campaign)
    camp.images([0])  # a handle open in the parent before the fork must not leak into workers
    idx = np.arange(0, 40)
    seen = {}
    for x, j in image_loader(camp, idx, batch_size=8, num_workers=2):
        for img, jj in zip(x, j.tolist(), strict=True):
            seen[jj] = img
    assert sorted(seen) == idx.tolist()
    expected = torch.from_numpy(camp.images(idx))
    for j in idx:
        torch.testing.assert_close(seen[j], expected[j])
