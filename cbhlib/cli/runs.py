"""Commands on finished runs: runs (list, optionally log to MLflow) and compare."""

from __future__ import annotations

import argparse
import difflib
from typing import Any

from cbhlib.cli.common import say
from cbhlib.errors import CbhError


def cmd_runs(a: argparse.Namespace) -> int:
    from cbhlib.pipeline.runlist import list_runs, log_to_mlflow
    from cbhlib.store.rundir import RunDir

    table = list_runs()
    unknown = [n for n in a.names or [] if n not in set(table["name"])]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(table["name"]), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else " (cbh runs lists them)"
        raise CbhError(f"expected names of finished runs; found {', '.join(unknown)}{hint}")
    if a.names:
        table = table[table["name"].isin(a.names)]
    if table.empty:
        say("no finished runs (a run folder with summary.json)")
        return 0
    cols = ["name", "date", "campaign", "headline", "models"]  # the long list of models last: columns stay aligned
    width = {c: max(len(c), *(len(str(v)) for v in table[c])) for c in cols[:-1]}
    for row in [dict(zip(cols, cols, strict=True)), *table[cols].to_dict("records")]:
        say("  ".join(str(row[c]).ljust(width[c]) for c in cols[:-1]) + "  " + str(row["models"]))
    if a.mlflow:
        for name in table["name"]:
            run_id = log_to_mlflow(RunDir.named(name), a.mlflow)
            say(f"{name}: logged to MLflow in {a.mlflow} (run id {run_id})")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from cbhlib.pipeline.runlist import compare_runs

    c = compare_runs(a.run_a, a.run_b, reps=a.reps)
    say(f"settings that differ ({c.a} -> {c.b}):" if c.settings else f"settings: {c.a} and {c.b} ran with the same")
    for key, va, vb in c.settings:
        say(f"  {key}: {va!r} -> {vb!r}")
    if c.headline.empty:
        say("headline: no model and protocol scored in both runs")
    else:
        say(f"headline, pooled MAE (m), B = {c.b} minus A = {c.a}; {c.note}:")
        say(c.headline.round(1).to_string(index=False))
    for name, alone in c.only.items():
        say(f"scored by {name} only (not compared): {', '.join(alone)}")
    return 0


def register(sub: Any) -> None:
    """Add this module's commands to the ``cbh`` parser."""
    r = sub.add_parser("runs", help="list finished runs: name, date, campaign, models, headline")
    r.add_argument("names", nargs="*", help="only these runs")
    r.add_argument("--mlflow", metavar="DIR", help="also log them to a local MLflow tracking folder (needs mlflow)")
    r.set_defaults(func=cmd_runs)

    c = sub.add_parser("compare", help="settings and headline differences of two runs, with paired intervals")
    c.add_argument("run_a", help="run name or run folder")
    c.add_argument("run_b", help="run name or run folder")
    c.add_argument("--reps", type=int, default=1000, help="bootstrap replicates of the paired intervals")
    c.set_defaults(func=cmd_compare)
