"""Commands on models: pretrain, train, predict, checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cbhlib.cli.common import config_from, num, say
from cbhlib.constants import INTERVAL_METHODS, NESTED_BASE, NESTED_PROTOCOL, PROTOCOLS


def cmd_pretrain(a: argparse.Namespace) -> int:
    from cbhlib.data.campaign import Campaign
    from cbhlib.store.lock import RunLock
    from cbhlib.store.rundir import RunDir
    from cbhlib.training.encoders import pretrain_step

    cfg = config_from(a.params, a.set, campaign=a.campaign, run_dir=a.run_dir)
    with RunLock(RunDir(cfg.run_dir).lock):  # never beside a `cbh run` on the same folder
        table, _ = pretrain_step(cfg, Campaign(cfg.campaign), RunDir(cfg.run_dir))
    say(
        table[
            [
                "name",
                "frames_labelled",
                "frames_unlabelled",
                "loss_final",
                "floor_predict_zero",
                "floor_interpolation",
                "seconds",
            ]
        ]
        .round(3)
        .to_string(index=False)
    )
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from cbhlib.store.lock import RunLock
    from cbhlib.store.rundir import RunDir
    from cbhlib.training.runner import run_mode

    cfg = config_from(a.params, a.set, campaign=a.campaign, run_dir=a.run_dir)
    with RunLock(RunDir(cfg.run_dir).lock):  # never beside a `cbh run` (or another train) on the same folder
        run = run_mode(cfg)
    for proto, rep in run.reports.items():
        s = rep["seed_spread"]
        say(
            f"{rep['model_variant']} [{proto}]: pooled MAE {1000 * s['pooled_mae_km']['mean']:.0f} ± "
            f"{1000 * s['pooled_mae_km']['sd']:.0f} m, mean of fold R2 "
            f"{num(s['mean_r2']['mean'])} ± {num(s['mean_r2']['sd'])} over {rep['n_seeds']} seeds"
        )
    return 0


def _refuse_run_file(output: str, run_dir: str, option: str) -> None:
    """Predictions never replace a file of the run they apply (its checkpoints, units, reports)."""
    from pathlib import Path

    from cbhlib.errors import CbhError

    out, root = Path(output).resolve(), Path(run_dir).resolve()
    if out.exists() and (root == out or root in out.parents):
        raise CbhError(
            f"{output}: {option}: expected a new file; found a file of the run folder {run_dir}, "
            "which predict reads and never replaces (even with --force)"
        )


def cmd_predict(a: argparse.Namespace) -> int:
    from cbhlib.atomic import atomic_write_text, refuse_overwrite
    from cbhlib.data.campaign import Campaign
    from cbhlib.errors import CbhError
    from cbhlib.training.predict import predict

    if not Path(a.run_dir).is_dir():
        found = "a file" if Path(a.run_dir).exists() else "no such folder"
        raise CbhError(f"{a.run_dir}: expected a run folder (made by cbh run or cbh train); found {found}")
    if a.level is not None and not a.intervals:
        raise CbhError(f"--level {a.level:g}: expected with --intervals (it sets their nominal coverage); found alone")
    if a.labels is not None and a.intervals != "online":
        raise CbhError(
            f"--labels {a.labels}: expected with --intervals online (it learns from them); found "
            + (f"--intervals {a.intervals}, which reads no label" if a.intervals else "no --intervals")
        )
    level = 0.9 if a.level is None else a.level
    if not 0.5 < level < 1:
        raise CbhError(f"--level: expected a nominal coverage above 0.5 and below 1 (0.9 for 90 %); found {level:g}")
    _refuse_run_file(a.output, a.run_dir, "-o")
    refuse_overwrite(a.output, [a.campaign], a.force, "predictions")
    if a.per_unit:
        if Path(a.per_unit).resolve() == Path(a.output).resolve():
            raise CbhError(f"{a.per_unit}: --per-unit: expected a file other than -o; found the same path")
        _refuse_run_file(a.per_unit, a.run_dir, "--per-unit")
        refuse_overwrite(a.per_unit, [a.campaign], a.force, "per-unit predictions")
    camp = Campaign(a.campaign)
    labels = None
    if a.labels is not None:  # --labels "" too: a file is named, so it must be there
        from cbhlib.data.tabular import labels_from_csv

        labels = labels_from_csv(a.labels, camp.n_samples)
    per_unit, ens = predict(
        a.run_dir,
        a.model,
        camp,
        a.protocol,
        allow_shift=a.allow_shift,
        intervals=a.intervals,
        alpha=1 - level,
        labels=labels,
    )
    atomic_write_text(a.output, ens.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ"))
    if a.per_unit:
        atomic_write_text(a.per_unit, per_unit.to_csv(index=False))
    extra = f"; {ens['interval'].iloc[0]} intervals in lower_km, upper_km" if a.intervals else ""
    if a.intervals == "online":
        import numpy as np

        known = int(np.isfinite(labels if labels is not None else camp.cbh_km).sum())
        extra += f", learnt from {known} labels (each for the samples after it)"
    n = int(ens["n_units"].iloc[0])
    say(f"{a.output}: {len(ens)} samples, mean of {n} heads of {a.model} ({a.protocol}){extra}")
    if a.intervals and a.protocol == "lofo":
        from cbhlib.evaluation.intervals.newflight import held_out_record
        from cbhlib.store.rundir import RunDir

        say(held_out_record(RunDir(a.run_dir), a.model, a.intervals, level))
    return 0


def cmd_checkpoint(a: argparse.Namespace) -> int:
    """Load a checkpoint safely (weights_only) and print what it holds; never runs code."""
    import torch

    from cbhlib.store.checkpoints import load_checkpoint

    ck = load_checkpoint(a.file)
    state = ck.get("model_state_dict", ck.get("state_dict", {}))
    n = sum(int(v.numel()) for v in state.values() if isinstance(v, torch.Tensor)) if isinstance(state, dict) else 0
    say(f"{a.file}: safe to load ({len(state)} tensors, {n:,} values)")
    fold = ck.get("fold_id")  # nested: by its folder (the ids of outer fold 0's nested heads are 1, 2, ...)
    nested = isinstance(fold, int) and (fold >= NESTED_BASE or NESTED_PROTOCOL in Path(a.file).parts)
    for key in (
        "kind",
        "model",
        "mode",
        "fold_id",
        "test_flight",
        "epoch",
        "seed",
        "metrics",
        "config",
        "scope",
        "held_out_flight",
        "frames_labelled",
        "frames_unlabelled",
        "loss_final",
    ):
        if key in ck:
            say(f"  {key}: {ck[key]}{_nested_note(key, ck) if nested else ''}")
    return 0


def _nested_note(key: str, ck: dict[str, Any]) -> str:
    """What ``test_flight`` and ``metrics`` mean for a nested unit (fold id = outer fold x NESTED_BASE
    + the left-out training flight's index): its metrics are on that training flight."""
    fold = int(ck["fold_id"])
    if key not in ("test_flight", "metrics"):
        return ""
    inner = f"flight index {fold % NESTED_BASE} of its campaign"
    if key == "test_flight":
        return f" (held out; this nested head also left out {inner})"
    return f" (on {inner}, not on {ck.get('test_flight')})"


def _interval_method(value: str) -> str:
    """--intervals' value, or a message that names what was found (a folder: the run folder misplaced)."""
    if value in INTERVAL_METHODS:
        return value
    found = (
        f"the folder {value!r}: put the run folder before --intervals, or write --intervals=flight_t"
        if Path(value).is_dir()
        else repr(value)
    )
    raise argparse.ArgumentTypeError(f"expected {', '.join(INTERVAL_METHODS)}; found {found}")


def register(sub: Any) -> None:
    """Add this module's commands to the ``cbh`` parser."""
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
    pr.add_argument(
        "--protocol",
        default="lofo",
        choices=PROTOCOLS,
        help="whose heads: lofo (the default: one per held-out flight and seed), random or within_flight",
    )
    pr.add_argument("--force", action="store_true", help="replace existing output files (never the run's own)")
    pr.add_argument(
        "--allow-shift",
        action="store_true",
        help="predict (with a warning) where feature or pixel statistics are far from the training campaign's",
    )
    pr.add_argument(
        "--intervals",
        nargs="?",
        const=INTERVAL_METHODS[0],
        type=_interval_method,
        metavar="{" + ",".join(INTERVAL_METHODS) + "}",
        help="add lower_km/upper_km from the run's out-of-flight residuals; all but online are label-free for the "
        "new campaign. flight_t (the default): random effects over flights with Student t, wide: it allows for a "
        "new flight's own bias, drawn like the training flights'; flight: their pooled residuals, narrower, short on a "
        "flight shifted beyond them; flight_max: the largest training flight's quantile. online: learns from the new "
        "flight's lidar labels as they arrive (the campaign's own, all of them in time order, or --labels), each "
        "sample's interval from the labels before it in time (ACI recentred and rescaled: with every label arriving, "
        "the method the comparison report scores; after a sample without a label, the nominal level); flight_t "
        "before a flight's first label; after its last one, no guarantee",
    )
    pr.add_argument(
        "--labels",
        metavar="CSV",
        help="with --intervals online: the lidar labels that have arrived, columns sample (the row number -o writes) "
        "and cbh_km (km); a sample left out, or a blank cbh_km, has no label yet",
    )
    pr.add_argument(
        "--level",
        type=float,
        default=None,
        help="nominal coverage of --intervals, above 0.5 and below 1 (default 0.9)",
    )
    pr.set_defaults(func=cmd_predict)

    c = sub.add_parser("checkpoint", help="inspect a checkpoint safely (weights_only=True: no code runs)")
    c.add_argument("file", help="checkpoint (.pt)")
    c.set_defaults(func=cmd_checkpoint)
