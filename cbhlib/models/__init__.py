"""Models: torch modules only (MAE encoders and their layers, the physical encoder, fusion heads).

May import: ``fields`` and ``errors``; nothing that reads files or trains.
"""

from cbhlib.models.fusion import MODES, FusionHeads, HeadConfig
from cbhlib.models.mae import MAE1D, MAE2D, EncoderConfig, build_encoder, mae1d_seed, mae2d_small

__all__ = [
    "MODES",
    "HeadConfig",
    "FusionHeads",
    "MAE1D",
    "MAE2D",
    "EncoderConfig",
    "build_encoder",
    "mae1d_seed",
    "mae2d_small",
]
