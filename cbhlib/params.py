"""Run parameters: one flat dict (notebook parameters cell / params YAML), checked.

Every key is typed and range-checked; a bad value raises ``ParamsError`` naming the
source, the key, what was expected and what was found.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cbhlib.errors import ParamsError
from cbhlib.models.fusion import MODES, FusionConfig
from cbhlib.models.mae import ENCODERS, EncoderConfig
from cbhlib.pretrain import PretrainConfig
from cbhlib.train import TrainConfig

PROTOCOL_NAMES = ("lofo", "random", "within_flight")
PRETRAIN_SCOPES = ("fold", "all")


@dataclass
class RunParams:
    """Everything one fusion-mode run needs. Field comments are the help text."""

    campaign: str = "data/synthetic_default.h5"  # campaign HDF5 file
    run_dir: str = "runs/default"  # folder for reports, checkpoints and logs
    figures_dir: str = "figures/default"  # folder for PNG figures
    mode: str = "concat"  # image_only, physical_only, concat or attention
    feature_groups: list[str] = field(default_factory=list)  # physical feature groups; empty list means all groups
    protocols: list[str] = field(default_factory=lambda: ["lofo"])  # lofo, random, within_flight
    seeds: list[int] = field(default_factory=lambda: [0])  # one unit per fold and seed
    val_fraction: float = 0.2  # validation share of training flights (time blocks)
    epochs: int = 50  # maximum epochs of head training
    batch_size: int = 32  # samples per step
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    patience: int = 15  # early-stopping patience (epochs)
    huber_delta_km: float = 0.3  # Huber loss delta (km)
    encoder: str = "mae2d"  # mae1d or mae2d
    patch: int = 8  # encoder patch size (pixels)
    embed_dim: int = 192  # encoder width
    depth: int = 4  # encoder blocks
    heads: int = 3  # encoder attention heads
    columns: str = "all"  # mae1d: all (strided) or middle (the seed's single column)
    column_stride: int = 8  # mae1d: encode every n-th column
    pixel_norm: str = "image"  # image: centre each image (calibration-free) or global
    finetune: bool = False  # fine-tune the encoder end to end per unit (slow; default frozen)
    finetune_lr: float = 1e-4  # encoder learning rate when fine-tuning
    regions: int = 4  # image regions per side for attention tokens
    pretrain_scope: str = "fold"  # fold: encoder per held-out flight, pretrained without it; all
    pretrain_epochs: int = 6  # MAE pretraining epochs
    pretrain_batch_size: int = 64  # images per pretraining step
    pretrain_lr: float = 1e-3  # MAE learning rate
    mask_ratio: float = 0.75  # fraction of masked patches
    threads: int = 0  # torch CPU threads; 0 keeps the torch default
    device: str = "cpu"  # torch device for MAE pretraining and embedding (cpu or cuda); heads stay on the CPU
    progress: bool = True  # show progress bars

    # ---- derived configs
    def train_config(self) -> TrainConfig:
        return TrainConfig(mode=self.mode, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay, patience=self.patience,
                           huber_delta_km=self.huber_delta_km, fusion=FusionConfig(mode=self.mode))

    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(name=self.encoder, patch=self.patch, embed_dim=self.embed_dim, depth=self.depth,
                             heads=self.heads, columns=self.columns, column_stride=self.column_stride)

    def pretrain_config(self) -> PretrainConfig:
        return PretrainConfig(encoder=self.encoder_config(), epochs=self.pretrain_epochs,
                              batch_size=self.pretrain_batch_size, lr=self.pretrain_lr,
                              mask_ratio=self.mask_ratio, seed=self.seeds[0] if self.seeds else 0,
                              threads=self.threads, pixel_norm=self.pixel_norm, device=self.device)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_TYPES: dict[str, type] = {f.name: f.type for f in fields(RunParams)}  # type: ignore[misc]


def _check_type(source: str, key: str, value: Any, typ: str) -> Any:
    if typ == "str":
        if not isinstance(value, str):
            raise ParamsError(source, key, "a string", f"{value!r} ({type(value).__name__})")
        return value
    if typ == "bool":
        if not isinstance(value, bool):
            raise ParamsError(source, key, "true or false", f"{value!r} ({type(value).__name__})")
        return value
    if typ == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(source, key, "an integer", f"{value!r} ({type(value).__name__})")
        return value
    if typ == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(source, key, "a number", f"{value!r} ({type(value).__name__})")
        return float(value)
    if typ.startswith("list"):
        inner = typ[5:-1]
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ParamsError(source, key, f"a list of {inner}", f"{value!r} ({type(value).__name__})")
        return [_check_type(source, f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    raise AssertionError(typ)


def parse_params(raw: dict[str, Any], source: str = "parameters", check_paths: bool = True) -> RunParams:
    """Validate a flat parameter dict into :class:`RunParams`.

    Unknown keys are errors (a typo must not silently fall back to a default).
    """
    if not isinstance(raw, dict):
        raise ParamsError(source, "(top level)", "a mapping of parameter names to values",
                          type(raw).__name__)
    unknown = sorted(set(raw) - set(_TYPES))
    if unknown:
        raise ParamsError(source, unknown[0], f"one of the known parameters ({', '.join(sorted(_TYPES))})",
                          "an unknown key")
    values = {k: _check_type(source, k, v, str(_TYPES[k])) for k, v in raw.items()}
    p = RunParams(**values)
    _check_ranges(p, source, check_paths)
    return p


def _check_ranges(p: RunParams, source: str, check_paths: bool) -> None:
    def need(cond: bool, key: str, expected: str) -> None:
        if not cond:
            raise ParamsError(source, key, expected, repr(getattr(p, key)))

    need(p.mode in MODES, "mode", f"one of {', '.join(MODES)}")
    need(p.encoder in ENCODERS, "encoder", f"one of {', '.join(ENCODERS)}")
    need(p.columns in ("all", "middle"), "columns", "all or middle")
    need(p.pixel_norm in ("image", "global"), "pixel_norm", "image or global")
    need(p.pretrain_scope in PRETRAIN_SCOPES, "pretrain_scope", f"one of {', '.join(PRETRAIN_SCOPES)}")
    need(len(p.protocols) > 0 and all(x in PROTOCOL_NAMES for x in p.protocols), "protocols",
         f"a non-empty list from {', '.join(PROTOCOL_NAMES)}")
    need(len(p.seeds) > 0, "seeds", "at least one seed")
    for key in ("epochs", "batch_size", "patience", "patch", "embed_dim", "depth", "heads", "column_stride",
                "regions", "pretrain_batch_size"):
        need(getattr(p, key) >= 1, key, "an integer >= 1")
    need(p.pretrain_epochs >= 0, "pretrain_epochs", "an integer >= 0")
    need(p.threads >= 0, "threads", "an integer >= 0")
    need(p.device == "cpu" or p.device.startswith("cuda"), "device", "cpu or cuda[:N]")
    for key in ("lr", "pretrain_lr", "huber_delta_km", "finetune_lr"):
        need(getattr(p, key) > 0, key, "a number > 0")
    need(p.weight_decay >= 0, "weight_decay", "a number >= 0")
    need(0 < p.val_fraction < 1, "val_fraction", "a number between 0 and 1")
    need(0 < p.mask_ratio < 1, "mask_ratio", "a number between 0 and 1")
    need(p.embed_dim % p.heads == 0, "heads", f"a divisor of embed_dim ({p.embed_dim})")
    if check_paths and not Path(p.campaign).is_file():
        raise ParamsError(source, "campaign", "an existing campaign file",
                          f"'{p.campaign}' (no such file; cwd {os.getcwd()})")


def load_params_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a params YAML with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(path, "(file)", "an existing YAML file", "no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(path, "(file)", "valid YAML", str(exc).splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(path, "(top level)", "a mapping of parameter names to values", type(data).__name__)
    return data


def params_from_namespace(ns: dict[str, Any], source: str = "notebook parameters") -> RunParams:
    """Pick the :class:`RunParams` keys out of a notebook's namespace and validate them."""
    return parse_params({k: ns[k] for k in _TYPES if k in ns}, source)
