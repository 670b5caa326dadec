"""The notebook pipeline: papermill runs, HTML rendering and the run's index page.

``params/pipeline.yaml`` lists the steps (notebook + params YAML). Each run writes into
``runs/<run-name>/``: ``notebooks/<step>.ipynb`` (executed), ``html/<step>.html`` and a
code-hidden ``html/<step>.report.html``, the reports of every step, ``pipeline.log`` and
``index.html``. Figures go to ``figures/<run-name>/``.
"""

from __future__ import annotations

import html
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbhlib.errors import CbhError, PipelineError
from cbhlib.params import load_params_yaml
from cbhlib.reports import atomic_write_text, read_json

log = logging.getLogger("cbhlib.pipeline")


@dataclass
class Step:
    """One notebook execution."""

    name: str
    notebook: str
    params: str | None = None
    needs_images: bool = False  # skipped (not failed) on a campaign without images


@dataclass
class PipelineConfig:
    run_name: str = "default"
    campaign: str = "data/synthetic_default.h5"
    synthetic_preset: str | None = "default"
    steps: list[Step] = field(default_factory=list)


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    output: Path
    html: Path | None = None
    error: str | None = None
    skipped: bool = False


def load_pipeline(path: str | Path = "params/pipeline.yaml") -> PipelineConfig:
    raw = load_params_yaml(path)
    steps = raw.pop("steps", None)
    if not isinstance(steps, list) or not steps:
        raise CbhError(f"{path}: 'steps': expected a non-empty list of steps; found {steps!r}")
    cfg = PipelineConfig(**{k: v for k, v in raw.items() if k in ("run_name", "campaign", "synthetic_preset")})
    unknown = set(raw) - {"run_name", "campaign", "synthetic_preset"}
    if unknown:
        raise CbhError(f"{path}: unknown keys {sorted(unknown)}; expected run_name, campaign, synthetic_preset, steps")
    for s in steps:
        if not isinstance(s, dict) or "name" not in s or "notebook" not in s:
            raise CbhError(f"{path}: each step needs 'name' and 'notebook'; found {s!r}")
        cfg.steps.append(Step(s["name"], s["notebook"], s.get("params"), bool(s.get("needs_images", False))))
    return cfg


def declared_parameters(notebook: str | Path) -> set[str]:
    """Names declared in a notebook's parameters cell."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)).keys())


def step_parameters(step: Step, run_dir: str, figures_dir: str, campaign: str,
                    overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge: the step's YAML, then run-wide paths, then user overrides (declared keys only)."""
    declared = declared_parameters(step.notebook)
    params: dict[str, Any] = load_params_yaml(step.params) if step.params else {}
    params.update({"campaign": campaign, "run_dir": run_dir, "figures_dir": figures_dir})
    params.update(overrides or {})
    return {k: v for k, v in params.items() if k in declared}


