"""One source of truth for every setting: a nested dataclass tree, merged from layers.

A setting has a dotted key (``encoder.patch``, ``train.epochs``, ``seeds``), a flat name
used by notebook parameters cells and papermill (``encoder_patch``, ``train_epochs``,
``seeds``), a type, a default, a help line and its allowed values, all declared once
with :func:`cbhlib.fields.opt`. ``load_config(*layers, overrides=...)`` merges YAML files
(read with ``yaml.safe_load``), mappings and ``--set key=value`` overrides in order and
rejects unknown keys and wrong types with the same one-line :class:`ParamsError`
wherever they come from (``cbh run``/``train``/``pretrain``, notebooks, the pipeline).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from cbhlib.constants import DEFAULT_CAMPAIGN, PROTOCOLS
from cbhlib.errors import ParamsError
from cbhlib.fields import check_constraints, check_plain, checked_yaml, coerce, opt, type_name
from cbhlib.models.fusion import HeadConfig
from cbhlib.models.mae import EncoderConfig
from cbhlib.sections import (
    BASELINES,
    MODELS,
    NEURAL_BASELINES,
    PRETRAIN_SCOPES,
    AdaptConfig,
    CompareConfig,
    ExploreConfig,
    FiguresConfig,
    PretrainConfig,
    SweepConfig,
    TrainConfig,
)

__all__ = [
    "BASELINES",
    "MODELS",
    "NEURAL_BASELINES",
    "PRETRAIN_SCOPES",
    "AdaptConfig",
    "CompareConfig",
    "Config",
    "ExploreConfig",
    "FiguresConfig",
    "HeadConfig",
    "PretrainConfig",
    "SweepConfig",
    "TrainConfig",
    "load_config",
]


# the sections of the tree (one dataclass each) live in cbhlib/sections.py
@dataclass
class Config:
    """Every setting of a run. Top-level fields hold the run; sections hold the rest."""

    campaign: str = opt(DEFAULT_CAMPAIGN, "campaign HDF5 file (relative paths: from the project root)")
    run_dir: str = opt("runs/interactive", "run folder: reports, checkpoints, encoders, figures, logs")
    seeds: list[int] = opt(
        [0, 1, 2, 3, 4], "one unit per fold and seed; a seed drives its encoder and its head", min=0, max=2**31 - 1
    )
    protocols: list[str] = opt(
        list(PROTOCOLS), "lofo (honest), within_flight, random (leaky, for contrast)", choices=PROTOCOLS
    )
    val_fraction: float = opt(
        0.2, "validation share of the training flights (contiguous time blocks)", above=0, max=0.8
    )
    feature_groups: list[str] = opt([], "physical feature groups to use; empty: every group in the file")
    device: str = opt("auto", "torch device: auto (CUDA when present), cpu, cuda or cuda:N")
    threads: int = opt(0, "torch CPU threads; 0 keeps the torch default", min=0, max=1024)
    progress: bool = opt(True, "progress bars (headless pipeline runs turn them off)")
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)

    def to_nested(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON ready)."""
        return dataclasses.asdict(self)

    def get(self, key: str) -> Any:
        """Value of a dotted key."""
        obj: Any = self
        for part in key.split("."):
            obj = getattr(obj, part)
        return obj

    @property
    def seed(self) -> int:
        """The notebook-level random seed (the first unit seed)."""
        return self.seeds[0]


# --------------------------------------------------------------------------- the leaves


@dataclass(frozen=True)
class Leaf:
    """One setting: dotted key, flat notebook name, type hint, default, help, constraints."""

    key: str
    name: str
    type: Any
    default: Any
    help: str
    meta: Mapping[str, Any]


def _walk(cls: type, prefix: str = "") -> Iterator[Leaf]:
    hints = typing.get_type_hints(cls)
    inst = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from _walk(tp, key + ".")
        else:
            yield Leaf(key, key.replace(".", "_"), tp, getattr(inst, f.name), f.metadata.get("help", ""), f.metadata)


@lru_cache(maxsize=1)
def leaves() -> dict[str, Leaf]:
    """Every setting by dotted key, in declaration order."""
    out = {leaf.key: leaf for leaf in _walk(Config)}
    names = [leaf.name for leaf in out.values()]
    assert len(set(names)) == len(names), "flat names must be unique"
    return out


