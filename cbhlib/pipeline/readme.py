"""Write the README's results section from a run's ``summary.json`` (never by hand).

``python -m cbhlib.pipeline.readme <run folder> README.md`` replaces the text between
``<!-- results:start -->`` and ``<!-- results:end -->``. Every number carries its protocol,
its n and its spread over seeds; a ranking is stated only where its paired interval
excludes zero (the comparison's verdicts).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from cbhlib.atomic import atomic_write_bytes, atomic_write_text
from cbhlib.errors import CbhError
from cbhlib.evaluation.intervals.campaigns import campaigns_table
from cbhlib.evaluation.results import fmt_pm
from cbhlib.pipeline.perftable import performance_section
from cbhlib.plots.style import caption
from cbhlib.store.rundir import RunDir

log = logging.getLogger(__name__)

START, END = "<!-- results:start -->", "<!-- results:end -->"
PERF_START, PERF_END = "<!-- performance:start -->", "<!-- performance:end -->"


def _replace(text: str, start: str, end: str, body: str, where: Path) -> str:
    if start not in text or end not in text:
        raise CbhError(f"{where}: expected the markers {start} and {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def _pm(r: dict[str, Any], key: str, digits: int = 0) -> str:
    return fmt_pm(r.get(key), r.get(f"{key}_sd"), digits)  # one seed: the mean alone


def _headline(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| model | pooled MAE (m) | per-flight MAE (m) | R2, mean of folds | R2, pooled | n | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["protocol"] == "lofo":
            name = f"*{r['model']}*" if r["kind"] == "baseline" else f"**{r['model']}**"
            out.append(
                f"| {name} | {_pm(r, 'pooled_mae_m')} | {_pm(r, 'flight_mae_m')} | {_pm(r, 'r2_folds', 2)} | "
                f"{_pm(r, 'r2_pooled', 2)} | {r['n']} | {r['n_seeds']} |"
            )
    return out


def _protocols(rows: list[dict[str, Any]]) -> list[str]:
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["model"], {})[r["protocol"]] = r
    out = [
        "| model | leave-one-flight-out | time blocks within flight | pooled random 5-fold (leaky) |",
        "|---|---|---|---|",
    ]
    for model, p in by.items():
        out.append(
            f"| {model} | "
            + " | ".join(_pm(p[k], "r2_pooled", 2) if k in p else "-" for k in ("lofo", "within_flight", "random"))
            + " |"
        )
    return out


def _ci(c: dict[str, Any], metric: str) -> str:
    return f"{c[f'{metric}_diff_m']:+.0f} [{c[f'{metric}_lo_m']:+.0f}, {c[f'{metric}_hi_m']:+.0f}]"


def _verdicts(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| model | reference | pooled MAE diff (m) | per-flight MAE diff (m) | block | verdict | at 2x block | "
        "flights better | sign-flip p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        out.append(
            f"| {c['model']} | {c['reference']} | {_ci(c, 'pooled')} | {_ci(c, 'flight')} | {int(c['block'])} | "
            f"{c['verdict']} | {'holds' if c['holds_at_2x_block'] else 'changes'} | "
            f"{int(c['flights_better'])} of {int(c['n_flights'])} | {c['sign_flip_p']:.2f} |"
        )
    return out


def _origin(summary: dict[str, Any]) -> str:
    info = summary.get("campaign_info") or {}
    source = str(info.get("source", ""))
    flights = info.get("flights") or {}
    what = f"{len(flights)} flights ({', '.join(f'{k}: {v}' for k, v in flights.items())} samples)" if flights else ""
    if source.startswith("synthetic"):
        return f"Synthetic campaign `{source}`, {what}: not a claim about the real flights."
    return f"Campaign source `{source or 'not recorded'}`, {what}."


def drift_line(summary: dict[str, Any], other: dict[str, Any]) -> str:
    """How far another run of the same settings but another thread count moved this run's LOFO
    rows, interval ends and verdicts (one sentence, or "" when the runs differ in more).

    Raises:
        CbhError: the runs differ in a setting that changes results.
    """
    neutral = ("threads", "device")
    mine = {k: v for k, v in (summary.get("settings") or {}).items() if k not in neutral}
    theirs = {k: v for k, v in (other.get("settings") or {}).items() if k not in neutral}
    if mine != theirs:
        raise CbhError(
            f"run {other.get('run')}: expected the settings of run {summary.get('run')} but for threads or device; "
            f"found {theirs} against {mine}"
        )
    rows = {r["model"]: r for r in summary.get("headline") or [] if r["protocol"] == "lofo"}
    them = {r["model"]: r for r in other.get("headline") or [] if r["protocol"] == "lofo"}
    common = [m for m in rows if m in them]
    move = max(abs(rows[m][k] - them[m][k]) for m in common for k in ("pooled_mae_m", "flight_mae_m"))
    key = ("protocol", "model", "reference")
    va = {tuple(v[k] for k in key): v for v in (summary.get("comparison") or {}).get("verdicts") or []}
    vb = {tuple(v[k] for k in key): v for v in (other.get("comparison") or {}).get("verdicts") or []}
    both = [k for k in va if k in vb]
    ends = ("pooled_lo_m", "pooled_hi_m", "flight_lo_m", "flight_hi_m")
    end_move = max((abs(va[k][e] - vb[k][e]) for k in both for e in ends), default=0.0)
    changed = sum(va[k]["verdict"] != vb[k]["verdict"] or va[k]["status_at_2x_block"] != vb[k]["status_at_2x_block"]
                  for k in both)  # fmt: skip
    t_mine, t_theirs = ((d.get("settings") or {}).get("threads", 0) for d in (summary, other))
    return (
        f"Drift between thread counts, measured: run `{other.get('run')}` (threads {t_theirs or 'default'}) against "
        f"this run (threads {t_mine or 'default'}), same settings otherwise: the largest move of a LOFO row is "
        f"{move:.2g} m, of an interval end {end_move:.2g} m, and {changed} of {len(both)} verdicts change (encoders "
        "train on one thread each, so only the heads' float sums differ)."
    )


def section(summary: dict[str, Any], calibration: dict[str, Any] | None = None, drift: str = "") -> str:
    """The generated Markdown."""
    rows = summary.get("headline") or []
    if not rows:
        raise CbhError("summary.json has no headline rows: run the pipeline first (make run)")
    seeds = max(r["n_seeds"] for r in rows)
    lines = [
        f"Generated by `make readme` from `{RunDir.named(summary['run']).summary}` ({summary['generated']}, campaign "
        f"`{summary['campaign']}`). Leave-one-flight-out (LOFO): each flight is predicted by models that never "
        f"saw it; pooled MAE is over all held-out predictions, per-flight MAE the mean of each flight's MAE; "
        f"mean ± sd over {seeds} seeds (a seed drives the encoder's pretraining and the head); baselines in "
        f"italics; `_fn`: flight-normalised (label-free adaptation). {_origin(summary)}",
        "",
        *_headline(rows),
        "",
        "Pooled R2 under each protocol (mean ± sd over seeds): the random split shows how much leakage along "
        "the track inflates the score.",
        "",
        *_protocols(rows),
        "",
    ]
    pre = summary.get("pretraining")
    if pre:
        lines += [
            f"MAE pretraining ({pre['n_encoders']} encoders, {pre['settings']}): final masked-patch loss "
            f"{pre['loss_final']:.3f} against the floors predict-zero {pre['floor_predict_zero']:.3f} and "
            f"visible-patch interpolation {pre['floor_interpolation']:.3f} (final / predict-zero = "
            f"{pre['final_over_zero']:.2f}; measured on held-in frames).",
            "",
        ]
    comp = summary.get("comparison") or {}
    verdicts = comp.get("verdicts") or []
    boot = comp.get("bootstrap") or {}
    if verdicts:
        method = (
            f"Paired differences (model minus reference; negative: the model is better), LOFO, under both headline "
            f"metrics: 95 % moving-block bootstrap within flights over samples and seeds, the block length (samples) "
            f"chosen per comparison by Politis-White (here {boot.get('block_min')}-{boot.get('block_max')}) and each "
            "verdict rechecked at twice that block. A ranking is stated only where both intervals clear 0 on the "
            f"same side by the drift margin ({comp.get('drift_margin_m', 0):g} m: a guard against float sums that "
            "differ between CPU instruction sets, not measured here; between thread counts, measured below). "
            "Flight level: on how many held-out flights the model has the lower MAE, and the exact two-sided "
            "sign-flip p over flights (it cannot go below 2/2^F)."
        )
        best = comp.get("strongest_simple_baseline")
        groups = [
            ("Against climatology (what a new flight gets without a model):", "climatology"),
            (f"Against the strongest simple baseline ({best}, lowest LOFO pooled MAE among the baselines):", best),
        ]
        lines += [method, ""] + ([drift, ""] if drift else [])
        for title, ref in groups:
            sel = [c for c in verdicts if c["reference"] == ref]
            if sel:
                lines += [title, "", *_verdicts(sel), ""]
        rest = [c for c in verdicts if c["reference"] not in ("climatology", best)]
        if rest:
            lines += ["Flight-normalised against plain, and the ablations:", "", *_verdicts(rest), ""]
    found = comp.get("findings")
    if found:
        lines += ["What this run shows:", ""] + [f"- {s}" for s in found["shows"]] + ["", "What it does not show:", ""]
        lines += [f"- {s}" for s in found["does_not_show"]] + [""]
    if calibration:
        lines += [
            "Calibration of the synthetic twin against the real campaign (`benchmarks/calibrate_synth.py`, "
            f"{calibration.get('preset', 'default')} preset):",
            "",
            "| quantity | target | measured | in range (-: for information) |",
            "|---|---|---|---|",
        ]
        for row in calibration.get("rows", []):
            m, ok = row["measured"], row.get("ok")
            shown = f"{m:.4g}" if isinstance(m, float) else str(m)
            lines.append(
                f"| {row['quantity']} | {row['target']} | {shown} | {'-' if ok is None else 'yes' if ok else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures
# The figures the README shows: copied from the run whose numbers it reports into figures/readme/
# (so pictures and numbers come from one run), listed under the results with their captions.

README_FIGURES = (  # in the order the README shows them
    "compare_per_flight_lofo",
    "compare_differences_climatology",
    "compare_conformal_coverage",
    "compare_intervals_along_track",
    "compare_protocol_inflation",
    "compare_pred_along_track",
    "compare_track_error_map",
)
FOLDER = Path("figures") / "readme"


def copy_figures(run_dir: str | Path, dest: str | Path) -> list[str]:
    """Copy the chosen figures of a run (``<run>/figures/<name>.png``) into ``dest``; every other
    PNG in ``dest`` is removed, so the folder holds this run's figures only. Returns the names copied."""
    src, dest = Path(run_dir) / "figures", Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copied = [name for name in README_FIGURES if (src / f"{name}.png").is_file()]
    for name in copied:
        atomic_write_bytes(dest / f"{name}.png", (src / f"{name}.png").read_bytes())
    missing = [n for n in README_FIGURES if n not in copied]
    if missing:
        log.warning("readme: %s has no %s; not shown", src, ", ".join(f"{n}.png" for n in missing))
    for stale in dest.glob("*.png"):
        if stale.stem not in copied:
            stale.unlink()
    return copied


