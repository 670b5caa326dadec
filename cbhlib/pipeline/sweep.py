"""A grid of settings run as independent points, into one tidy table and a figure.

A sweep file (``params/sweep_shift.yaml``) names config layers, the models to score and a
grid: config keys (``encoder.patch: [4, 8]``, ``seeds: [[0], [1]]``), ``campaign`` files,
or ``synthetic.<field>`` values, which generate the synthetic campaign of each point
(e.g. ``synthetic.shift_strength: [0, 0.5, 1, 1.5, 2]``). Every point is its own run
folder under the sweep's folder; finished units are reused, so a sweep resumes. Every point
runs on the campaign the grid, ``set`` or the config layers name; a synthetic campaign is
generated per point only for ``synthetic.*`` grid keys (or when no campaign is named at all).
Models, grid values and campaigns of every point are checked before the first point runs. With
``--workers`` the points run as Dask tasks. The table has one row per point x model x
protocol with mean and sd over seeds.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cbhlib import threads as thread_policy
from cbhlib.config import NEURAL_BASELINES, load_config, read_yaml, resolve_key
from cbhlib.constants import DEFAULT_CAMPAIGN
from cbhlib.errors import CbhError, ParamsError
from cbhlib.evaluation.flightnorm import split_variant, variant
from cbhlib.fields import opt, parse_dataclass
from cbhlib.models.fusion import IMAGE_MODES, MODES
from cbhlib.pipeline.monitor import Watcher
from cbhlib.store.rundir import RunDir

log = logging.getLogger(__name__)
MAX_POINTS = 1000  # grid points of one sweep (each a whole run of its models and seeds)


@dataclass
class SweepFile:
    """A sweep: what to vary, what to score."""

    name: str = opt("sweep", "the sweep's folder is sweep-<name> in the runs folder")
    params: list[str] = opt([], "config layers shared by every point")
    set: dict[str, Any] = opt({}, "settings shared by every point (dotted keys)")
    preset: str = opt("default", "synthetic preset of the points' campaigns (with synthetic.* grid keys)")
    models: list[str] = opt(
        ["climatology", "gbdt", "gbdt_all", "physical_only", "image_stats_mlp"],
        "models scored at every point (baselines and neural models)",
    )
    grid: dict[str, list[Any]] = opt({}, "setting -> values; the points are every combination")


def _column(key: str) -> str:
    """The table column of a grid key: ``shift_strength`` for ``synthetic.shift_strength``, else the key."""
    return key.split(".", 1)[1] if key.startswith("synthetic.") else key


def load_sweep(path: str | Path, root: str | Path = ".") -> SweepFile:
    """Read a sweep file and check every point before any work: models, grid values, campaigns.

    Raises:
        ParamsError: naming the file, the key (``grid.encoder.patch``, point values) and what was found.
    """
    from cbhlib.evaluation.baselines import SKLEARN_BASELINES

    sw: SweepFile = parse_dataclass(SweepFile, read_yaml(path), path)
    RunDir.sweep(sw.name)  # a plain name
    plain = list(SKLEARN_BASELINES) + list(MODES) + list(NEURAL_BASELINES)
    known = plain + [variant(m, how) for m in plain if m not in ("climatology", "lcl") for how in ("flight", "running")]
    unknown = [m for m in sw.models if m not in known]
    if unknown or not sw.models:
        raise ParamsError(path, "models", f"models from {', '.join(known)}", repr(unknown or sw.models))
    if not sw.grid:
        raise ParamsError(path, "grid", "at least one setting with a list of values", "none")
    for key, values in sw.grid.items():
        if not isinstance(values, list) or not values:
            raise ParamsError(path, f"grid.{key}", "a non-empty list of values", repr(values))
        if not key.startswith("synthetic.") and key != "campaign":
            resolve_key(key, f"{path}: grid")
    for key in sw.set:
        resolve_key(key, f"{path}: set")
    synthetic = [k for k in sw.grid if k.startswith("synthetic.")]
    named = [f"{where}" for where, layer in [("set", sw.set), ("grid", sw.grid)] if "campaign" in layer]
    if synthetic and named:
        raise ParamsError(
            path,
            f"{named[0]}.campaign",
            f"no campaign where the grid generates one per point ({synthetic[0]})",
            repr((sw.set if named[0] == "set" else sw.grid)["campaign"]),
        )
    sizes = [len(v) for v in sw.grid.values()]
    if math.prod(sizes) > MAX_POINTS:
        raise ParamsError(
            path, "grid", f"at most {MAX_POINTS} points", f"{math.prod(sizes):,} ({' x '.join(map(str, sizes))} values)"
        )
    for i, point in enumerate(points(sw)):
        _point_config(path, root, sw, i, point)  # every value type-checked before the first point trains
    return sw


@functools.lru_cache(maxsize=64)
def _campaign_images(path: str, mtime_ns: int) -> bool:
    """Whether a (checked: one line for a broken or label-free file) campaign has images; once per file version."""
    from cbhlib.data.campaign import validate_campaign

    camp = validate_campaign(path, scan_images=False)
    if not camp.has_labels:
        raise CbhError(f"{path}: samples/cbh_km: expected lidar labels (a sweep trains and scores models); found none")
    return camp.has_images


def _point_config(path: object, root: str | Path, sw: SweepFile, i: int, point: dict[str, Any]) -> Any:
    """Point i's settings (checked) with the campaign it runs on: the grid's or ``set``'s or the
    layers' campaign; a synthetic campaign of the preset only with synthetic.* grid keys or when
    no campaign is named anywhere."""
    from cbhlib.sources import synth
    from cbhlib.sources.synth_config import checked_overrides

    base = Path(root)
    synthetic = {k.split(".", 1)[1]: v for k, v in point.items() if k.startswith("synthetic.")}
    settings = {k: v for k, v in point.items() if not k.startswith("synthetic.")}
    source = f"{path}: grid point {i} ({', '.join(f'{k}={v!r}' for k, v in point.items())})"
    named = "campaign" in settings or "campaign" in sw.set
    named = named or any("campaign" in read_yaml(base / p) for p in sw.params)
    if synthetic or not named:
        try:
            checked_overrides(synthetic, source, synth.PRESETS.get(sw.preset))
        except ParamsError as exc:
            raise ParamsError(source, f"synthetic.{exc.key}", exc.expected, exc.found) from None
        settings["campaign"] = str(RunDir.sweep(sw.name, i, base).root / "campaign.h5")
    cfg = load_config(*[base / p for p in sw.params], ("sweep set", sw.set), (source, settings))
    if not (synthetic or not named):
        camp = Path(cfg.campaign) if Path(cfg.campaign).is_absolute() else base / cfg.campaign
        if not camp.is_file() and cfg.campaign == DEFAULT_CAMPAIGN:
            synth.ensure_campaign(synth.preset("default"), camp)  # the embedded default, as `cbh run` makes it
        if not camp.is_file():
            raise ParamsError(source, "campaign", "an existing campaign file", f"{str(camp)!r}: no such file")
        images = [
            m
            for m in sw.models
            if split_variant(m)[0] in IMAGE_MODES + NEURAL_BASELINES
            or m.startswith(("image_stats", "gbdt_all", "ridge_all"))
        ]
        if not _campaign_images(str(camp), camp.stat().st_mtime_ns) and images:
            raise ParamsError(path, "models", f"models that run without images ({camp} has none)", repr(images))
        cfg.campaign = str(camp)
    return cfg


def describe(sw: SweepFile, root: str | Path = ".") -> str:
    """What a sweep varies, scores and runs on, from its file (the sweep notebook's text)."""
    grid = "; ".join(f"{k} in {', '.join(map(str, v))}" for k, v in sw.grid.items())
    synthetic = [k for k in sw.grid if k.startswith("synthetic.")]
    if synthetic:
        data = f"each point generates the synthetic campaign of preset {sw.preset} with its {', '.join(synthetic)}"
    elif "campaign" in sw.grid:
        data = "each point runs on the campaign file its grid names"
    else:
        cfg = _point_config("sweep", root, sw, 0, points(sw)[0])
        generated = Path(cfg.campaign).name == "campaign.h5" and f"sweep-{sw.name}" in Path(cfg.campaign).parts
        data = (
            f"no campaign is named, so each point generates the synthetic campaign of preset {sw.preset}"
            if generated
            else f"every point runs on {cfg.campaign}"
        )
    n = len(points(sw))
    return (
        f"Sweep '{sw.name}': {n} point{'s' if n != 1 else ''} ({grid}) x {len(sw.models)} "
        f"model{'s' if len(sw.models) != 1 else ''} "
        f"({', '.join(sw.models)}); {data}."
    )


def points(sw: SweepFile) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order."""
    keys = list(sw.grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(sw.grid[k] for k in keys))]


def run_point(root: str, sw: SweepFile, i: int, point: dict[str, Any], threads: int = 0) -> pd.DataFrame:
    """Score every model at one grid point; its headline rows with the point's settings.

    ``threads``: torch threads of this process (several points share the cores on Dask).
    """
    if threads:
        thread_policy.fix(threads)
    from cbhlib.data.campaign import Campaign
    from cbhlib.evaluation.compare import run_baselines
    from cbhlib.evaluation.results import headline_table, load_predictions
    from cbhlib.training.encoders import pretrain_step
    from cbhlib.training.runner import run_mode

    base = Path(root)
    run = RunDir.sweep(sw.name, i, base)
    cfg = _point_config("sweep", base, sw, i, point)
    cfg.run_dir, cfg.progress = str(run.root), False
    synthetic = {k.split(".", 1)[1]: v for k, v in point.items() if k.startswith("synthetic.")}
    if cfg.campaign == str(run.root / "campaign.h5"):
        from cbhlib.sources import synth

        synth.ensure_campaign(synth.preset(sw.preset, **synthetic), cfg.campaign)
    log.info("sweep %s point %d: campaign %s", sw.name, i, cfg.campaign)
    camp = Campaign(cfg.campaign)
    cfg.train.nested = False  # a sweep scores skill; interval calibration is the comparison's
    is_neural = lambda m: split_variant(m)[0] in MODES + NEURAL_BASELINES
    run_baselines(cfg, camp, run, [m for m in sw.models if not is_neural(m)], nested=False)
    neural = [m for m in sw.models if is_neural(m)]
    if camp.has_images and any(split_variant(m)[0] in IMAGE_MODES for m in neural):
        pretrain_step(cfg, camp, run)
    for model in neural:
        base, how = split_variant(model)
        if camp.has_images or base == "physical_only":
            cfg.train.flight_norm = how
            run_mode(cfg, base, camp)
        else:
            log.warning("sweep %s point %d: %s skipped: %s has no images", sw.name, i, model, cfg.campaign)
    table = headline_table(load_predictions(run, camp, models=sw.models))
    for key, value in reversed(list(point.items())):
        table.insert(0, _column(key), str(value) if isinstance(value, list) else value)
    return table.assign(point=i)


RUN_LEVEL = ("campaign", "run_dir", "progress", "threads", "device")  # the notebook's own, not the points'


def notebook_overrides(cfg: Any) -> dict[str, Any]:
    """The top-level settings a notebook (``cbh run --set``, papermill ``-p``) changed from their
    defaults, for every point above the sweep file's ``set`` (seeds, protocols ...; not the run's
    own folder, campaign, threads or device: each point has its own)."""
    from cbhlib.config import leaves

    return {
        k: getattr(cfg, k)
        for k, lf in leaves().items()
        if "." not in k and k not in RUN_LEVEL and getattr(cfg, k) != lf.default
    }


def run_sweep(
    path: str | Path,
    workers: int = 0,
    root: str | Path = ".",
    say: Callable[[str], None] | None = None,
    overrides: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Run every point (serially, or on a local Dask cluster) and write the table and figure.

    Args:
        overrides: settings over the sweep file's ``set`` for every point (:func:`notebook_overrides`).

    Returns:
        One row per point x model x protocol (headline columns, mean and sd over seeds).
    """
    from cbhlib import plots
    from cbhlib.atomic import atomic_write_text

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ParamsError("--workers", "workers", "0 (serial) or a number of processes >= 1", repr(workers))
    sw = load_sweep(path, root)
    if overrides:
        log.info(
            "sweep %s: over the sweep file's set: %s", sw.name, ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        )
        sw.set = {**sw.set, **overrides}
    grid = points(sw)
    folder = RunDir.sweep(sw.name, project_root=root).root
    tables: list[pd.DataFrame] = []
    t0 = time.perf_counter()
    if workers:
        import os

        from distributed import Client, as_completed

        from cbhlib.pipeline.distributed import local_cluster

        cores = os.cpu_count() or 1
        if workers > cores:
            log.warning("--workers %d: more processes than the %d cores here; they will share them", workers, cores)
        threads = max(1, cores // workers)
        with local_cluster(workers, threads, threads_per_worker=1) as cluster, Client(cluster) as client:
            if say and client.dashboard_link:
                say(f"Dask dashboard: {client.dashboard_link}")
            futures = [client.submit(run_point, str(root), sw, i, p, threads, pure=False) for i, p in enumerate(grid)]
            for fut in as_completed(futures):
                tables.append(fut.result())
                if say:
                    say(
                        f"sweep {sw.name}: point {int(tables[-1]['point'].iloc[0])} done ({len(tables)}/{len(grid)})"
                        f"{_left(len(tables), len(grid), t0)}"
                    )
    else:
        for i, p in enumerate(grid):
            with Watcher(RunDir.sweep(sw.name, i, root).root, say):  # the point's units, with time left
                tables.append(run_point(str(root), sw, i, p))
            if say:
                say(f"sweep {sw.name}: point {i} {p} done ({i + 1}/{len(grid)}){_left(i + 1, len(grid), t0)}")
    table = pd.concat(tables, ignore_index=True).sort_values(["point", "protocol"], kind="stable")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "sweep.csv", table.to_csv(index=False))
    x = _column(next(iter(sw.grid)))
    lofo = table[table["protocol"] == "lofo"]
    figure = folder / "sweep.png"
    if not pd.api.types.is_numeric_dtype(table[x]):
        why = f"no figure: its x axis, the first grid key ({x}), is not numeric"
    elif lofo.empty:
        why = "no figure: it plots LOFO rows and the sweep has none"
    else:
        plots.sweep_lines(lofo, x=x, save_to=figure)
        why = ""
    if say:
        say(f"wrote {folder / 'sweep.csv'} ({len(table)} rows)" + (f" and {figure}" if not why else f"; {why}"))
    return table