@lru_cache(maxsize=1)
def by_name() -> dict[str, Leaf]:
    """Every setting by flat notebook name."""
    return {leaf.name: leaf for leaf in leaves().values()}


SECTIONS = tuple(
    f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(typing.get_type_hints(Config)[f.name])
)


def section_leaves(*sections: str) -> list[Leaf]:
    """Top-level settings plus those of the named sections (what a notebook declares)."""
    return [lf for lf in leaves().values() if "." not in lf.key or lf.key.split(".")[0] in sections]


def resolve_key(key: str, source: object) -> str:
    """Dotted key for a dotted key or a flat name; unknown keys fail with a suggestion."""
    if key in leaves():
        return key
    if key in by_name():
        return by_name()[key].key
    known = list(leaves()) + list(by_name())
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else " (`cbh params` lists them)"
    raise ParamsError(source, key, "a known setting" + hint, "an unknown key")


def flatten(layer: Mapping[str, Any], source: object, prefix: str = "") -> dict[str, Any]:
    """Nested mapping (sections) and/or dotted keys -> {dotted key: value}."""
    if not isinstance(layer, Mapping):
        raise ParamsError(source, prefix.rstrip(".") or "(top level)", "a mapping of settings", type(layer).__name__)
    out: dict[str, Any] = {}
    for k, v in layer.items():
        if not isinstance(k, str):
            raise ParamsError(source, repr(k), "a setting name", f"a key of type {type(k).__name__}")
        full = prefix + k
        if full in SECTIONS and isinstance(v, Mapping):
            out.update(flatten(v, source, full + "."))
        else:
            out[resolve_key(full, source)] = v
    return out


# --------------------------------------------------------------------------- loading


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping read with ``yaml.safe_load``; every problem names the file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(path, "(file)", "an existing YAML file", "a folder" if path.is_dir() else "no such file")
    try:
        data = checked_yaml(path.read_text(), path, "(file)")
    except yaml.YAMLError as exc:
        raise ParamsError(path, "(file)", "valid YAML", yaml_problem(exc)) from None
    except UnicodeDecodeError:
        raise ParamsError(path, "(file)", "a UTF-8 text file", "undecodable bytes") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(path, "(top level)", "a mapping of settings", type(data).__name__)
    return data


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint and where (``expected ',' or ']' ... at line 3, column 1``), in one line."""
    mark, what = getattr(exc, "problem_mark", None), getattr(exc, "problem", None) or getattr(exc, "context", None)
    if mark is None or not what:
        return str(exc).splitlines()[0]
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}"


def parse_value(text: str, source: object, key: str) -> Any:
    """A ``--set`` value: a YAML scalar or list (``3``, ``0.1``, ``[0, 1]``, ``true``), else the raw string."""
    try:
        value = checked_yaml(text, source, key)
    except yaml.YAMLError as exc:
        raise ParamsError(
            source, key, "a YAML value (number, true/false, [list], text)", f"{text!r} ({str(exc).splitlines()[0]})"
        ) from None
    check_plain(source, key, value)
    return value


def parse_sets(items: list[str] | None, source: str = "--set") -> dict[str, Any]:
    """``key=value`` strings -> {key: value} (keys not resolved yet)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ParamsError(source, item, "key=value", repr(item))
        key, text = item.split("=", 1)
        out[key.strip()] = parse_value(text, source, key.strip())
    return out


Layer = str | os.PathLike | Mapping[str, Any] | tuple[str, Mapping[str, Any]]


def load_config(*layers: Layer, overrides: Mapping[str, Any] | None = None, check: bool = True) -> Config:
    """Merge layers in order onto the defaults.

    Args:
        layers: YAML paths, mappings (source "parameters"), or ``(source, mapping)`` pairs.
        overrides: applied last (source "--set").
        check: run the cross-field checks.

    Raises:
        ParamsError: naming the source, the key, what was expected and what was found.
    """
    values: dict[str, tuple[Any, object]] = {}
    items: list[tuple[object, Mapping[str, Any]]] = []
    for layer in layers:
        if isinstance(layer, (str, os.PathLike)):
            items.append((layer, read_yaml(layer)))
        elif isinstance(layer, tuple):
            items.append(layer)
        else:
            items.append(("parameters", layer))
    if overrides:
        items.append(("--set", overrides))
    for source, mapping in items:
        for key, value in flatten(mapping, source).items():
            leaf = leaves()[key]
            value = coerce(source, key, value, leaf.type)
            check_constraints(source, key, value, leaf.meta)
            values[key] = (value, source)
    cfg = Config()
    for key, (value, _) in values.items():
        *parents, last = key.split(".")
        obj: Any = cfg
        for p in parents:
            obj = getattr(obj, p)
        setattr(obj, last, value)
    if check:
        check_config(cfg, {k: s for k, (_, s) in values.items()})
    return cfg


