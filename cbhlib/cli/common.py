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


def _is_synthetic(path: Path) -> bool:
    """True for a campaign file this package generated (so regenerating it replaces no real data)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            src = f.attrs.get("source", "")
            return (src.decode() if isinstance(src, bytes) else str(src)).startswith(
                "synthetic("
            ) and "synth_config_sha" in f.attrs
    except OSError:
        return False


def ensure_synthetic(
    preset: str, path: Path, overrides: dict[str, Any] | None = None, force: bool = False, source: object = "--set"
) -> bool:
    """Generate (or reuse) a synthetic campaign at ``path``; refuse to replace any other file.

    ``overrides`` are type- and range-checked first (errors name ``source`` and the key).
    """
    from cbhlib.sources import synth
    from cbhlib.sources.synth_config import checked_overrides

    overrides = checked_overrides(overrides or {}, source, synth.PRESETS.get(preset))

    if path.exists() and not force and not _is_synthetic(path):
        raise CbhError(
            f"{path}: expected a synthetic campaign made by `cbh generate` (or a new path); found another "
            "file, which would be replaced: pass --force or choose another output"
        )
    try:
        cfg = synth.preset(preset, **(overrides or {}))
    except (KeyError, TypeError) as exc:
        raise CbhError(f"cbh generate: {str(exc).strip(chr(39))}") from None
    if force:
        synth.generate(cfg, path)
        return True
    return synth.ensure_campaign(cfg, path)[1]


def num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"