def rankings(table: pd.DataFrame, x: str, metric: str = "pooled_mae_m") -> pd.DataFrame:
    """For every pair of models (LOFO): does the order by ``metric`` hold at every value of ``x``?"""
    d = table[table["protocol"] == "lofo"].pivot_table(index=x, columns="model", values=metric)
    rows = []
    for a, b in itertools.combinations(d.columns, 2):
        sign = (d[a] - d[b]).apply(lambda v: "<" if v < 0 else ">")
        rows.append(
            {
                "model": a,
                "other": b,
                "holds": sign.nunique() == 1,
                "orders": " ".join(f"{xv}:{s}" for xv, s in sign.items()),
                "better_at_all": a if (sign == "<").all() else b if (sign == ">").all() else "",
            }
        )
    return pd.DataFrame(rows)


def adaptation_effect(table: pd.DataFrame, x: str) -> pd.DataFrame:
    """Flight-normalised minus plain, per model and value of ``x`` (LOFO, mean over seeds): pooled and
    per-flight MAE differences in metres (negative: adaptation helps) and the seeds' sd of each model."""
    d = table[table["protocol"] == "lofo"]
    rows = []
    for name in sorted(set(d["model"])):
        base, how = split_variant(name)
        if how == "none" or base not in set(d["model"]):
            continue
        for xv, g in d.groupby(x, sort=True):
            a, b = g[g["model"] == name], g[g["model"] == base]
            if a.empty or b.empty:
                continue
            rows.append(
                {x: xv, "model": base, "adapted": name,
                 "pooled_diff_m": float(a["pooled_mae_m"].iloc[0] - b["pooled_mae_m"].iloc[0]),
                 "flight_diff_m": float(a["flight_mae_m"].iloc[0] - b["flight_mae_m"].iloc[0]),
                 "sd_m": float(max(a["pooled_mae_m_sd"].iloc[0], b["pooled_mae_m_sd"].iloc[0]))}
            )  # fmt: skip
    return pd.DataFrame(rows)


