"""What keeps notebooks thin: one ``setup`` call, logging, and the environment report.

``setup(globals(), "explore")`` finds the project root (so a kernel started in
``notebooks/`` by JupyterLab resolves relative paths from the project root like the pipeline
does), builds the typed :class:`Config` from the notebook's parameters, sends library
logs to the run's ``logs/cbh.log`` (warnings also to the notebook), saves the resolved
config beside the outputs and returns the config, the run folder and the notebook's one
random generator.
"""

from __future__ import annotations

import ast
import difflib
import logging
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cbhlib import threads
from cbhlib.atomic import atomic_write_text
from cbhlib.config import Config, by_name, config_from_namespace
from cbhlib.constants import DEFAULT_CAMPAIGN
from cbhlib.errors import CbhError, ParamsError
from cbhlib.store.rundir import RunDir

MARKER = Path("params") / "pipeline.yaml"


def find_project_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``params/pipeline.yaml``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / MARKER).is_file():
            return folder
    raise CbhError(
        f"{here}: expected to run inside the cbh-fusion project (a folder with {MARKER}); "
        "start JupyterLab with `make lab` or run from the project root"
    )


def configure_logging(
    run: RunDir | None = None, level: int = logging.INFO, stderr_level: int = logging.WARNING
) -> None:
    """Library logs (``cbhlib.*``): to the run's log file at ``level``, to stderr from ``stderr_level``.

    Idempotent: re-running a notebook cell does not stack handlers.
    """
    logger = logging.getLogger("cbhlib")
    logger.setLevel(level)
    for h in list(logger.handlers):
        if getattr(h, "_cbh", False):
            logger.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(stderr_level)
    err.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    err._cbh = True  # type: ignore[attr-defined]
    logger.addHandler(err)
    if run is not None:
        run.logs.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(run.library_log)
        fh.setLevel(level)
        fh.setFormatter(fmt)
        fh._cbh = True  # type: ignore[attr-defined]
        logger.addHandler(fh)
    figures = logging.getLogger("cbhlib.figures")  # why a figure was not drawn: shown in the notebook
    for h in list(figures.handlers):
        if getattr(h, "_cbh", False):
            figures.removeHandler(h)
    out = logging.StreamHandler(sys.stdout)
    out.setLevel(logging.INFO)
    out.setFormatter(logging.Formatter("%(message)s"))
    out._cbh = True  # type: ignore[attr-defined]
    figures.addHandler(out)


def ensure_default_campaign(cfg: Config) -> None:
    """Generate the embedded synthetic campaign if the config points at it and it is missing."""
    if cfg.campaign == DEFAULT_CAMPAIGN and not Path(cfg.campaign).exists():
        from cbhlib.sources import synth

        logging.getLogger("cbhlib").warning("generating the default synthetic campaign %s", cfg.campaign)
        synth.ensure_campaign(synth.preset("default"), cfg.campaign)


def injected_names(ns: Mapping[str, Any]) -> list[str]:
    """Names assigned by papermill's injected parameters cell (``# Parameters`` in the kernel's history)."""
    names: list[str] = []
    for src in ns.get("In") or []:
        if not isinstance(src, str) or not src.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def check_injected(ns: Mapping[str, Any]) -> None:
    """Refuse a papermill ``-p`` name that is no setting (``train_epoch``), with the closest notebook name."""
    known = by_name()
    for name in injected_names(ns):
        if name not in known:
            value = ns.get(name)
            if isinstance(value, dict) and value:  # a nested YAML group (-y/-f): the notebook's names are flat
                groups = sorted({leaf.key.split(".")[0] for leaf in known.values() if "." in leaf.key})
                group = (difflib.get_close_matches(name, groups, n=1) or [name])[0]
                flat = f"{group}_{next(iter(value))}"
                hint = f"; notebook parameters are flat: did you mean '{flat}'?" if flat in known else ""
                hint = hint or " (notebook parameters are flat, e.g. train_epochs; `cbh params` lists them)"
            else:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else " (`cbh params` lists them; notebook names use _)"
            raise ParamsError("papermill parameters (-p)", name, "a setting of this notebook" + hint, "an unknown name")


def setup(ns: Mapping[str, Any], step: str) -> tuple[Config, RunDir, np.random.Generator]:
    """Config, run folder and random generator of a notebook (see the module docstring)."""
    root = find_project_root()
    if Path.cwd().resolve() != root:
        os.chdir(root)
    check_injected(ns)
    cfg = config_from_namespace(ns)
    if cfg.threads:
        threads.fix(cfg.threads)
    if not cfg.progress:
        os.environ["TQDM_DISABLE"] = "1"
    run = RunDir(cfg.run_dir)
    for folder in (run.root, run.figures, run.tables):
        folder.mkdir(parents=True, exist_ok=True)
    configure_logging(run)
    from cbhlib.plots.files import configure as configure_figures

    configure_figures(cfg.figures.dpi, cfg.figures.formats)
    ensure_default_campaign(cfg)
    atomic_write_text(run.step_config(step), yaml.safe_dump(cfg.to_nested(), sort_keys=False))
    return cfg, run, np.random.default_rng(cfg.seed)


def environment_report() -> str:
    """The versions that produced a notebook's outputs (for its last cell)."""
    import h5py
    import pandas as pd
    import sklearn
    import torch

    import cbhlib

    lines = [f"python {sys.version.split()[0]} on {platform.system()} {platform.machine()}"]
    for name, mod in (
        ("cbhlib", cbhlib),
        ("numpy", np),
        ("torch", torch),
        ("h5py", h5py),
        ("scikit-learn", sklearn),
        ("pandas", pd),
    ):
        lines.append(f"  {name:13s} {getattr(mod, '__version__', '?')}")
    lines.append(f"  torch threads {torch.get_num_threads()}, cuda available: {torch.cuda.is_available()}")
    lines.append(f"  OpenMP wait policy: {threads.describe()}")
    return "\n".join(lines)
