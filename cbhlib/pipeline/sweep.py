"""A grid of settings run as independent points, into one tidy table and a figure.

A sweep file (``params/sweep_shift.yaml``) names config layers, the models to score and a
grid: config keys (``encoder.patch: [4, 8]``, ``seeds: [[0], [1]]``), ``campaign`` files,
or ``synthetic.<field>`` values, which generate the synthetic campaign of each point
(e.g. ``synthetic.shift_strength: [0, 0.5, 1, 1.5, 2]``). Every point is its own run
folder under the sweep's folder; finished units are reused, so a sweep resumes. With
``--workers`` the points run as Dask tasks. The table has one row per point x model x
protocol with mean and sd over seeds.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cbhlib.config import NEURAL_BASELINES, load_config, read_yaml, resolve_key
from cbhlib.errors import ParamsError
from cbhlib.fields import opt, parse_dataclass
from cbhlib.models.fusion import IMAGE_MODES, MODES
from cbhlib.store.rundir import RunDir

log = logging.getLogger(__name__)


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


def load_sweep(path: str | Path) -> SweepFile:
    sw: SweepFile = parse_dataclass(SweepFile, read_yaml(path), path)
    RunDir.sweep(sw.name)  # a plain name
    if not sw.grid:
        raise ParamsError(path, "grid", "at least one setting with a list of values", "none")
    for key, values in sw.grid.items():
        if not isinstance(values, list) or not values:
            raise ParamsError(path, f"grid.{key}", "a non-empty list of values", repr(values))
        if not key.startswith("synthetic.") and key != "campaign":
            resolve_key(key, f"{path}: grid")
    for key in sw.set:
        resolve_key(key, f"{path}: set")
    return sw


def points(sw: SweepFile) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order."""
    keys = list(sw.grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(sw.grid[k] for k in keys))]


def run_point(root: str, sw: SweepFile, i: int, point: dict[str, Any], threads: int = 0) -> pd.DataFrame:
    """Score every model at one grid point; its headline rows with the point's settings.

    ``threads``: torch threads of this process (several points share the cores on Dask).
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
    from cbhlib.data.campaign import Campaign
    from cbhlib.evaluation.compare import run_baselines
    from cbhlib.evaluation.results import headline_table, load_predictions
    from cbhlib.training.encoders import pretrain_step
    from cbhlib.training.runner import run_mode

    base = Path(root)
    run = RunDir.sweep(sw.name, i, base)
    synthetic = {k.split(".", 1)[1]: v for k, v in point.items() if k.startswith("synthetic.")}
    settings = {k: v for k, v in point.items() if not k.startswith("synthetic.")}
    if synthetic or "campaign" not in settings:
        from cbhlib.sources import synth

        path = run.root / "campaign.h5"
        synth.ensure_campaign(synth.preset(sw.preset, **synthetic), path)
        settings["campaign"] = str(path)
    cfg = load_config(
        *[base / p for p in sw.params],
        ("sweep set", sw.set),
        (f"sweep point {i}", {**settings, "run_dir": str(run.root), "progress": False}),
    )
    camp = Campaign(cfg.campaign)
    run_baselines(cfg, camp, run, [m for m in sw.models if m not in MODES + NEURAL_BASELINES])
    neural = [m for m in sw.models if m in MODES + NEURAL_BASELINES]
    if camp.has_images and any(m in IMAGE_MODES for m in neural):
        pretrain_step(cfg, camp, run)
    for model in neural:
        if camp.has_images or (model == "physical_only"):
            run_mode(cfg, model, camp)
    table = headline_table(load_predictions(run, camp, models=sw.models))
    for key, value in reversed(list(point.items())):
        table.insert(
            0,
            key.split(".")[-1] if key.startswith("synthetic.") else key,
            str(value) if isinstance(value, list) else value,
        )
    return table.assign(point=i)


def run_sweep(
    path: str | Path, workers: int = 0, root: str | Path = ".", say: Callable[[str], None] | None = None
) -> pd.DataFrame:
    """Run every point (serially, or on a local Dask cluster) and write the table and figure.

    Returns:
        One row per point x model x protocol (headline columns, mean and sd over seeds).
    """
    from cbhlib import plots
    from cbhlib.atomic import atomic_write_text

    sw = load_sweep(path)
    grid = points(sw)
    folder = RunDir.sweep(sw.name, project_root=root).root
    tables: list[pd.DataFrame] = []
    if workers:
        import os

        from distributed import Client, as_completed

        from cbhlib.pipeline.distributed import local_cluster

        threads = max(1, (os.cpu_count() or 1) // workers)
        with local_cluster(workers, threads, threads_per_worker=1) as cluster, Client(cluster) as client:
            if say and client.dashboard_link:
                say(f"Dask dashboard: {client.dashboard_link}")
            futures = [client.submit(run_point, str(root), sw, i, p, threads, pure=False) for i, p in enumerate(grid)]
            for fut in as_completed(futures):
                tables.append(fut.result())
                if say:
                    say(f"sweep {sw.name}: point {int(tables[-1]['point'].iloc[0])} done ({len(tables)}/{len(grid)})")
    else:
        for i, p in enumerate(grid):
            tables.append(run_point(str(root), sw, i, p))
            if say:
                say(f"sweep {sw.name}: point {i} {p} done ({i + 1}/{len(grid)})")
    table = pd.concat(tables, ignore_index=True).sort_values(["point", "protocol"], kind="stable")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "sweep.csv", table.to_csv(index=False))
    x = next(iter(sw.grid)).split(".")[-1]
    if pd.api.types.is_numeric_dtype(table[x]):
        plots.sweep_lines(table[table["protocol"] == "lofo"], x=x, save_to=folder / "sweep.png")
    if say:
        say(f"wrote {folder / 'sweep.csv'} ({len(table)} rows) and {folder / 'sweep.png'}")
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