def adaptation_text(effect: pd.DataFrame, x: str) -> str:
    """Where flight normalisation helps and where it costs, per model, from :func:`adaptation_effect`
    (orders of means over seeds; untested)."""
    parts = []
    if effect.empty:
        return "No flight-normalised model beside its plain version in this sweep."
    for model, g in effect.groupby("model", sort=False):
        both = g[(g["pooled_diff_m"] < 0) & (g["flight_diff_m"] < 0)][x].tolist()
        cost = g[(g["pooled_diff_m"] > 0) & (g["flight_diff_m"] > 0)][x].tolist()
        parts.append(
            f"{model}: lower mean pooled and per-flight MAE when flight-normalised at {x} = "
            f"{', '.join(map(str, both)) or 'no value'}; higher under both at {', '.join(map(str, cost)) or 'no value'}"
        )
    return "; ".join(parts) + "." if parts else "No flight-normalised model beside its plain version in this sweep."


def _left(done: int, total: int, t0: float) -> str:
    """``; 4 min so far, about 6 min left`` after a sweep point."""
    from cbhlib.pipeline.monitor import duration, eta

    elapsed = time.perf_counter() - t0
    left = eta(done, total, elapsed)
    return f"; {duration(elapsed)} so far" + (f", {left}" if left else "")
