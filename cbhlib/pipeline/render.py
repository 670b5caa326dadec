"""Executed notebooks to HTML that renders offline: no CDN scripts, no empty script tags,
no stderr noise in the code-hidden report."""

from __future__ import annotations

import copy
import re
from pathlib import Path

from cbhlib.atomic import atomic_write_text

EMPTY_SCRIPT = re.compile(r"<script src=\"\">\s*</script>")


def _exporter(report: bool):
    from nbconvert import HTMLExporter

    kw = {"template_name": "lab", "mathjax_url": "", "require_js_url": "", "widget_renderer_url": ""}
    if report:
        kw.update(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    return HTMLExporter(**kw)


def for_readers(nb: object) -> object:
    """A copy without stderr streams and warnings (they are in the full page and the run's logs)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:  # type: ignore[attr-defined]
        if cell.get("cell_type") == "code":
            cell["outputs"] = [
                o
                for o in cell.get("outputs", [])
                if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
            ]
    return nb


def render_html(executed: Path, full: Path, report: Path) -> tuple[Path, Path]:
    """Render an executed notebook: with code (``full``) and code-hidden for readers (``report``)."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    body, _ = _exporter(False).from_notebook_node(nb)
    atomic_write_text(full, EMPTY_SCRIPT.sub("", body))
    body, _ = _exporter(True).from_notebook_node(for_readers(nb))
    atomic_write_text(report, EMPTY_SCRIPT.sub("", body))
    return full, report
