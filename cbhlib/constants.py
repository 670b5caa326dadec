"""Names and numbers declared once for the whole package."""

from __future__ import annotations

DEFAULT_CAMPAIGN = "data/synthetic_default.h5"  # the embedded synthetic campaign, relative to the project root

PROTOCOLS = ("lofo", "random", "within_flight")
PROTOCOL_LABELS = {
    "lofo": "leave-one-flight-out (validation: time blocks of training flights)",
    "random": "pooled random 5-fold (LEAKY: neighbours along a track fall on both sides)",
    "within_flight": "time-blocked 5-fold within each flight",
}

CBH_GRID_KM = 0.03  # CPL layer-base resolution
ESPY_KM_PER_K = 0.125  # Espy: cloud base rises 125 m per K of dewpoint depression

# The seed's nine ERA5 variables (WP2_Features.hdf5) and three shadow features (WP1), with units.
ERA5_VARIABLES: dict[str, str] = {
    "blh": "km",
    "lcl": "km",
    "inversion_height": "km",
    "moisture_gradient": "g/kg/km",
    "stability_index": "K/km",
    "t2m": "K",
    "d2m": "K",
    "sp": "Pa",
    "tcwv": "kg/m2",
}
GEOMETRY_VARIABLES: dict[str, str] = {
    "derived_geometric_H": "km",
    "shadow_length_pixels": "pixels",
    "shadow_detection_confidence": "1",
}

# label-free flight adaptation (cbhlib.evaluation.flightnorm): normalisations, levels, model-name suffixes
FLIGHT_NORMS = ("none", "flight", "running")
FLIGHT_LEVELS = ("training", "inputs")
FLIGHT_NORM_SUFFIXES = {"flight": "_fn", "running": "_fnrun"}

# the intervals `cbh predict --intervals` writes (cbhlib.evaluation.intervals.newflight): label-free ones, the
# first the default, then the online one, which learns from the new flight's lidar labels as they arrive
INTERVAL_METHODS = ("flight_t", "flight", "flight_max", "online")

# heads trained without one training flight (nested leave-one-flight-out): their residuals calibrate intervals
NESTED_PROTOCOL = "lofo_nested"
NESTED_BASE = 10_000  # nested fold id = outer fold id * NESTED_BASE + the left-out training flight's index
