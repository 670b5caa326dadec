"""Errors meant for people: each says where, what was expected and what was found."""

from __future__ import annotations


class CbhError(Exception):
    """Base class for every error the ``cbh`` command reports without a traceback."""


class CampaignFormatError(CbhError):
    """A campaign file breaks the contract in ARCHITECTURE.md.

    Args:
        file: path of the offending file.
        where: path inside the file (``samples/cbh_km``) or a short description.
        expected: what the contract asks for.
        found: what the file holds.
    """

    def __init__(self, file: object, where: str, expected: str, found: str) -> None:
        self.file, self.where, self.expected, self.found = str(file), where, expected, found
        super().__init__(f"{self.file}: {where}: expected {expected}; found {found}")


class ParamsError(CbhError):
    """A run's parameters (YAML or notebook) are invalid."""

    def __init__(self, source: object, key: str, expected: str, found: str, setting: str = "") -> None:
        """``setting``: the dotted key, where ``key`` is a notebook's flat name for it."""
        self.source, self.key, self.expected, self.found, self.setting = str(source), key, expected, found, setting
        also = f" (setting {setting})" if setting else ""
        super().__init__(f"{self.source}: parameter '{key}'{also}: expected {expected}; found {found}")


class CheckpointError(CbhError):
    """A checkpoint cannot be loaded safely or does not fit the model."""


class TrainingDivergedError(CbhError):
    """A loss or prediction became non-finite during training."""


class ER2ImportError(CbhError):
    """Raw ER-2 files or their import config cannot be turned into a campaign."""


class PipelineError(CbhError):
    """A notebook of the pipeline failed."""
