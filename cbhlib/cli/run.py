"""Commands that run the pipeline and watch it: run, sweep, monitor, params, notebooks."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from cbhlib.cli.common import ensure_synthetic, say
from cbhlib.errors import CbhError


def cmd_params(a: argparse.Namespace) -> int:
    from cbhlib.config import describe

    every = describe()
    known = list(dict.fromkeys(r["key"].split(".")[0] for r in every if "." in r["key"]))
    unknown = [x for x in a.sections if x not in known and x not in {r["key"] for r in every}]  # top-level keys too
    if unknown:
        raise CbhError(f"section {unknown[0]!r}: expected one of {', '.join(known)}; found no such section")
    rows = [r for r in every if not a.sections or r["key"].split(".")[0] in a.sections or "." not in r["key"]]
    for r in rows:
        say(f"{r['key']:32s} {r['type']:10s} {r['default']!r:28s} {r['help']}")
    return 0


def cmd_notebooks(a: argparse.Namespace) -> int:
    from cbhlib.pipeline.nbtools import sync

    changed = sync(a.folder)
    say("\n".join(changed) if changed else f"{a.folder}: notebooks and parameters cells are in sync")
    return 0


def _project_root_or_fail(pipeline: str) -> None:
    if not Path(pipeline).is_file():
        raise CbhError(
            f"{Path.cwd()}: expected the cbh-fusion project root (a folder with {pipeline}); found none "
            "here: cd to the project, or pass --pipeline"
        )


def cmd_run(a: argparse.Namespace) -> int:
    from cbhlib.config import parse_sets
    from cbhlib.data.campaign import validate_campaign
    from cbhlib.pipeline.execute import check_exists, plan_steps, raise_on_failure, run_pipeline
    from cbhlib.pipeline.spec import load_pipeline, select
    from cbhlib.store.rundir import RunDir, check_run_name

    if a.dry_run and not a.cluster:
        raise CbhError("--dry-run: expected --cluster FILE (it prints that cluster's job script); found no --cluster")
    _project_root_or_fail(a.pipeline)
    pipe = load_pipeline(a.pipeline)
    if a.run_name is not None:
        pipe.run_name = check_run_name(a.run_name)
    if a.campaign:
        pipe.campaign, pipe.synthetic_preset = a.campaign, None
    overrides = parse_sets(a.set, "--set")
    only = [s for part in (a.only or []) for s in part.split(",") if s]
    plan_steps(pipe, only or None, overrides, a.force, warn=False)  # settings checked before any work
    executor = None
    if a.workers or a.scheduler or a.cluster:
        from cbhlib.pipeline.distributed import make_executor

        executor = make_executor(a.workers, a.scheduler, a.cluster, dry_run=a.dry_run, say=say)
        if executor is None:
            return 0  # dry run: the job script was printed
    for step in select(pipe, only or None):
        check_exists(pipe, step, Path("."))  # a misspelled notebook: before the campaign is made or scanned
    if pipe.synthetic_preset:
        made = ensure_synthetic(
            pipe.synthetic_preset, Path(pipe.campaign), pipe.synthetic_set, source=f"{a.pipeline}: synthetic_set"
        )
        say(f"campaign {pipe.campaign}: {'generated' if made else 'cached (parameters unchanged)'}")
    camp = validate_campaign(pipe.campaign, scan_images=True)  # a broken file stops here, before any notebook
    if not camp.has_labels:
        raise CbhError(
            f"{pipe.campaign}: samples/cbh_km: expected lidar labels (the pipeline trains and scores models); found "
            f"none: an inputs-only campaign; predict it with `cbh predict RUN_FOLDER --model MODEL --campaign "
            f"{pipe.campaign} -o predictions.csv`"
        )
    t0 = time.perf_counter()
    try:
        results = run_pipeline(
            pipe,
            only=only or None,
            overrides=overrides,
            html=not a.no_html,
            out=None if a.quiet else sys.stdout,
            has_images=camp.has_images,
            executor=executor,
            force=a.force,
        )
    finally:
        if executor is not None:
            executor.close()
    counts = {k: sum(r.status == k for r in results) for k in ("ok", "skipped", "failed")}
    say(
        f"pipeline '{pipe.run_name}': {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed in "
        f"{time.perf_counter() - t0:.1f} s; open {RunDir.named(pipe.run_name).index}"
    )
    raise_on_failure(results)
    return 0


IDLE_LOOKS = 12  # cbh monitor --loop on a run no pipeline holds: refreshes before it stops


def cmd_monitor(a: argparse.Namespace) -> int:
    from cbhlib.pipeline.monitor import resolve_run, status_text
    from cbhlib.store.lock import in_use

    if not 0.1 <= a.interval <= 86400:
        raise CbhError(f"--interval: expected seconds between refreshes, 0.1 to 86400; found {a.interval:g}")
    run = resolve_run(a.run_dir)
    seen, idle = False, 0  # a pipeline takes the lock after its campaign checks: a few idle looks before giving up
    while True:
        say(status_text(run.root))
        if not a.loop:
            return 0
        held = in_use(run.lock)
        seen, idle = seen or held, 0 if held else idle + 1
        if idle and (seen or idle >= IDLE_LOOKS):
            say(f"no pipeline is running in {run.root} now (none holds {run.lock.name}): stopped watching")
            return 0
        time.sleep(a.interval)


def cmd_sweep(a: argparse.Namespace) -> int:
    from cbhlib.pipeline.sweep import run_sweep

    table = run_sweep(a.sweep, workers=a.workers, say=say)
    say(f"{len(table)} rows")
    return 0


def register(sub: Any) -> None:
    """Add this module's commands to the ``cbh`` parser."""
    pa = sub.add_parser("params", help="list every setting: dotted key, type, default and help")
    pa.add_argument(
        "sections", nargs="*", help="only these sections (e.g. encoder, pretrain, train, head, compare, figures)"
    )
    pa.set_defaults(func=cmd_params)

    nb = sub.add_parser(
        "notebooks", help="refresh notebooks' parameters cells from the config and sync .py/.ipynb pairs"
    )
    nb.add_argument("--folder", default="notebooks", help="folder of the jupytext .py notebooks")
    nb.set_defaults(func=cmd_notebooks)

    r = sub.add_parser("run", help="execute the notebook pipeline with papermill (from the project root)")
    r.add_argument("--run-name", help="run folder name (letters, digits, -_.; default from the pipeline)")
    r.add_argument(
        "--only", action="append", metavar="STEP[,STEP]", help="run only these steps (finished units are reused)"
    )
    r.add_argument("--campaign", help="use this campaign file instead of the synthetic default")
    r.add_argument("--pipeline", default="params/pipeline.yaml", help="pipeline file (default params/pipeline.yaml)")
    r.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a setting in every step (cbh params lists them)"
    )
    r.add_argument("--no-html", action="store_true", help="skip HTML rendering and index.html")
    r.add_argument("--force", action="store_true", help="rerun a run folder with other settings, replacing its results")
    r.add_argument("--quiet", action="store_true", help="no per-step and per-unit progress lines")
    r.add_argument(
        "--workers", type=int, default=0, help="run independent steps on a local Dask cluster of N processes"
    )
    r.add_argument("--scheduler", help="address of an existing Dask scheduler (tcp://host:8786)")
    r.add_argument("--cluster", help="dask-jobqueue cluster YAML (Slurm or PBS); see params/cluster-*.yaml")
    r.add_argument("--dry-run", action="store_true", help="with --cluster: print the job script and exit")
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("monitor", help="progress of a running pipeline from its logs")
    m.add_argument("run_dir", help="run folder")
    m.add_argument("--loop", action="store_true", help="refresh until the run ends or you interrupt")
    m.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes")
    m.set_defaults(func=cmd_monitor)

    sw = sub.add_parser("sweep", help="run a grid of settings as units and write a tidy table and a figure")
    sw.add_argument("sweep", help="sweep YAML, e.g. params/sweep_shift.yaml")
    sw.add_argument("--workers", type=int, default=0, help="run grid points on a local Dask cluster of N processes")
    sw.set_defaults(func=cmd_sweep)
