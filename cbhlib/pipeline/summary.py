"""The run at a glance: ``summary.json`` for machines, ``index.html`` for people.

Both are computed from the run's unit files and step summaries, never typed. The index
links every notebook (with code, and a code-hidden report), every CSV and JSON of the
run, and every figure with its one-line caption in pipeline order; it loads nothing from the
network.
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from cbhlib.atomic import atomic_write_text
from cbhlib.evaluation.reports import read_json
from cbhlib.plots.style import caption, figure_rank
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import plain

log = logging.getLogger(__name__)

CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:14px}td,th{padding:3px 9px;border-bottom:1px solid #ddd;text-align:right}"
    "td:first-child,th:first-child,td.l,th.l{text-align:left}.wrap{overflow-x:auto}"
    "figure{display:inline-block;width:360px;margin:6px;vertical-align:top}figure img{width:100%;border:1px solid #ccc}"
    "figcaption{font-size:13px;color:#444}.ok{color:#080}.failed{color:#b00;font-weight:bold}.skipped{color:#777}"
    "code{background:#f4f4f4;padding:1px 4px}"
)


def _headline(run: RunDir, campaign: Path) -> list[dict[str, Any]]:
    from cbhlib.data.campaign import Campaign
    from cbhlib.evaluation.results import headline_table, load_predictions

    try:
        camp = Campaign(campaign)
    except Exception as exc:  # the summary must not fail because the campaign moved
        log.warning("summary: cannot open %s (%s); no headline table", campaign, exc)
        return []
    return headline_table(load_predictions(run, camp)).to_dict("records")


def _settings(run: RunDir, steps: list[str]) -> dict[str, Any]:
    """The run's settings that differ from the defaults (from its steps' config files), each from
    the steps whose notebook takes it (a step keeps the default of a setting it does not take)."""
    from cbhlib.pipeline.runlist import run_settings

    return run_settings(run, steps=steps)


def campaign_info(camp: Any) -> dict[str, Any]:
    """Where a campaign's data came from, its flights (samples each) and unlabelled frames."""
    counts = np.bincount(camp.flight, minlength=camp.n_flights).tolist()
    return {
        "source": camp.source,
        "n_flights": camp.n_flights,
        "flights": dict(zip(camp.flight_names, counts, strict=True)),
        "labelled": bool(camp.has_labels),
        "unlabelled_frames": int(camp.n_unlabelled),
    }


def campaign_text(info: dict[str, Any]) -> str:
    """One sentence about the campaign from :func:`campaign_info` (plain text: escape it where it
    reaches HTML or Markdown): its flights with their samples, its frames and where it came from."""
    if not info:
        return "The campaign file could not be read: no details."
    flights = info.get("flights") or {}
    n = int(info.get("n_flights", len(flights)))
    kind = "labelled samples" if info.get("labelled", True) else "samples (inputs only, no labels)"
    listed = ", ".join(f"{name}: {count}" for name, count in flights.items())
    frames = int(info.get("unlabelled_frames") or 0)
    source = str(info.get("source") or "")
    origin = (
        f"a synthetic campaign ({source}): not a claim about real flights"
        if source.startswith("synthetic")
        else f"source recorded in the file: {source or 'none'}"
    )
    return (
        f"{n} flight{'s' if n != 1 else ''} with {sum(flights.values()):,} {kind} ({listed})"
        + (f" and {frames:,} unlabelled frames" if frames else "")
        + f"; {origin}."
    )


def _campaign_info(campaign: Path) -> dict[str, Any]:
    """Where the data came from and its flights, for text that fits the data (README, index.html)."""
    from cbhlib.data.campaign import Campaign

    try:
        return campaign_info(Campaign(campaign))
    except Exception as exc:  # the summary must not fail because the campaign moved
        log.warning("summary: cannot open %s (%s); no campaign details", campaign, exc)
        return {}


