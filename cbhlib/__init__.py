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

from cbhlib import threads as _threads

_threads.configure()  # before torch or scikit-learn load OpenMP (see cbhlib.threads)

try:
    __version__ = version("cbhlib")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

_EXPORTS = {
    "Campaign": "cbhlib.data.campaign",
    "CampaignData": "cbhlib.data.campaign",
    "FeatureGroup": "cbhlib.data.campaign",
    "write_campaign": "cbhlib.data.campaign",
    "validate_campaign": "cbhlib.data.campaign",
    "campaign_from_dataframe": "cbhlib.data.tabular",
    "to_xarray": "cbhlib.data.xarray_view",
    "Config": "cbhlib.config",
    "load_config": "cbhlib.config",
    "RunDir": "cbhlib.store.rundir",
    "run_mode": "cbhlib.training.runner",
    "ModelRun": "cbhlib.training.runner",
    "pretrain_step": "cbhlib.training.encoders",
    "run_baselines": "cbhlib.evaluation.compare",
    "comparisons": "cbhlib.evaluation.compare",
    "load_predictions": "cbhlib.evaluation.results",
    "headline_table": "cbhlib.evaluation.results",
    "per_flight_table": "cbhlib.evaluation.results",
    "write_summary": "cbhlib.pipeline.summary",
    "load_heads": "cbhlib.training.predict",
    "predict": "cbhlib.training.predict",
    "CbhError": "cbhlib.errors",
    "CampaignFormatError": "cbhlib.errors",
    "ParamsError": "cbhlib.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cbhlib' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
