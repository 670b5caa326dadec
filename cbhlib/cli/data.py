"""Commands on campaign files: generate, validate, info, import-er2."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from cbhlib.cli.common import ensure_synthetic, say
from cbhlib.constants import DEFAULT_CAMPAIGN
from cbhlib.errors import CbhError


def cmd_generate(a: argparse.Namespace) -> int:
    from cbhlib.config import parse_sets

    overrides = parse_sets(a.set, "--set")
    if a.seed is not None:
        if a.seed < 0:
            raise CbhError(f"--seed: expected an integer >= 0; found {a.seed}")
        overrides["seed"] = a.seed
    out = Path(a.output or (DEFAULT_CAMPAIGN if a.preset == "default" else f"data/synthetic_{a.preset}.h5"))
    t0 = time.perf_counter()
    made = ensure_synthetic(a.preset, out, overrides, a.force, keep_other_synthetic=True)
    verb = "generated" if made else "up to date (same parameters), reused"
    say(f"{out}: {verb} in {time.perf_counter() - t0:.1f} s, {out.stat().st_size / 2**20:.1f} MiB")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    from cbhlib.data.campaign import validate_campaign

    camp = validate_campaign(a.file, scan_images=not a.no_images)
    pool = f", {camp.n_unlabelled} unlabelled frames" if camp.n_unlabelled else ""
    labels = "" if camp.has_labels else "; no labels: inputs only, for cbh predict"
    flights = f"{camp.n_flights} flight{'s' * (camp.n_flights != 1)}"
    say(f"{a.file}: valid cbh-campaign v1 ({camp.n_samples} samples, {flights}{pool}{labels})")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from cbhlib.data.campaign import Campaign
    from cbhlib.evaluation.explore import flight_table, pool_table

    camp = Campaign(a.file)
    if camp.has_labels:
        cols = ["flight", "campaign", "samples", "cbh_mean_km", "cbh_std_km", "cbh_min_km", "cbh_max_km"]
        table = flight_table(camp)[cols]
    else:  # an inputs-only campaign: no CBH statistics
        table = pd.DataFrame(
            {
                "flight": camp.flight_names,
                "campaign": camp.flight_campaigns or [""] * camp.n_flights,
                "samples": np.bincount(camp.flight, minlength=camp.n_flights),
            }
        )
    table = table.merge(pool_table(camp)[["flight", "unlabelled"]], on="flight")
    X, names = camp.feature_matrix()
    units = {f"{g}/{n}": u for g, fg in camp.features.items() for n, u in zip(fg.names, fg.units, strict=True)}
    feats = [
        {
            "feature": n,
            "unit": units.get(n, ""),
            "mean": float(np.nanmean(X[:, j])),
            "std": float(np.nanstd(X[:, j])),
            "missing": float(np.isnan(X[:, j]).mean()),
        }
        for j, n in enumerate(names)
    ]
    info = {
        "file": str(a.file),
        "source": camp.source,
        "samples": camp.n_samples,
        "labels": camp.has_labels,
        "unlabelled_frames": camp.n_unlabelled,
        "flights": table.round(3).to_dict("records"),
        "features": feats,
        "image_shape": list(camp.image_shape) if camp.image_shape else None,
        "image_dtype": str(camp.image_dtype) if camp.image_dtype else None,
    }
    if a.json:
        say(json.dumps(info, indent=2))
        return 0
    say(f"{a.file}  (source: {camp.source})")
    flights = f"{camp.n_flights} flight{'s' * (camp.n_flights != 1)}"
    say(f"{camp.n_samples} samples in {flights}; {camp.n_unlabelled} unlabelled frames")
    if not camp.has_labels:
        say("no labels (samples/cbh_km): inputs only, for `cbh predict RUN --campaign FILE`; training refuses it")
    say(table.round(3).to_string(index=False))
    say("features (mean, std over the samples; missing fraction):")
    for f in feats:
        say(f"  {f['feature']:42s} {f['mean']:12.4g} {f['std']:10.4g} {f['unit']:8s} {f['missing']:.0%} missing")
    if camp.image_shape:
        C, H, W = camp.image_shape
        say(f"images: {camp.n_samples} x {C} x {H} x {W} ({camp.image_dtype})")
    else:
        say("images: none (image modes unavailable; physical_only and baselines run)")
    return 0


def cmd_import_er2(a: argparse.Namespace) -> int:
    from cbhlib.data.campaign import Campaign
    from cbhlib.sources.er2 import import_campaign

    for cascade in import_campaign(a.config, a.output, force=a.force):
        say(cascade.line())
    camp = Campaign(a.output)
    say(
        f"wrote {a.output}: {camp.n_samples} samples in {camp.n_flights} flights, {camp.n_unlabelled} unlabelled "
        f"frames, images {camp.image_shape}"
    )
    return 0


def register(sub: Any) -> None:
    """Add this module's commands to the ``cbh`` parser."""
    g = sub.add_parser("generate", help="generate a synthetic campaign (reused when its parameters are unchanged)")
    g.add_argument("--preset", default="default", help="default (calibrated), easy, tiny or seed-shape")
    g.add_argument("-o", "--output", help=f"output file (default {DEFAULT_CAMPAIGN} for the default preset)")
    g.add_argument("--seed", type=int, help="master seed of the generator")
    g.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a generator field, e.g. shift_strength=2"
    )
    g.add_argument(
        "--force",
        action="store_true",
        help="regenerate, and replace any file (another campaign, or one of other parameters)",
    )
    g.set_defaults(func=cmd_generate)

    v = sub.add_parser("validate", help="check a campaign file against the contract (one line on failure)")
    v.add_argument("file", help="campaign HDF5 file")
    v.add_argument("--no-images", action="store_true", help="skip the scan of every pixel")
    v.set_defaults(func=cmd_validate)

    i = sub.add_parser("info", help="flights, samples, CBH statistics, features (mean, std, units), image shape")
    i.add_argument("file", help="campaign HDF5 file")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("import-er2", help="import raw ER-2 files into a campaign file")
    e.add_argument(
        "config",
        help='campaign import YAML (flights: name, camera, lidar, navigation; every key: README, "Use your own data")',
    )
    e.add_argument("-o", "--output", required=True, help="campaign file to write (never one of the inputs)")
    e.add_argument("--force", action="store_true", help="replace an existing output file")
    e.set_defaults(func=cmd_import_er2)