def check_config(cfg: Config, sources: Mapping[str, object] | None = None) -> None:
    """Checks that involve more than one setting (each names the key at fault)."""
    src = sources or {}

    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ParamsError(src.get(key, "parameters"), key, expected, repr(cfg.get(key)))

    need(len(cfg.seeds) > 0 and len(set(cfg.seeds)) == len(cfg.seeds), "seeds", "a non-empty list of distinct seeds")
    need(
        len(cfg.protocols) > 0 and len(set(cfg.protocols)) == len(cfg.protocols),
        "protocols",
        f"a non-empty list of distinct protocols from {', '.join(PROTOCOLS)}",
    )
    need(
        cfg.encoder.embed_dim % cfg.encoder.heads == 0,
        "encoder.heads",
        f"a divisor of encoder.embed_dim ({cfg.encoder.embed_dim})",
    )
    need(
        cfg.encoder.decoder_dim % cfg.encoder.decoder_heads == 0,
        "encoder.decoder_heads",
        f"a divisor of encoder.decoder_dim ({cfg.encoder.decoder_dim})",
    )
    need(
        cfg.head.attn_dim % cfg.head.attn_heads == 0,
        "head.attn_heads",
        f"a divisor of head.attn_dim ({cfg.head.attn_dim})",
    )
    need(len(cfg.head.hidden) >= 1 and len(cfg.head.phys_hidden) >= 1, "head.hidden", "at least one hidden layer")
    too_big = cfg.head.training_problem(len(cfg.seeds), cfg.encoder.embed_dim)  # before anything is allocated
    if too_big:
        raise ParamsError(src.get("head.hidden" if too_big[0] == "head" else "seeds", "parameters"), *too_big)
    dev = cfg.device
    need(
        dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
        "device",
        "auto, cpu, cuda or cuda:N",
    )


def config_from_namespace(ns: Mapping[str, Any], source: str = "notebook parameters") -> Config:
    """A notebook's parameters (flat names found in its namespace) merged onto the defaults.

    Raises:
        ParamsError: naming the parameter as the notebook (and papermill's ``-p``) spells it,
            with its setting's dotted key beside it.
    """
    try:
        return load_config((source, {name: ns[name] for name in by_name() if name in ns}))
    except ParamsError as exc:
        leaf = leaves().get(exc.key.split("[")[0])
        if exc.source != source or leaf is None or leaf.name == leaf.key:
            raise
        name = leaf.name + exc.key[len(leaf.key) :]
        expected = exc.expected.replace(f"write {exc.key}=", f"write {name}=")
        raise ParamsError(exc.source, name, expected, exc.found, setting=exc.key) from None


def notebook_values(cfg: Config, declared: set[str], only_changed: bool = True) -> dict[str, Any]:
    """Papermill parameters for a notebook declaring ``declared`` flat names.

    Only values that differ from the declared defaults are passed (the injected cell then
    shows exactly what this run changed). Values are plain and type-checked.
    """
    out = {}
    for name in sorted(declared):
        leaf = by_name().get(name)
        if leaf is None:
            continue
        value = cfg.get(leaf.key)
        if only_changed and value == leaf.default:
            continue
        check_plain("notebook parameters", leaf.key, value)
        out[name] = value
    return out


def describe() -> list[dict[str, Any]]:
    """One row per setting: key, notebook name, type, default, help (for ``cbh params``)."""
    return [
        {"key": lf.key, "name": lf.name, "type": type_name(lf.type), "default": lf.default, "help": lf.help}
        for lf in leaves().values()
    ]


def parameters_cell(*sections: str) -> str:
    """The parameters cell a notebook declaring these sections should hold (used by tests)."""
    return "\n".join(
        f"{lf.name}: {type_name(lf.type)} = {lf.default!r}  # {lf.help}" for lf in section_leaves(*sections)
    )
