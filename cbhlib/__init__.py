"""cbhlib: cloud base height from airborne thermal imagery fused with atmospheric context."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cbhlib")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

from cbhlib.errors import CampaignFormatError, CbhError, ParamsError  # noqa: E402

__all__ = ["__version__", "CampaignFormatError", "CbhError", "ParamsError"]
