"""Whether the intervals hold from campaign to campaign: a run beside runs of the same pipeline
on other campaigns (other draws of the synthetic one), read from their summaries alone.

The interval methods were designed while looking at the default run, so its findings flatter
them; other draws are the out-of-sample check (``make campaigns``).
"""

from __future__ import annotations

from typing import Any

from cbhlib.evaluation.intervals import LATER_HALF_BAND


def _rows(summary: dict[str, Any], method: str) -> dict[str, dict[str, Any]]:
    return {r["model"]: r for r in (summary.get("comparison") or {}).get("conformal") or [] if r["method"] == method}


def _source(summary: dict[str, Any]) -> str:
    return str((summary.get("campaign_info") or {}).get("source") or summary.get("campaign"))


def online_held(row: dict[str, Any]) -> bool:
    """A summary row's later half (seed means) within the band of nominal on every flight."""
    lo, hi, nominal = row.get("worst_later_half"), row.get("best_later_half"), float(row["nominal"])
    band = LATER_HALF_BAND + 1e-9
    return lo is not None and hi is not None and nominal - band <= lo and hi <= nominal + band


def campaigns_table(summaries: list[dict[str, Any]], bar: float = 0.8) -> str:
    """Markdown: one row per model of the first summary, one column per run: the label-free
    interval's (``flight_t``) worst-flight coverage and flight, and whether the recentred online
    interval's later half held within the band on every flight; then which models' label-free
    worst flight reaches ``bar`` in every run. "" when no run has intervals."""
    runs = [(s, _rows(s, "flight_t"), _rows(s, "aci_centred")) for s in summaries]
    runs = [r for r in runs if r[1]]
    if not runs:
        return ""
    models = list(runs[0][1])
    nominal = float(next(iter(runs[0][1].values()))["nominal"])
    head = [f"{_source(s)} (run `{s.get('run')}`)" for s, *_ in runs]
    lines = [
        f"Intervals across campaigns (LOFO, nominal {nominal:.0%}, seed means): the same pipeline on "
        f"{len(runs)} campaigns. Each cell: the label-free interval's (`flight_t`, what `cbh predict "
        f"--intervals` writes) worst-flight coverage, that flight and its n (samples); then whether the "
        f"recentred online interval's later half lies within {LATER_HALF_BAND * 100:.0f} points of nominal "
        "on every flight.",
        "",
        "| model | " + " | ".join(head) + " |",
        "|---" * (len(runs) + 1) + "|",
    ]
    held = []
    for m in models:
        cells, ok = [], True
        for _, lf, on in runs:
            r = lf.get(m)
            if r is None:
                cells.append("-")
                ok = False
                continue
            ok &= r["worst_coverage"] >= bar
            online = "online held" if m in on and online_held(on[m]) else "online not held"
            n = f", n {r['worst_n']}" if r.get("worst_n") is not None else ""
            cells.append(f"{r['worst_coverage']:.1%} ({r['worst_flight']}{n}); {online}")
        held += [m] if ok else []
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    rest = [m for m in models if m not in held]
    lines += [
        "",
        f"Label-free worst flight at {bar:.0%} or more in every run: {', '.join(held) or 'none'} "
        f"({len(held)} of {len(models)} models); below it in at least one run: {', '.join(rest) or 'none'}.",
    ]
    return "\n".join(lines)
