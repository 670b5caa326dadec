"""Figure files: a PNG at the configured resolution (the pages and the README show it) and the
vector formats asked for beside it (``figures.dpi``, ``figures.formats``); a figure with nothing
to show is not drawn, and a note beside where it would be says why (index.html lists them)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from cbhlib.atomic import atomic_write_text

VECTOR_FORMATS = ("pdf", "svg")
NOTE_SUFFIX = ".not-drawn.txt"
DEFAULT_DPI = 110
SETTINGS: dict[str, object] = {"dpi": DEFAULT_DPI, "formats": ()}
# no creation date in vector files: the same figure gives the same bytes
_METADATA = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}
log = logging.getLogger("cbhlib.figures")


def configure(dpi: int = DEFAULT_DPI, formats: Sequence[str] = ()) -> None:
    """Resolution of PNG files and the vector formats written beside them, for this process."""
    unknown = [f for f in formats if f not in VECTOR_FORMATS]
    if unknown:
        raise ValueError(f"figure formats: expected some of {', '.join(VECTOR_FORMATS)}; found {unknown}")
    SETTINGS.update(dpi=int(dpi), formats=tuple(dict.fromkeys(formats)))


def note_path(path: str | Path) -> Path:
    return Path(path).with_name(Path(path).stem + NOTE_SUFFIX)


def save(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    """Write the PNG and the configured vector formats (the notebook still shows the figure inline)."""
    if path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        dpi = int(SETTINGS["dpi"])  # type: ignore[call-overload]
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        formats = SETTINGS["formats"]
        for ext in VECTOR_FORMATS:
            target = path.with_suffix(f".{ext}")
            if ext in formats:  # type: ignore[operator]
                with plt.rc_context({"svg.hashsalt": "cbh-fusion"}):  # fixed element ids
                    fig.savefig(target, dpi=dpi, bbox_inches="tight", metadata=_METADATA[ext])
            else:
                target.unlink(missing_ok=True)  # a format no longer asked for: no stale copy
        note_path(path).unlink(missing_ok=True)
    return fig


def not_drawn(path: str | Path | None, reason: str) -> None:
    """Say why a figure has nothing to show (logged; shown in the notebook) and, given its path,
    remove any earlier drawing of it and leave a note in its place for index.html."""
    name = Path(path).stem if path else "figure"
    log.info("figure %s not drawn: %s", name, reason)
    if path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for p in (path, *(path.with_suffix(f".{ext}") for ext in VECTOR_FORMATS)):
            p.unlink(missing_ok=True)
        atomic_write_text(note_path(path), reason.strip() + "\n")


def notes(folder: str | Path) -> dict[str, str]:
    """Figure name -> why it was not drawn, for the notes in a figures folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.name[: -len(NOTE_SUFFIX)]: p.read_text().strip() for p in sorted(folder.glob(f"*{NOTE_SUFFIX}"))}


def vector_files(png: str | Path) -> list[Path]:
    """The vector copies written beside a PNG."""
    return [p for ext in VECTOR_FORMATS if (p := Path(png).with_suffix(f".{ext}")).is_file()]
