"""What others measured on the real ER-2 data (../shared/reference/published-results.md).

Every row names its protocol and data, so no one mistakes these for our synthetic numbers.
"""

from __future__ import annotations

import pandas as pd

PUBLISHED = [
    # source, model, protocol, data, r2, mae_km
    (
        "seed WP-4",
        "image_only (1-D MAE middle column)",
        "leave-one-flight-out, mean of 5 folds",
        "real ER-2, 933 samples",
        -3.13,
        0.322,
    ),
    (
        "seed WP-3",
        "gradient-boosted trees, 12 physical features",
        "leave-one-flight-out, mean of folds",
        "real ER-2, 933 samples",
        -14.15,
        0.491,
    ),
    (
        "seed WP-3",
        "gradient-boosted trees, 12 physical features",
        "stratified random 5-fold (leaky)",
        "real ER-2, 933 samples",
        0.676,
        0.136,
    ),
    ("same group", "2-D CNN image_only", "stratified random 5-fold (leaky)", "real ER-2, 933 samples", 0.279, 0.233),
    ("same group", "2-D CNN concat", "stratified random 5-fold (leaky)", "real ER-2, 933 samples", 0.180, 0.246),
    ("same group", "2-D CNN attention", "stratified random 5-fold (leaky)", "real ER-2, 933 samples", 0.326, 0.222),
    (
        "same group",
        "temporal ViT (5 frames)",
        "stratified random 5-fold (leaky)",
        "real ER-2, 933 samples",
        0.727,
        0.126,
    ),
    ("same group", "GBDT", "pooled random split (leaky)", "real ER-2, 1,426 samples", 0.924, 0.050),
    ("same group", "GBDT", "per-flight split", "real ER-2, 1,426 samples", 0.744, 0.117),
    ("same group", "GBDT", "leave-one-flight-out", "real ER-2, 1,426 samples", -15.4, 0.422),
    ("same group", "GBDT", "leave-one-flight-out", "real ER-2, 5,500 samples, 6 flights", -5.36, 0.518),
    ("Lenhardt et al. 2024", "MODIS + ordinal regression", "independent ceilometer truth", "satellite", None, 0.379),
]


def published_table() -> pd.DataFrame:
    return pd.DataFrame(PUBLISHED, columns=["source", "model", "protocol", "data", "r2", "mae_km"])
