"""What every command shares: output lines, config layering, the synthetic default."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cbhlib.atomic import special_kind
from cbhlib.errors import CbhError

Sub = "argparse._SubParsersAction[argparse.ArgumentParser]"


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0, 9), *range(11, 32), 127, *range(0x80, 0xA0)]}


def clean(text: str, newlines: bool = True) -> str:
    """``text`` with control characters (terminal escapes in a flight name, ...) shown as ``\\xNN``;
    newlines are kept only with ``newlines`` (an error stays on one line)."""
    table = dict(_CONTROL) if newlines else {**_CONTROL, 10: "\\n"}
    return text.translate(table)


def say(msg: str) -> None:
    """Lines to standard output (the CLI is the one place that writes them), control characters escaped."""
    sys.stdout.write(clean(msg) + "\n")
    sys.stdout.flush()


def fail(command: str, msg: str) -> None:
    """The one error line of a failed command on standard error: ``cbh <command>: <msg>``, on one line."""
    sys.stderr.write(f"cbh {command}: {clean(msg, newlines=False)}\n")


def config_from(layers: list[str] | None, sets: list[str] | None, **fixed: Any) -> Any:
    """Config from YAML layers, then ``--set`` overrides, then explicit options."""
    from cbhlib.config import load_config, parse_sets

    extra = {k: v for k, v in fixed.items() if v is not None}
    return load_config(*(layers or []), ("command line", extra), overrides=parse_sets(sets))


def _synthetic_params(path: Path) -> dict[str, Any] | None:
    """The generator parameters of a campaign file this package generated (so regenerating it
    replaces no real data; ``{}`` for one made before files recorded them), else None."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            src, sha, params = (f.attrs.get(k, "") for k in ("source", "synth_config_sha", "synth_config"))
    except OSError:
        return None
    src, sha, params = (v.decode() if isinstance(v, bytes) else str(v) for v in (src, sha, params))
    if not (src.startswith("synthetic(") and sha):
        return None
    try:
        return dict(json.loads(params)) if params else {}
    except (ValueError, TypeError):
        return {}


def _params_changed(old: dict[str, Any], new: dict[str, Any], most: int = 3) -> str:
    """``seed 0 -> 7, shift_strength 1.0 -> 2.0`` (a long value by its name alone); "" when equal."""
    keys = [k for k in sorted(new.keys() | old.keys()) if old.get(k) != new.get(k)]
    parts = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" if len(repr((old.get(k), new.get(k)))) < 40 else k for k in keys]
    return ", ".join(parts[:most]) + (f" and {len(parts) - most} more" if len(parts) > most else "")


DRAW_KEYS = ("seed", "flights", "n_scale", "image_height", "image_width", "image_channels")  # which campaign, not how


def ensure_synthetic(
    preset: str,
    path: Path,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    source: object = "--set",
    keep_other_synthetic: bool = False,
) -> bool:
    """Generate (or reuse) a synthetic campaign at ``path``; refuse to replace any other file.

    ``overrides`` are type- and range-checked first (errors name ``source`` and the key). With
    ``keep_other_synthetic`` (``cbh generate``), a synthetic campaign of other parameters is
    not replaced either unless ``force``: finished runs may rest on it (one of the same
    parameters made by an older generator is refreshed). A pipeline refreshes its own campaign
    when its parameters or the generator change, but not one of another draw or size
    (:data:`DRAW_KEYS`) unless ``force``.
    """
    from cbhlib.sources import synth
    from cbhlib.sources.synth_config import checked_overrides

    overrides = checked_overrides(overrides or {}, source, synth.PRESETS.get(preset))

    special = "a folder" if path.is_dir() else special_kind(path)
    if special:
        raise CbhError(f"{path}: expected a campaign file name; found {special}")
    ours = _synthetic_params(path) if path.exists() else None
    if path.exists() and not force and ours is None:
        raise CbhError(
            f"{path}: expected a synthetic campaign made by `cbh generate` (or a new path); found another "
            "file, which would be replaced: pass --force or choose another output"
        )
    try:
        cfg = synth.preset(preset, **(overrides or {}))
    except (KeyError, TypeError) as exc:
        raise CbhError(f"cbh generate: {str(exc).strip(chr(39))}") from None
    new = json.loads(json.dumps(asdict(cfg)))  # as the file stores them
    changed = _params_changed(ours, new) if ours else ""
    other = {k: ours[k] for k in DRAW_KEYS if ours and k in ours and ours[k] != new.get(k)}
    if other and not keep_other_synthetic and not force:  # a pipeline refreshes its own draw, not another one
        raise CbhError(
            f"{path}: expected this pipeline's own synthetic campaign or a new path; found another draw or size "
            f"({_params_changed(other, {k: new.get(k) for k in other})}), which other runs may rest on: point the "
            "pipeline's campaign at a new path, or delete the file to have it regenerated"
        )
    if keep_other_synthetic and changed and not force:  # the same parameters from a changed generator: refreshed
        raise CbhError(
            f"{path}: expected a new path or a campaign of these parameters; found one made with other parameters "
            f"({changed}), which finished runs may rest on: write elsewhere with -o FILE, or pass --force"
        )
    if force:
        synth.generate(cfg, path, overwrite=True)
        return True
    return synth.ensure_campaign(cfg, path)[1]


def num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"