def figures_markdown(names: list[str], folder: str | Path = FOLDER) -> str:
    """The README's figure list: each image (path relative to the README) with its caption."""
    if not names:
        return ""
    lines = ["", f"Figures of this run (`{Path(folder).as_posix()}/`, copied by `make readme`):", ""]
    for name in names:
        lines += [f"![{name}]({(Path(folder) / f'{name}.png').as_posix()})", "", f"*{caption(name)}*", ""]
    return "\n".join(lines)


def _summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if not path.exists():
        raise CbhError(f"{path}: expected a finished run's summary; found none (run `make run` first)")
    return json.loads(path.read_text())


def update(
    readme: Path,
    run_dir: Path,
    calibration: Path | None = None,
    benchmarks: list[Path] | None = None,
    drift_run: Path | None = None,
    campaigns: list[Path] | None = None,
) -> None:
    """Rewrite the generated sections; one whose input is missing is left out, with a warning."""
    summary = _summary(run_dir)
    cal = json.loads(calibration.read_text()) if calibration and calibration.exists() else None
    drift = drift_line(summary, _summary(drift_run)) if drift_run else ""
    across = "\n" + campaigns_table([summary, *map(_summary, campaigns)]) + "\n" if campaigns else ""
    needs = (("calibration table", cal, "benchmarks/calibrate_synth.py --json"), ("thread drift", drift, "--drift RUN"),
             ("intervals across campaigns", across, "make campaigns"))  # fmt: skip
    if left := [f"the {what} (needs {how})" for what, have, how in needs if not have]:
        log.warning("%s: left out: %s", readme, "; ".join(left))
    figures = copy_figures(run_dir, readme.parent / FOLDER)  # the README's pictures from the same run
    body = section(summary, cal, drift) + across + figures_markdown(figures)
    text = _replace(readme.read_text(), START, END, body, readme)
    if benchmarks is not None:
        text = _replace(text, PERF_START, PERF_END, performance_section(benchmarks), readme)
    atomic_write_text(readme, text)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Rewrite the README's generated sections.")
    ap.add_argument("run_dir", nargs="?", default=str(RunDir.named("default").root))
    ap.add_argument("readme", nargs="?", default="README.md")
    ap.add_argument("--calibration", default="benchmarks/results/calibration_default.json")
    ap.add_argument("--benchmarks", nargs="*", help="benchmark JSONs for the performance section (in this order)")
    ap.add_argument("--drift", help="a run folder of the same settings with another thread count")
    ap.add_argument("--campaigns", nargs="*", default=[], help="run folders of the pipeline on other campaigns")
    ap.add_argument(
        "--performance-only", action="store_true", help="rewrite the performance section alone (no run folder read)"
    )
    a = ap.parse_args(argv)
    try:
        if a.performance_only:
            readme = Path(a.readme)
            body = performance_section([Path(b) for b in a.benchmarks or []])
            atomic_write_text(readme, _replace(readme.read_text(), PERF_START, PERF_END, body, readme))
            return 0
        update(
            Path(a.readme),
            Path(a.run_dir),
            Path(a.calibration),
            [Path(b) for b in a.benchmarks] if a.benchmarks is not None else None,
            Path(a.drift) if a.drift else None,
            [Path(c) for c in a.campaigns],
        )
    except CbhError as exc:
        sys.stderr.write(f"readme: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