def campaign_file(campaign: Path, known: Any = None) -> dict[str, Any]:
    """The campaign file's identity (sha256, size, modification time): a rerun of the run folder
    refuses a file that changed since (:func:`cbhlib.pipeline.execute.plan_steps`). ``known``: an
    earlier record, kept without hashing where the size and time have not moved."""
    from cbhlib.data.campaign import file_fingerprint

    try:
        st = campaign.stat()
        if isinstance(known, dict) and (known.get("bytes"), known.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
            if isinstance(known.get("sha256"), str):
                return known
        return {"sha256": file_fingerprint(campaign), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    except Exception as exc:  # the summary must not fail because the campaign moved
        log.warning("summary: cannot read %s (%s); its identity is not recorded", campaign, exc)
        return {}


def _maybe(path: Path) -> Any:
    try:
        return read_json(path) if path.exists() else None
    except (OSError, ValueError) as exc:
        log.warning("summary: %s is unreadable (%s); left out", path, str(exc).splitlines()[0])
        return None


def write_summary(run_root: str | Path, campaign: str | Path, steps: list[Any] | None = None) -> dict[str, Any]:
    """``summary.json``: headline rows (models x protocols, mean and sd over seeds), steps,
    pretraining loss beside its floors, the comparison's intervals and findings."""
    run = RunDir(run_root)
    steps = steps or []
    counts = {k: sum(1 for s in steps if s.status == k) for k in ("ok", "skipped", "failed")}
    summary = {
        "run": run.name,
        "campaign": str(campaign),
        "campaign_info": _campaign_info(Path(campaign)),
        "campaign_file": campaign_file(Path(campaign), (_maybe(run.summary) or {}).get("campaign_file")),
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "steps": {
            **counts,
            "detail": [
                {"name": s.name, "status": s.status, "seconds": round(s.seconds, 1), "error": s.error} for s in steps
            ],
        },
        "settings": _settings(run, [s.name for s in steps]),
        "headline": _headline(run, Path(campaign)),
        "pretraining": _maybe(run.pretrain_summary),
        "comparison": _maybe(run.comparison_summary),
    }
    atomic_write_text(run.summary, json.dumps(plain(summary), indent=2, default=str) + "\n")
    return summary


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{v:.{digits}f}"


def _pm(row: dict[str, Any], key: str, digits: int = 0) -> str:
    from cbhlib.evaluation.results import fmt_pm

    return fmt_pm(row.get(key), row.get(f"{key}_sd"), digits)  # one seed: the mean alone


def write_index(run_root: str | Path, pipe: Any, steps: list[Any], root: str | Path = ".") -> Path:
    """``index.html`` (and ``summary.json``) of a run folder; ``root``: the project root."""
    run = RunDir(run_root)
    summary = write_summary(run.root, Path(root) / pipe.campaign, steps)
    esc = html.escape
    c = summary["steps"]
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cbh-fusion run {esc(run.name)}</title>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>cbh-fusion run <code>{esc(run.name)}</code></h1>",
        f"<p>Campaign <code>{esc(str(pipe.campaign))}</code>: {esc(campaign_text(summary['campaign_info']))}</p>",
        f"<p>Generated {esc(summary['generated'])}; notebooks: {c['ok']} ok, {c['skipped']} skipped, "
        f"{c['failed']} failed.</p>",
        "<h2>Notebooks</h2><div class='wrap'><table><tr><th>step</th><th class='l'>status</th><th>seconds</th>"
        "<th class='l'>report (code hidden)</th><th class='l'>with code</th><th class='l'>executed</th>"
        "<th class='l'>config</th></tr>",
    ]
    for s in steps:
        cls = s.status
        status = f"<span class='{cls}'>{esc(s.status)}</span>" + (f": {esc(s.error)}" if s.error else "")
        if s.status == "skipped":
            parts.append(f"<tr><td>{esc(s.name)}</td><td class='l'>{status}</td>" + "<td></td>" * 5 + "</tr>")
            continue
        links = [
            (run.html_page(s.name, True), "report"),
            (run.html_page(s.name), "page"),
            (run.notebook(s.name), ".ipynb"),
            (run.step_config(s.name), "yaml"),
        ]
        cells = "".join(
            f"<td class='l'><a href='{esc(run.relative(p))}'>{esc(t)}</a></td>"
            if p.exists()
            else "<td class='l'>-</td>"
            for p, t in links
        )
        parts.append(f"<tr><td>{esc(s.name)}</td><td class='l'>{status}</td><td>{s.seconds:.1f}</td>{cells}</tr>")
    parts.append("</table></div>")
    parts += _headline_html(summary, run)
    settings = summary.get("settings") or {}
    parts.append(
        "<h2>Settings</h2><p>What this run changed from the defaults (<code>cbh params</code> lists them all; "
        "each step's full config is linked above):</p><div class='wrap'><table><tr><th class='l'>setting</th>"
        "<th class='l'>value</th></tr>"
        + "".join(
            f"<tr><td class='l'><code>{esc(k)}</code></td><td class='l'>{esc(repr(v))}</td></tr>"
            for k, v in settings.items()
        )
        + "</table></div>"
    )
    found = (summary.get("comparison") or {}).get("findings")
    if found:
        parts.append(
            "<h2>What this run shows</h2><ul>"
            + "".join(f"<li>{esc(x)}</li>" for x in found["shows"])
            + "</ul><h3>What it does not show</h3><ul>"
            + "".join(f"<li>{esc(x)}</li>" for x in found["does_not_show"])
            + "</ul>"
        )
    pre = summary.get("pretraining")
    if pre:
        parts.append(
            f"<h2>Pretraining</h2><p>{pre['n_encoders']} encoders ({esc(pre['settings'])}); mean final masked-patch "
            f"loss {pre['loss_final']:.3f} beside its floors: predict-zero {pre['floor_predict_zero']:.3f}, "
            f"interpolation {pre['floor_interpolation']:.3f} (final / predict-zero = "
            f"{pre['final_over_zero']:.2f}, final / interpolation = "
            f"{pre['loss_final'] / (pre['floor_interpolation'] or float('nan')):.2f}; each a mean over encoders).</p>"
        )
    parts += _files_html(run)
    parts += _figures_html(run, [s.name for s in steps])
    parts.append("</body></html>")
    atomic_write_text(run.index, "\n".join(parts))
    return run.index


def _headline_html(summary: dict[str, Any], run: RunDir) -> list[str]:
    rows = summary.get("headline") or []
    if not rows:
        return ["<h2>Results</h2><p>No model results yet.</p>"]
    esc = html.escape
    out = [
        "<h2>Results</h2><p>Pooled MAE: all held-out predictions together; per-flight MAE: the mean over "
        "flights of each flight's MAE; R2 as the seed's mean of folds and pooled. Each value: mean ± sd over "
        'seeds; n: held-out samples. Baselines first. Only leave-one-flight-out answers "will it work on a new '
        "flight\".</p><div class='wrap'><table><tr><th class='l'>model</th><th class='l'>protocol</th><th>n</th>"
        "<th>seeds</th><th>pooled MAE (m)</th><th>per-flight MAE (m)</th><th>R2 mean of folds</th>"
        "<th>R2 pooled</th></tr>"
    ]
    for r in rows:
        out.append(
            f"<tr><td class='l'>{esc(str(r['model']))}</td><td class='l'>{esc(str(r['protocol']))}</td>"
            f"<td>{r['n']}</td><td>{r['n_seeds']}</td><td>{_pm(r, 'pooled_mae_m')}</td>"
            f"<td>{_pm(r, 'flight_mae_m')}</td><td>{_pm(r, 'r2_folds', 2)}</td><td>{_pm(r, 'r2_pooled', 2)}</td></tr>"
        )
    out.append(
        "</table></div><details><summary>RMSE and bias</summary><div class='wrap'><table><tr><th class='l'>model"
        "</th><th class='l'>protocol</th><th>RMSE (m)</th><th>bias (m)</th></tr>"
    )
    for r in rows:
        out.append(
            f"<tr><td class='l'>{esc(str(r['model']))}</td><td class='l'>{esc(str(r['protocol']))}</td>"
            f"<td>{_fmt(r.get('rmse_m'))}</td><td>{_fmt(r.get('bias_m'))}</td></tr>"
        )
    out.append("</table></div></details>")
    return out


def _files_html(run: RunDir) -> list[str]:
    esc = html.escape
    files = sorted(p for p in run.root.rglob("*") if p.suffix in (".csv", ".json", ".parquet") and p.is_file())
    top = [p for p in files if "units" not in p.relative_to(run.root).parts]
    units = [p for p in files if "units" in p.relative_to(run.root).parts]
    out = ["<h2>Data files</h2><ul>"]
    out += [f"<li><a href='{esc(run.relative(p))}'>{esc(run.relative(p))}</a></li>" for p in top]
    out.append("</ul>")
    if units:
        out.append(
            f"<details><summary>{len(units)} unit results (one per model, protocol, fold and seed)</summary><ul>"
        )
        out += [f"<li><a href='{esc(run.relative(p))}'>{esc(run.relative(p))}</a></li>" for p in units]
        out.append("</ul></details>")
    return out


def _figures_html(run: RunDir, steps: list[str] | None = None) -> list[str]:
    """Every figure with its caption (and its PDF/SVG copies), in pipeline order (explore, pretrain,
    each training step, compare); then the figures not drawn, each with why."""
    from cbhlib.plots.files import notes, vector_files

    esc = html.escape
    out = ["<h2>Figures</h2>"]
    figs = list(run.figures.glob("*.png")) if run.figures.is_dir() else []
    for p in sorted(figs, key=lambda p: figure_rank(p.stem, steps)):
        href = esc(run.relative(p))
        copies = " ".join(f"<a href='{esc(run.relative(v))}'>{esc(v.suffix[1:].upper())}</a>" for v in vector_files(p))
        out.append(
            f"<figure><a href='{href}'><img src='{href}' alt='{esc(caption(p.stem))}'></a>"
            f"<figcaption>{esc(caption(p.stem))}{f' ({copies})' if copies else ''}</figcaption></figure>"
        )
    absent = {k: v for k, v in notes(run.figures).items() if not (run.figures / f"{k}.png").exists()}
    if absent:
        out.append("<h3>Figures not drawn</h3><p>Nothing to show for this campaign or run:</p><ul>")
        for name in sorted(absent, key=lambda k: figure_rank(k, steps)):
            out.append(f"<li><code>{esc(name)}</code>: {esc(absent[name])}</li>")
        out.append("</ul>")
    return out
