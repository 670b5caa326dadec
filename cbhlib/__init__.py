"""cbhlib: cloud base height from airborne thermal imagery fused with atmospheric context.

The public surface, for use from your own notebook (imported lazily, so ``import cbhlib``
stays cheap)::

    from cbhlib import Campaign, headline_table, load_config, run_mode

    cfg = load_config(overrides={"campaign": "data/my_campaign.h5", "run_dir": "my_run",
                                 "train.mode": "physical_only", "seeds": [0, 1, 2]})
    result = run_mode(cfg)                    # every protocol, every fold and seed
    pred = result.predictions(Campaign(cfg.campaign))   # the model and climatology, tidy
    headline_table(pred)                      # pooled / per-flight MAE, R2, mean ± sd over seeds
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("cbhlib")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

_EXPORTS = {
    "Campaign": "cbhlib.campaign", "CampaignData": "cbhlib.campaign", "FeatureGroup": "cbhlib.campaign",
    "write_campaign": "cbhlib.campaign", "validate_campaign": "cbhlib.campaign",
    "campaign_from_dataframe": "cbhlib.tabular", "to_xarray": "cbhlib.tabular",
    "Config": "cbhlib.config", "load_config": "cbhlib.config",
    "RunDir": "cbhlib.rundir",
    "run_mode": "cbhlib.runner", "ModelRun": "cbhlib.runner",
    "pretrain_step": "cbhlib.encoders",
    "run_baselines": "cbhlib.compare", "comparisons": "cbhlib.compare",
    "load_predictions": "cbhlib.results", "headline_table": "cbhlib.results", "per_flight_table": "cbhlib.results",
    "load_heads": "cbhlib.predict", "predict": "cbhlib.predict",
    "CbhError": "cbhlib.errors", "CampaignFormatError": "cbhlib.errors", "ParamsError": "cbhlib.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cbhlib' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
