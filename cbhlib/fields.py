"""Declaring a config field once: default, help text and allowed values together.

``opt(default, "help", choices=..., min=...)`` is a dataclass ``field`` whose metadata
the config machinery reads to type-check, range-check, document and write notebook
parameters cells. Only plain values are allowed (str, int, float, bool, None and lists
or dicts of those): nothing that could become code in a notebook.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from typing import Any

import yaml

from cbhlib.errors import ParamsError


def opt(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
) -> Any:
    """A dataclass field with its default, help text and constraints declared in one place.

    Args:
        default: the value (lists are copied per instance).
        help: one line shown in notebooks, ``cbh params`` and errors.
        choices: allowed values (for lists: allowed items).
        min, max: inclusive bounds; above: exclusive lower bound.
    """
    meta = {"help": help, "choices": choices, "min": min, "max": max, "above": above}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: _copy(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def type_name(tp: Any) -> str:
    """``list[int]``-style name of a type hint, as written in notebook parameters cells."""
    origin = typing.get_origin(tp)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in typing.get_args(tp))}]"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    return "None" if tp is type(None) else tp.__name__


def check_plain(source: object, key: str, value: Any) -> None:
    """Refuse anything but str, int, float (finite), bool, None and lists/dicts of those."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParamsError(source, key, "a finite number", repr(value))
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(source, f"{key}[{i}]", v)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ParamsError(source, key, "a mapping with string keys", f"key {k!r} ({type(k).__name__})")
            check_plain(source, f"{key}.{k}", v)
        return
    raise ParamsError(
        source,
        key,
        "a plain value (string, number, true/false, null, list or mapping)",
        f"a value of type {type(value).__name__}",
    )


def coerce(source: object, key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the type hint ``tp``; return it (ints widened to float where asked)."""
    check_plain(source, key, value)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(source, key, value, a)
            except ParamsError as exc:
                errors.append(exc)
        raise ParamsError(source, key, type_name(tp), _found(value))
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):  # `seeds=3` is not `seeds=[3]`: say how to write one value
            if isinstance(value, str) and value.strip().startswith("["):  # papermill's -p passes text
                name = key.split("[")[0].replace(".", "_")  # the notebook's (and papermill's) name
                one = f"; a list written as text: with papermill pass it as YAML, -y '{name}: {value}'"
            elif (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
                isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w.]*", value)
            ):  # one number or one word (a text like 0.1-2 is no single value)
                one = f"; for one value write {key}=[{value}]"
            else:
                one = ""
            raise ParamsError(source, key, f"a list of {type_name(inner)} in brackets{one}", _found(value))
        return [coerce(source, f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(source, key, "a mapping", _found(value))
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(source, key, "true or false", _found(value))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(source, key, "an integer", _found(value))
        return value
    if tp is float:
        if isinstance(value, str) and EXPONENT.fullmatch(value.strip()):
            return float(value)  # 1e-3: YAML 1.1 (PyYAML) reads an exponent without a dot as text
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(source, key, "a number", _found(value))
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(source, key, "a string", _found(value))
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _found(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def check_constraints(source: object, key: str, value: Any, meta: dict[str, Any]) -> None:
    """Apply ``choices`` / ``min`` / ``max`` / ``above`` to a value or to every item of a list."""
    items = value if isinstance(value, list) else [value]
    for v in items:
        if v is None:
            continue
        if meta.get("choices") is not None and v not in meta["choices"]:
            raise ParamsError(source, key, f"one of {', '.join(map(str, meta['choices']))}", repr(v))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lo, hi, above = meta.get("min"), meta.get("max"), meta.get("above")
            if lo is not None and v < lo:
                raise ParamsError(source, key, f"a number >= {lo:g}", repr(v))
            if hi is not None and v > hi:
                raise ParamsError(source, key, f"a number <= {hi:g}", repr(v))
            if above is not None and v <= above:
                raise ParamsError(source, key, f"a number > {above:g}", repr(v))


def parse_dataclass(cls: type, raw: Any, source: object, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys, types and constraints.

    Fields declared without a default are required. Errors name ``source`` and the
    (prefixed) key, like every other settings error.
    """
    if not isinstance(raw, dict):
        raise ParamsError(source, prefix.rstrip(".") or "(top level)", "a mapping", _found(raw))
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ParamsError(source, f"{prefix}{key}", f"one of {', '.join(names)}{hint}", "an unknown key")
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ParamsError(source, key, "a value", "missing")
            continue
        value = coerce(source, key, raw[f.name], hints[f.name])
        check_constraints(source, key, value, f.metadata)
        values[f.name] = value
    return cls(**values)


def checked_yaml(text: str, source: object, key: str) -> Any:
    """``yaml.safe_load`` refusing anchors and aliases (a 400-byte alias bomb expands to gigabytes
    when its values are checked), nesting deeper than 20 levels and texts over 1 MiB; read event by
    event first, nothing expanded."""
    if len(text) > 2**20:
        raise ParamsError(source, key, "YAML under 1 MiB", f"{len(text):,} characters")
    depth = 0
    open_maps: list[list[Any]] = []  # per open collection: [keys seen, expecting a key] (None for a list)
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        depth += isinstance(ev, yaml.CollectionStartEvent) - isinstance(ev, yaml.CollectionEndEvent)
        if depth > 20:
            raise ParamsError(source, key, "YAML nested at most 20 levels", f"more at line {ev.start_mark.line + 1}")
        if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None):
            mark = f"{'*' if isinstance(ev, yaml.AliasEvent) else '&'}{ev.anchor} at line {ev.start_mark.line + 1}"
            raise ParamsError(source, key, "YAML without anchors or aliases", mark)
        if isinstance(ev, (yaml.ScalarEvent, yaml.CollectionStartEvent)) and open_maps and open_maps[-1][0] is not None:
            top = open_maps[-1]
            if top[1] and isinstance(ev, yaml.ScalarEvent):  # a mapping key: the last of two would win silently
                if ev.value in top[0]:
                    raise ParamsError(source, key, "each key once per mapping", f"'{ev.value}' again at line "
                                      f"{ev.start_mark.line + 1}")  # fmt: skip
                top[0].add(ev.value)
            top[1] = not top[1]
        if isinstance(ev, yaml.CollectionStartEvent):
            open_maps.append([set() if isinstance(ev, yaml.MappingStartEvent) else None, True])
        elif isinstance(ev, yaml.CollectionEndEvent):
            open_maps.pop()
    return yaml.safe_load(text)
