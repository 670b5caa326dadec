"""The ``cbh`` command. Errors for people: one line, non-zero exit, no traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from cbhlib.errors import CbhError

DEFAULT_CAMPAIGN = "data/synthetic_default.h5"


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs, values parsed as YAML scalars/lists (``epochs=2``, ``seeds=[0,1]``)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise CbhError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _run_params(path: str | None, sets: list[str] | None, **fixed: str | None) -> Any:
    """RunParams from a params YAML, then ``--set`` overrides, then explicit options."""
    from cbhlib.params import load_params_yaml, parse_params

    raw = load_params_yaml(path) if path else {}
    raw.update(_parse_set(sets or []))
    raw.update({k: v for k, v in fixed.items() if v})
    return parse_params(raw, path or "command line")


def cmd_generate(a: argparse.Namespace) -> int:
    from cbhlib import synth

    overrides = _parse_set(a.set or [])
    if a.seed is not None:
        overrides["seed"] = a.seed
    try:
        cfg = synth.preset(a.preset, **overrides)
    except (KeyError, TypeError) as exc:
        raise CbhError(f"cbh generate: {exc}") from None
    out = Path(a.output or (DEFAULT_CAMPAIGN if a.preset == "default" else f"data/synthetic_{a.preset}.h5"))
    t0 = time.perf_counter()
    if a.force:
        synth.generate(cfg, out)
        made = True
    else:
        _, made = synth.ensure_campaign(cfg, out, log=None)
    size = out.stat().st_size / 2**20
    verb = "generated" if made else "up to date (same parameters), reused"
    print(f"{out}: {verb} in {time.perf_counter() - t0:.1f} s, {size:.1f} MiB")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    from cbhlib.campaign import validate_campaign

    camp = validate_campaign(a.file, scan_images=not a.no_images)
    print(f"{a.file}: valid cbh-campaign v1 ({camp.n_samples} samples, {camp.n_flights} flights)")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from cbhlib.campaign import Campaign
    from cbhlib.explore import flight_table

    camp = Campaign(a.file)
    table = flight_table(camp)
    info = {
        "file": str(a.file), "source": camp.source, "samples": camp.n_samples,
        "flights": table[["flight", "campaign", "samples", "cbh_mean_km", "cbh_std_km", "cbh_min_km", "cbh_max_km"]]
        .round(3).to_dict("records"),
        "features": {g: [f"{n} [{u}]" if u else n for n, u in zip(fg.names, fg.units)] for g, fg in camp.features.items()},
        "image_shape": list(camp.image_shape) if camp.image_shape else None,
        "image_dtype": str(camp.image_dtype) if camp.image_dtype else None,
    }
    if a.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{a.file}  (source: {camp.source})")
    print(f"{camp.n_samples} samples in {camp.n_flights} flights")
    print(table[["flight", "campaign", "samples", "cbh_mean_km", "cbh_std_km", "cbh_min_km", "cbh_max_km"]]
          .round(3).to_string(index=False))
    for g, names in info["features"].items():
        print(f"features/{g} ({len(names)}): {', '.join(names)}")
    if camp.image_shape:
        C, H, W = camp.image_shape
        print(f"images: {camp.n_samples} x {C} x {H} x {W} ({camp.image_dtype})")
    else:
        print("images: none (image modes unavailable; physical_only and baselines run)")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from cbhlib import synth
    from cbhlib.pipeline import load_pipeline, raise_on_failure, run_pipeline

    cfg = load_pipeline(a.pipeline)
    if a.run_name:
        cfg.run_name = a.run_name
    if a.campaign:
        cfg.campaign, cfg.synthetic_preset = a.campaign, None
    if cfg.synthetic_preset:
        path, made = synth.ensure_campaign(synth.preset(cfg.synthetic_preset), cfg.campaign, log=None)
        print(f"campaign {path}: {'generated' if made else 'cached (parameters unchanged)'}")
    from cbhlib.campaign import validate_campaign

    validate_campaign(cfg.campaign, scan_images=True)  # a broken file stops here, before any notebook
    only = [s for part in (a.only or []) for s in part.split(",") if s]
    t0 = time.perf_counter()
    results = run_pipeline(cfg, only=only or None, overrides=_parse_set(a.set or []), html_out=not a.no_html,
                           progress=not a.quiet)
    print(f"pipeline '{cfg.run_name}': {sum(r.ok for r in results)}/{len(results)} notebooks ok in "
          f"{time.perf_counter() - t0:.1f} s; open runs/{cfg.run_name}/index.html")
    raise_on_failure(results)
    return 0


def cmd_pretrain(a: argparse.Namespace) -> int:
    from cbhlib.campaign import Campaign
    from cbhlib.runner import encoder_keys, ensure_encoders

    params = _run_params(a.params, a.set, campaign=a.campaign, run_dir=a.run_dir)
    camp = Campaign(params.campaign)
    keys = sorted({k for proto in params.protocols for k in encoder_keys(camp, params, proto)})
    for key, path in ensure_encoders(camp, params, keys).items():
        print(f"{key}: {path}")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from cbhlib.runner import run_mode

    params = _run_params(a.params, a.set)
    run = run_mode(params)
    for proto, rep in run.reports.items():
        m = rep["aggregate_metrics"]
        print(f"{params.mode} [{proto}]: mean R2 {m['mean_r2']:.3f} +- {m['std_r2']:.3f}, pooled R2 "
              f"{m['pooled_r2']:.3f}, mean MAE {m['mean_mae_km'] * 1000:.0f} m")
    return 0


def cmd_monitor(a: argparse.Namespace) -> int:
    from cbhlib.monitor import monitor

    return monitor(a.run_dir, loop=a.loop, interval=a.interval)


def cmd_checkpoint(a: argparse.Namespace) -> int:
    """Load a checkpoint safely (weights_only) and print what it holds; never runs code."""
    import torch

    from cbhlib.checkpoints import load_checkpoint

    ck = load_checkpoint(a.file)
    state = ck.get("model_state_dict", ck.get("state_dict", {}))
    n_params = sum(int(v.numel()) for v in state.values() if isinstance(v, torch.Tensor)) if isinstance(state, dict) else 0
    print(f"{a.file}: safe to load ({len(state)} tensors, {n_params:,} values)")
    for key in ("kind", "mode", "fold_id", "test_flight", "epoch", "seed", "metrics", "config", "n_images"):
        if key in ck:
            print(f"  {key}: {ck[key]}")
    return 0


def cmd_import_er2(a: argparse.Namespace) -> int:
    from cbhlib.er2 import import_campaign

    import_campaign(a.config, a.output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cbh", description="Cloud base height from ER-2 imagery + atmospheric context")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate a synthetic campaign (cached by parameters)")
    g.add_argument("--preset", default="default", help="default, tiny or seed-shape")
    g.add_argument("-o", "--output", help=f"output file (default {DEFAULT_CAMPAIGN} for the default preset)")
    g.add_argument("--seed", type=int)
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a SynthConfig field")
    g.add_argument("--force", action="store_true", help="regenerate even when the cached file matches")
    g.set_defaults(func=cmd_generate)

    v = sub.add_parser("validate", help="check a campaign file against the contract")
    v.add_argument("file")
    v.add_argument("--no-images", action="store_true", help="skip the pixel scan")
    v.set_defaults(func=cmd_validate)

    i = sub.add_parser("info", help="flights, samples, CBH statistics, features, image shape")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    r = sub.add_parser("run", help="execute the notebook pipeline with papermill")
    r.add_argument("--run-name", help="run folder name under runs/ (default from the pipeline YAML)")
    r.add_argument("--only", action="append", metavar="STEP[,STEP]", help="run only these steps")
    r.add_argument("--campaign", help="use this campaign file instead of the synthetic default")
    r.add_argument("--pipeline", default="params/pipeline.yaml")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a parameter in every notebook declaring it")
    r.add_argument("--no-html", action="store_true")
    r.add_argument("--quiet", action="store_true", help="no per-cell progress bars")
    r.set_defaults(func=cmd_run)

    pt = sub.add_parser("pretrain", help="pretrain the MAE encoders a run needs")
    pt.add_argument("--params", help="params YAML (e.g. params/pretrain.yaml)")
    pt.add_argument("--campaign")
    pt.add_argument("--run-dir")
    pt.add_argument("--set", action="append", metavar="KEY=VALUE")
    pt.set_defaults(func=cmd_pretrain)

    t = sub.add_parser("train", help="train one fusion mode from a params YAML (no notebook)")
    t.add_argument("params")
    t.add_argument("--set", action="append", metavar="KEY=VALUE")
    t.set_defaults(func=cmd_train)

    m = sub.add_parser("monitor", help="progress of a running pipeline from its logs")
    m.add_argument("run_dir")
    m.add_argument("--loop", action="store_true", help="refresh until interrupted")
    m.add_argument("--interval", type=float, default=5.0)
    m.set_defaults(func=cmd_monitor)

    c = sub.add_parser("checkpoint", help="inspect a checkpoint safely (weights_only=True: no code runs)")
    c.add_argument("file")
    c.set_defaults(func=cmd_checkpoint)

    e = sub.add_parser("import-er2", help="import raw ER-2 files into a campaign file")
    e.add_argument("config", help="campaign import YAML")
    e.add_argument("-o", "--output", required=True)
    e.set_defaults(func=cmd_import_er2)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CbhError as exc:
        print(f"cbh {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"cbh {args.command}: interrupted; completed units are kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
