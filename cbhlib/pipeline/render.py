"""Executed notebooks to HTML that renders offline: no CDN scripts, no empty script tags,
no stderr noise in the code-hidden report."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

from cbhlib.atomic import atomic_write_text

EMPTY_SCRIPT = re.compile(r"<script src=\"\">\s*</script>")


@functools.cache
def _exporter(report: bool):
    """One exporter per kind and process: building one compiles its Jinja templates (about 0.3 s),
    and an exporter converts any number of notebooks."""
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


def page_title(nb: object, step: str, run: str = "") -> str:
    """A page's title: the notebook's first heading, the step and the run (never "Notebook")."""
    heading = ""
    for cell in nb.cells:  # type: ignore[attr-defined]
        if cell.get("cell_type") == "markdown":
            heading = next((ln.lstrip("#").strip() for ln in cell.source.splitlines() if ln.startswith("#")), "")
            if heading:
                break
    parts = [heading or step, f"step {step}" if heading else "", f"run {run}" if run else ""]
    return " · ".join(p for p in parts if p)


def render_html(executed: Path, full: Path, report: Path, step: str = "", run: str = "") -> tuple[Path, Path]:
    """Render an executed notebook: with code (``full``) and code-hidden for readers (``report``),
    each titled from the notebook's heading, the step (default: the file name) and the run."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    nb.metadata["title"] = page_title(nb, step or Path(executed).stem, run)  # the template escapes it
    body, _ = _exporter(False).from_notebook_node(nb)
    atomic_write_text(full, EMPTY_SCRIPT.sub("", body))
    body, _ = _exporter(True).from_notebook_node(for_readers(nb))
    atomic_write_text(report, EMPTY_SCRIPT.sub("", body))
    return full, report


MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def escape_markdown(text: object) -> str:
    """Campaign-supplied text (flight, feature, model names) safe inside Markdown that nbconvert
    renders: ``&``, ``<`` and ``>`` HTML-escaped, Markdown syntax characters backslash-escaped and
    line breaks joined, so a name such as ``"><img src=x onerror=alert(5)>`` or
    ``[x](javascript:...)`` shows as typed and never runs or links. Quotes stay as they are
    (outside a tag they are text; escaped, ``'`` showed as ``&#x27;``)."""
    import html

    text = " ".join(str(text).splitlines())
    return MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def findings_markdown(found: dict[str, list[str]]) -> str:
    """The "shows / does not show" lists of a comparison as Markdown, every sentence escaped."""
    parts = []
    for key, title in (("shows", "What this run shows"), ("does_not_show", "What it does not show")):
        items = found.get(key, [])
        parts.append(f"**{title}**\n\n" + ("\n".join(f"- {escape_markdown(s)}" for s in items) or "- (nothing)"))
    return "\n\n".join(parts)