def render_html(executed: Path, out_dir: Path) -> tuple[Path, Path]:
    """Render an executed notebook to HTML, with code and code-hidden (for readers)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    out_dir.mkdir(parents=True, exist_ok=True)
    full = out_dir / f"{executed.stem}.html"
    body, _ = HTMLExporter().from_notebook_node(nb)
    atomic_write_text(full, body)
    hidden = out_dir / f"{executed.stem}.report.html"
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    atomic_write_text(hidden, body)
    return full, hidden


def _papermill_error(exc: Exception) -> str:
    cell = getattr(exc, "cell_index", None)
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    where = f"cell {cell}" if cell is not None else "a cell"
    return f"{where} raised {ename}: {evalue}"


def run_pipeline(config: PipelineConfig, only: list[str] | None = None, overrides: dict[str, Any] | None = None,
                 html_out: bool = True, progress: bool = True, root: str | Path = ".") -> list[StepResult]:
    """Execute the pipeline's notebooks in order, render them and write the index.

    A failing notebook keeps its executed copy (papermill highlights the failing cell);
    the other steps still run; the caller gets every step's result.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    root = Path(root)
    run_dir = Path("runs") / config.run_name
    figures_dir = Path("figures") / config.run_name
    (root / run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    steps = [s for s in config.steps if not only or s.name in only]
    if only:
        missing = set(only) - {s.name for s in config.steps}
        if missing:
            raise CbhError(f"unknown pipeline steps {sorted(missing)}; known: {', '.join(s.name for s in config.steps)}")
    results: list[StepResult] = []
    plog = root / run_dir / "pipeline.log"
    from cbhlib.campaign import Campaign

    has_images = Campaign(root / config.campaign).has_images
    for step in steps:
        out = run_dir / "notebooks" / f"{step.name}.ipynb"
        if step.needs_images and not has_images:
            results.append(StepResult(step.name, True, 0.0, out, None, "skipped: the campaign has no images", True))
            print(f"[{step.name}] skipped: {config.campaign} has no images (image modes need them)", flush=True)
            continue
        params = step_parameters(step, str(run_dir), str(figures_dir), config.campaign, overrides)
        t0 = time.perf_counter()
        err = None
        try:
            papermill.execute_notebook(step.notebook, str(out), parameters=params, kernel_name="python3",
                                       progress_bar=progress, cwd=str(root))
        except PapermillExecutionError as exc:
            err = _papermill_error(exc)
        seconds = time.perf_counter() - t0
        page = None
        if html_out and (root / out).exists():
            page, _ = render_html(root / out, root / run_dir / "html")
        res = StepResult(step.name, err is None, seconds, out, page, err)
        results.append(res)
        with open(plog, "a") as fh:
            fh.write(json.dumps({"step": step.name, "notebook": step.notebook, "ok": res.ok, "seconds": round(seconds, 2),
                                 "error": err, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        status = "ok" if res.ok else f"FAILED: {err}"
        print(f"[{step.name}] {step.notebook} -> {out} ({seconds:.1f} s) {status}", flush=True)
    if html_out:
        write_index(root / run_dir, root / figures_dir, config, results)
    return results


def raise_on_failure(results: list[StepResult]) -> None:
    failed = [r for r in results if not r.ok]
    if failed:
        lines = [f"{r.name}: {r.output}: {r.error}" for r in failed]
        raise PipelineError("notebooks failed (their executed copies show the failing cell):\n  " + "\n  ".join(lines))


def write_summary(run_dir: Path) -> dict[str, Any]:
    """``summary.json``: one row per model and protocol with the headline metrics."""
    rows = []
    for path in sorted(run_dir.glob("report_*.json")):
        if path.name == "report_all.json":
            continue
        rep = read_json(path)
        a = rep["aggregate_metrics"]
        proto = "lofo" if "__" not in path.stem else path.stem.split("__", 1)[1]
        rows.append({"model": rep["model_variant"], "protocol": proto,
                     "mean_r2": a.get("mean_r2"), "std_r2": a.get("std_r2"), "pooled_r2": a.get("pooled_r2"),
                     "mean_mae_km": a.get("mean_mae_km"), "pooled_mae_km": a.get("pooled_mae_km"),
                     "pooled_rmse_km": a.get("pooled_rmse_km"), "report": path.name})
    summary = {"run": run_dir.name, "rows": rows}
    extra = run_dir / "comparison_summary.json"
    if extra.exists():
        summary["comparison"] = read_json(extra)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def write_index(run_dir: Path, figures_dir: Path, config: PipelineConfig, results: list[StepResult]) -> Path:
    """``index.html`` linking every rendered notebook, figure, report and ``summary.json``."""
    summary = write_summary(run_dir)
    esc = html.escape
    rel_fig = Path(os.path.relpath(figures_dir, run_dir))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>cbh-fusion run {esc(config.run_name)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:2px 8px}"
             "img{max-width:320px;margin:4px;border:1px solid #ccc}</style></head><body>",
             f"<h1>cbh-fusion run <code>{esc(config.run_name)}</code></h1>",
             f"<p>Campaign: <code>{esc(config.campaign)}</code></p><h2>Notebooks</h2><table>",
             "<tr><th>step</th><th>status</th><th>seconds</th><th>notebook</th><th>report (code hidden)</th><th>executed .ipynb</th></tr>"]
    latest: dict[str, StepResult] = {}
    plog = run_dir / "pipeline.log"
    if plog.exists():
        for line in plog.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            latest[e["step"]] = StepResult(e["step"], e["ok"], e["seconds"], Path(f"notebooks/{e['step']}.ipynb"),
                                           None, e.get("error"))
    latest.update({r.name: r for r in results})
    order = [s.name for s in config.steps] + [n for n in latest if n not in {s.name for s in config.steps}]
    for r in (latest[n] for n in order if n in latest):
        full = f"html/{r.output.stem}.html"
        hidden = f"html/{r.output.stem}.report.html"
        if r.skipped:
            parts.append(f"<tr><td>{esc(r.name)}</td><td>skipped (no images)</td><td></td><td></td><td></td><td></td></tr>")
            continue
        status = "ok" if r.ok else f"<b style='color:#b00'>failed</b>: {esc(r.error or '')}"
        parts.append(f"<tr><td>{esc(r.name)}</td><td>{status}</td><td>{r.seconds:.1f}</td>"
                     f"<td><a href='{full}'>{esc(r.output.stem)}.html</a></td>"
                     f"<td><a href='{hidden}'>{esc(r.output.stem)}.report.html</a></td>"
                     f"<td><a href='notebooks/{esc(r.output.name)}'>{esc(r.output.name)}</a></td></tr>")
    parts.append("</table><h2>Headline table</h2><p><a href='summary.json'>summary.json</a> (machine-readable)</p><table>"
                 "<tr><th>model</th><th>protocol</th><th>mean R2 of folds</th><th>pooled R2</th><th>mean MAE (m)</th></tr>")
    for row in summary["rows"]:
        fmt = lambda v, s=1.0: "" if v is None else f"{v * s:.3f}" if s == 1.0 else f"{v * s:.0f}"  # noqa: E731
        parts.append(f"<tr><td>{esc(row['model'])}</td><td>{esc(row['protocol'])}</td><td>{fmt(row['mean_r2'])}</td>"
                     f"<td>{fmt(row['pooled_r2'])}</td><td>{fmt(row['mean_mae_km'], 1000.0)}</td></tr>")
    parts.append("</table><h2>Reports and predictions</h2><ul>")
    for p in sorted(run_dir.glob("report_*.json")) + sorted(run_dir.glob("predictions_*.csv")):
        parts.append(f"<li><a href='{p.name}'>{p.name}</a></li>")
    parts.append("</ul><h2>Figures</h2>")
    for p in sorted(figures_dir.glob("*.png")):
        href = f"{rel_fig.as_posix()}/{p.name}"
        parts.append(f"<a href='{href}'><img src='{href}' alt='{esc(p.name)}' title='{esc(p.name)}'></a>")
    parts.append("</body></html>")
    path = run_dir / "index.html"
    atomic_write_text(path, "\n".join(parts))
    return path
