"""What every command shares: output lines, config layering, the synthetic default."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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


def _synthetic_source(path: Path) -> tuple[str, str] | None:
    """(source, parameter sha) of a campaign file this package generated (so regenerating it
    replaces no real data), else None."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            src, sha = (f.attrs.get(k, "") for k in ("source", "synth_config_sha"))
    except OSError:
        return None
    src, sha = (v.decode() if isinstance(v, bytes) else str(v) for v in (src, sha))
    return (src, sha) if src.startswith("synthetic(") and sha else None


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
    not replaced either unless ``force``: finished runs may rest on it. A pipeline refreshes its
    own campaign when its parameters (or the generator) change.
    """
    from cbhlib.sources import synth
    from cbhlib.sources.synth_config import checked_overrides

    overrides = checked_overrides(overrides or {}, source, synth.PRESETS.get(preset))

    ours = _synthetic_source(path) if path.exists() else None
    if path.exists() and not force and ours is None:
        raise CbhError(
            f"{path}: expected a synthetic campaign made by `cbh generate` (or a new path); found another "
            "file, which would be replaced: pass --force or choose another output"
        )
    try:
        cfg = synth.preset(preset, **(overrides or {}))
    except (KeyError, TypeError) as exc:
        raise CbhError(f"cbh generate: {str(exc).strip(chr(39))}") from None
    if keep_other_synthetic and ours is not None and not force and ours[1] != cfg.sha():
        raise CbhError(
            f"{path}: expected a new path or a campaign of these parameters; found {ours[0]}, which finished runs "
            "may rest on and would be replaced: write elsewhere with -o FILE, or pass --force"
        )
    if force:
        synth.generate(cfg, path)
        return True
    return synth.ensure_campaign(cfg, path)[1]


def num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"
