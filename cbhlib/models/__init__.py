"""Models: MAE image encoders, the physical encoder and fusion heads."""

from cbhlib.models.fusion import MODES, FusionHeads, HeadConfig
from cbhlib.models.mae import MAE1D, MAE2D, EncoderConfig, build_encoder, mae1d_seed, mae2d_small

__all__ = ["MODES", "HeadConfig", "FusionHeads", "MAE1D", "MAE2D", "EncoderConfig",
           "build_encoder", "mae1d_seed", "mae2d_small"]
