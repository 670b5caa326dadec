"""The ``cbh`` command. Errors for people: one line, non-zero exit, no traceback (``--debug`` shows it)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from cbhlib.constants import DEFAULT_CAMPAIGN
from cbhlib.errors import CbhError

log = logging.getLogger("cbhlib.cli")


def _say(msg: str) -> None:
    print(msg, flush=True)


def _config(layers: list[str] | None, sets: list[str] | None, **fixed: Any) -> Any:
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
            return (src.decode() if isinstance(src, bytes) else str(src)).startswith("synthetic(") \
                and "synth_config_sha" in f.attrs
    except OSError:
        return False


def ensure_synthetic(preset: str, path: Path, overrides: dict[str, Any] | None = None, force: bool = False) -> bool:
    """Generate (or reuse) a synthetic campaign at ``path``; refuse to replace any other file."""
    from cbhlib import synth

    if path.exists() and not force and not _is_synthetic(path):
        raise CbhError(f"{path}: expected a synthetic campaign made by `cbh generate` (or a new path); found another "
                       "file, which would be replaced: pass --force or choose another output")
    try:
        cfg = synth.preset(preset, **(overrides or {}))
    except (KeyError, TypeError) as exc:
        raise CbhError(f"cbh generate: {str(exc).strip(chr(39))}") from None
    if force:
        synth.generate(cfg, path)
        return True
    return synth.ensure_campaign(cfg, path)[1]


def cmd_generate(a: argparse.Namespace) -> int:
    from cbhlib.config import parse_sets

    overrides = parse_sets(a.set, "--set")
    if a.seed is not None:
        overrides["seed"] = a.seed
    out = Path(a.output or (DEFAULT_CAMPAIGN if a.preset == "default" else f"data/synthetic_{a.preset}.h5"))
    t0 = time.perf_counter()
    made = ensure_synthetic(a.preset, out, overrides, a.force)
    verb = "generated" if made else "up to date (same parameters), reused"
    _say(f"{out}: {verb} in {time.perf_counter() - t0:.1f} s, {out.stat().st_size / 2**20:.1f} MiB")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    from cbhlib.campaign import validate_campaign

    camp = validate_campaign(a.file, scan_images=not a.no_images)
    pool = f", {camp.n_unlabelled} unlabelled frames" if camp.n_unlabelled else ""
    _say(f"{a.file}: valid cbh-campaign v1 ({camp.n_samples} samples, {camp.n_flights} flights{pool})")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from cbhlib.campaign import Campaign
    from cbhlib.explore import flight_table, pool_table

    camp = Campaign(a.file)
    cols = ["flight", "campaign", "samples", "cbh_mean_km", "cbh_std_km", "cbh_min_km", "cbh_max_km"]
    table = flight_table(camp)[cols].merge(pool_table(camp)[["flight", "unlabelled"]], on="flight")
    X, names = camp.feature_matrix()
    units = {f"{g}/{n}": u for g, fg in camp.features.items() for n, u in zip(fg.names, fg.units)}
    import numpy as np

    feats = [{"feature": n, "unit": units.get(n, ""), "mean": float(np.nanmean(X[:, j])), "std": float(np.nanstd(X[:, j])),
              "missing": float(np.isnan(X[:, j]).mean())} for j, n in enumerate(names)]
    info = {"file": str(a.file), "source": camp.source, "samples": camp.n_samples,
            "unlabelled_frames": camp.n_unlabelled, "flights": table.round(3).to_dict("records"), "features": feats,
            "image_shape": list(camp.image_shape) if camp.image_shape else None,
            "image_dtype": str(camp.image_dtype) if camp.image_dtype else None}
    if a.json:
        _say(json.dumps(info, indent=2))
        return 0
    _say(f"{a.file}  (source: {camp.source})")
    _say(f"{camp.n_samples} samples in {camp.n_flights} flights; {camp.n_unlabelled} unlabelled frames")
    _say(table.round(3).to_string(index=False))
    _say("features (mean, std over the samples; missing fraction):")
    for f in feats:
        _say(f"  {f['feature']:42s} {f['mean']:12.4g} {f['std']:10.4g} {f['unit']:8s} {f['missing']:.0%} missing")
    if camp.image_shape:
        C, H, W = camp.image_shape
        _say(f"images: {camp.n_samples} x {C} x {H} x {W} ({camp.image_dtype})")
    else:
        _say("images: none (image modes unavailable; physical_only and baselines run)")
    return 0


def cmd_params(a: argparse.Namespace) -> int:
    from cbhlib.config import describe

    rows = [r for r in describe() if not a.sections or r["key"].split(".")[0] in a.sections or "." not in r["key"]]
    for r in rows:
        _say(f"{r['key']:32s} {r['type']:10s} {r['default']!r:28s} {r['help']}")
    return 0


def cmd_notebooks(a: argparse.Namespace) -> int:
    from cbhlib.nbtools import sync

    changed = sync(a.folder)
    _say("\n".join(changed) if changed else f"{a.folder}: notebooks and parameters cells are in sync")
    return 0


def _project_root_or_fail(pipeline: str) -> None:
    if not Path(pipeline).is_file():
        raise CbhError(f"{Path.cwd()}: expected the cbh-fusion project root (a folder with {pipeline}); found none "
                       "here: cd to the project, or pass --pipeline")


def cmd_run(a: argparse.Namespace) -> int:
    from cbhlib.campaign import validate_campaign
    from cbhlib.config import parse_sets
    from cbhlib.execute import raise_on_failure, run_pipeline
    from cbhlib.pipeline import load_pipeline
    from cbhlib.rundir import RunDir, check_run_name

    _project_root_or_fail(a.pipeline)
    pipe = load_pipeline(a.pipeline)
    if a.run_name is not None:
        pipe.run_name = check_run_name(a.run_name)
    if a.campaign:
        pipe.campaign, pipe.synthetic_preset = a.campaign, None
    overrides = parse_sets(a.set, "--set")
    only = [s for part in (a.only or []) for s in part.split(",") if s]
    executor = None
    if a.workers or a.scheduler or a.cluster:
        from cbhlib.distributed import make_executor

        executor = make_executor(a.workers, a.scheduler, a.cluster, dry_run=a.dry_run, say=_say)
        if executor is None:
            return 0  # dry run: the job script was printed
    if pipe.synthetic_preset:
        made = ensure_synthetic(pipe.synthetic_preset, Path(pipe.campaign), pipe.synthetic_set)
        _say(f"campaign {pipe.campaign}: {'generated' if made else 'cached (parameters unchanged)'}")
    camp = validate_campaign(pipe.campaign, scan_images=True)  # a broken file stops here, before any notebook
    t0 = time.perf_counter()
    try:
        results = run_pipeline(pipe, only=only or None, overrides=overrides, html=not a.no_html,
                               out=None if a.quiet else sys.stdout, has_images=camp.has_images, executor=executor)
    finally:
        if executor is not None:
            executor.close()
    counts = {k: sum(r.status == k for r in results) for k in ("ok", "skipped", "failed")}
    _say(f"pipeline '{pipe.run_name}': {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed in "
         f"{time.perf_counter() - t0:.1f} s; open {RunDir.named(pipe.run_name).index}")
    raise_on_failure(results)
    return 0


def cmd_pretrain(a: argparse.Namespace) -> int:
    from cbhlib.campaign import Campaign
    from cbhlib.encoders import pretrain_step
    from cbhlib.rundir import RunDir

    cfg = _config(a.params, a.set, campaign=a.campaign, run_dir=a.run_dir)
    table, _ = pretrain_step(cfg, Campaign(cfg.campaign), RunDir(cfg.run_dir))
    _say(table[["name", "frames_labelled", "frames_unlabelled", "loss_final", "floor_predict_zero",
                "floor_interpolation", "seconds"]].round(3).to_string(index=False))
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from cbhlib.runner import run_mode

    cfg = _config(a.params, a.set, campaign=a.campaign, run_dir=a.run_dir)
    run = run_mode(cfg)
    for proto, rep in run.reports.items():
        s = rep["seed_spread"]
        _say(f"{rep['model_variant']} [{proto}]: pooled MAE {1000 * s['pooled_mae_km']['mean']:.0f} ± "
             f"{1000 * s['pooled_mae_km']['sd']:.0f} m, mean of fold R2 "
             f"{_num(s['mean_r2']['mean'])} ± {_num(s['mean_r2']['sd'])} over {rep['n_seeds']} seeds")
    return 0


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def cmd_predict(a: argparse.Namespace) -> int:
    from cbhlib.atomic import refuse_overwrite
    from cbhlib.campaign import Campaign
    from cbhlib.predict import predict

    refuse_overwrite(a.output, [a.campaign], a.force, "predictions")
    per_unit, ens = predict(a.run_dir, a.model, Campaign(a.campaign), a.protocol)
    from cbhlib.atomic import atomic_write_text

    atomic_write_text(a.output, ens.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ"))
    if a.per_unit:
        refuse_overwrite(a.per_unit, [a.campaign, a.output], a.force, "per-unit predictions")
        atomic_write_text(a.per_unit, per_unit.to_csv(index=False))
    _say(f"{a.output}: {len(ens)} samples, mean of {int(ens['n_units'].iloc[0])} heads of {a.model} ({a.protocol})")
    return 0


def cmd_monitor(a: argparse.Namespace) -> int:
    from cbhlib.monitor import status_text

    while True:
        _say(status_text(a.run_dir))
        if not a.loop:
            return 0
        time.sleep(a.interval)


def cmd_checkpoint(a: argparse.Namespace) -> int:
    """Load a checkpoint safely (weights_only) and print what it holds; never runs code."""
    import torch

    from cbhlib.checkpoints import load_checkpoint

    ck = load_checkpoint(a.file)
    state = ck.get("model_state_dict", ck.get("state_dict", {}))
    n = sum(int(v.numel()) for v in state.values() if isinstance(v, torch.Tensor)) if isinstance(state, dict) else 0
    _say(f"{a.file}: safe to load ({len(state)} tensors, {n:,} values)")
    for key in ("kind", "model", "mode", "fold_id", "test_flight", "epoch", "seed", "metrics", "config", "scope",
                "held_out_flight", "frames_labelled", "frames_unlabelled", "loss_final"):
        if key in ck:
            _say(f"  {key}: {ck[key]}")
    return 0


def cmd_import_er2(a: argparse.Namespace) -> int:
    from cbhlib.campaign import Campaign
    from cbhlib.er2 import import_campaign

    for cascade in import_campaign(a.config, a.output, force=a.force):
        _say(cascade.line())
    camp = Campaign(a.output)
    _say(f"wrote {a.output}: {camp.n_samples} samples in {camp.n_flights} flights, {camp.n_unlabelled} unlabelled "
         f"frames, images {camp.image_shape}")
    return 0


def cmd_sweep(a: argparse.Namespace) -> int:
    from cbhlib.sweep import run_sweep

    table = run_sweep(a.sweep, workers=a.workers, say=_say)
    _say(f"{len(table)} rows")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cbhlib import __version__

    p = argparse.ArgumentParser(prog="cbh", description="Cloud base height from ER-2 thermal imagery fused with "
                                "atmospheric context, evaluated across flights.")
    p.add_argument("--version", action="version", version=f"cbh (cbhlib) {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="generate a synthetic campaign (reused when its parameters are unchanged)")
    g.add_argument("--preset", default="default", help="default (calibrated), easy, tiny or seed-shape")
    g.add_argument("-o", "--output", help=f"output file (default {DEFAULT_CAMPAIGN} for the default preset)")
    g.add_argument("--seed", type=int, help="master seed of the generator")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a generator field, e.g. shift_strength=2")
    g.add_argument("--force", action="store_true", help="regenerate, and replace a file that is not a synthetic campaign")
    g.set_defaults(func=cmd_generate)

    v = sub.add_parser("validate", help="check a campaign file against the contract (one line on failure)")
    v.add_argument("file", help="campaign HDF5 file")
    v.add_argument("--no-images", action="store_true", help="skip the scan of every pixel")
    v.set_defaults(func=cmd_validate)

    i = sub.add_parser("info", help="flights, samples, CBH statistics, features (mean, std, units), image shape")
    i.add_argument("file", help="campaign HDF5 file")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)

    pa = sub.add_parser("params", help="list every setting: dotted key, type, default and help")
    pa.add_argument("sections", nargs="*", help="only these sections (encoder, pretrain, train, head, compare, explore)")
    pa.set_defaults(func=cmd_params)

    nb = sub.add_parser("notebooks", help="refresh notebooks' parameters cells from the config and sync .py/.ipynb pairs")
    nb.add_argument("--folder", default="notebooks", help="folder of the jupytext .py notebooks")
    nb.set_defaults(func=cmd_notebooks)

    r = sub.add_parser("run", help="execute the notebook pipeline with papermill (from the project root)")
    r.add_argument("--run-name", help="run folder name (letters, digits, -_.; default from the pipeline)")
    r.add_argument("--only", action="append", metavar="STEP[,STEP]", help="run only these steps (finished units are reused)")
    r.add_argument("--campaign", help="use this campaign file instead of the synthetic default")
    r.add_argument("--pipeline", default="params/pipeline.yaml", help="pipeline file (default params/pipeline.yaml)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting in every step (cbh params lists them)")
    r.add_argument("--no-html", action="store_true", help="skip HTML rendering and index.html")
    r.add_argument("--quiet", action="store_true", help="no per-step and per-unit progress lines")
    r.add_argument("--workers", type=int, default=0, help="run independent steps on a local Dask cluster of N processes")
    r.add_argument("--scheduler", help="address of an existing Dask scheduler (tcp://host:8786)")
    r.add_argument("--cluster", help="dask-jobqueue cluster YAML (Slurm or PBS); see params/cluster-*.yaml")
    r.add_argument("--dry-run", action="store_true", help="with --cluster: print the job script and exit")
    r.set_defaults(func=cmd_run)

    pt = sub.add_parser("pretrain", help="pretrain the MAE encoders a run needs")
    pt.add_argument("params", nargs="*", help="config layers (YAML), e.g. params/encoder.yaml")
    pt.add_argument("--campaign", help="campaign file")
    pt.add_argument("--run-dir", help="run folder (encoders go to <run-dir>/encoders/)")
    pt.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting")
    pt.set_defaults(func=cmd_pretrain)

    t = sub.add_parser("train", help="train one model under every protocol (no notebook)")
    t.add_argument("params", nargs="*", help="config layers (YAML)")
    t.add_argument("--campaign", help="campaign file")
    t.add_argument("--run-dir", help="run folder")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. train.mode=concat")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="apply a finished run's heads to a campaign file")
    pr.add_argument("run_dir", help="run folder of a finished run")
    pr.add_argument("--model", required=True, help="model name, e.g. concat")
    pr.add_argument("--campaign", required=True, help="campaign file to predict")
    pr.add_argument("-o", "--output", required=True, help="CSV: per sample, ensemble mean and sd over heads")
    pr.add_argument("--per-unit", help="CSV: one row per head and sample")
    pr.add_argument("--protocol", default="lofo", help="whose heads (default lofo: one per held-out flight and seed)")
    pr.add_argument("--force", action="store_true", help="replace existing output files")
    pr.set_defaults(func=cmd_predict)

    m = sub.add_parser("monitor", help="progress of a running pipeline from its logs")
    m.add_argument("run_dir", help="run folder")
    m.add_argument("--loop", action="store_true", help="refresh until interrupted")
    m.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes")
    m.set_defaults(func=cmd_monitor)

    c = sub.add_parser("checkpoint", help="inspect a checkpoint safely (weights_only=True: no code runs)")
    c.add_argument("file", help="checkpoint (.pt)")
    c.set_defaults(func=cmd_checkpoint)

    e = sub.add_parser("import-er2", help="import raw ER-2 files into a campaign file")
    e.add_argument("config", help="campaign import YAML")
    e.add_argument("-o", "--output", required=True, help="campaign file to write (never one of the inputs)")
    e.add_argument("--force", action="store_true", help="replace an existing output file")
    e.set_defaults(func=cmd_import_er2)

    sw = sub.add_parser("sweep", help="run a grid of settings as units and write a tidy table and a figure")
    sw.add_argument("sweep", help="sweep YAML, e.g. params/sweep_shift.yaml")
    sw.add_argument("--workers", type=int, default=0, help="run grid points on a local Dask cluster of N processes")
    sw.set_defaults(func=cmd_sweep)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cbhlib.notebook import configure_logging

    configure_logging(None, level=logging.DEBUG if args.debug else logging.INFO,
                      stderr_level=logging.DEBUG if args.debug else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except CbhError as exc:
        if args.debug:
            raise
        print(f"cbh {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"cbh {args.command}: error: out of memory (a declared size too large for this machine?)", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"cbh {args.command}: interrupted; completed units are kept, rerun to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"cbh {args.command}: unexpected error: {type(exc).__name__}: {first} (rerun with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
