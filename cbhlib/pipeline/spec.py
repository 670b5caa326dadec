"""The notebook pipeline: its file, each step's resolved config, and its parameters.

``params/pipeline.yaml`` lists steps (a notebook, config layers, per-step settings,
the steps it needs). Each step's config is merged from the defaults, the pipeline's
layers, the step's layers, the step's ``set``, the user's ``--set`` overrides and the
run's paths, and fully type-checked before any notebook starts. Execution lives in
``cbhlib.pipeline.execute``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbhlib.config import Config, load_config, read_yaml, resolve_key
from cbhlib.constants import DEFAULT_CAMPAIGN
from cbhlib.errors import CbhError, ParamsError
from cbhlib.fields import opt, parse_dataclass
from cbhlib.store.rundir import RunDir, check_run_name

log = logging.getLogger(__name__)

PER_STEP_KEYS = ("train.mode", "campaign", "run_dir")  # chosen by the pipeline, not by --set
NOTEBOOKS = "notebooks"  # the only folder a pipeline step may run a notebook from


@dataclass
class Step:
    """One notebook execution."""

    name: str = opt("", "step name: the executed notebook and its HTML are named after it")
    notebook: str = opt("", "notebook (.ipynb) relative to the project root")
    params: list[str] = opt([], "config layers (YAML) of this step, after the pipeline's")
    set: dict[str, Any] = opt({}, "settings of this step (dotted keys), after its layers")
    needs: list[str] = opt([], "steps that must finish first (a failed need skips this step)")
    needs_images: bool = opt(False, "skipped (not failed) on a campaign without images")


@dataclass
class Pipeline:
    """A pipeline file."""

    run_name: str = opt("default", "run folder name (a plain name; the folder lives in the project's runs folder)")
    campaign: str = opt(DEFAULT_CAMPAIGN, "campaign HDF5 file")
    synthetic_preset: str | None = opt(
        "default", "regenerate the campaign from this synthetic preset when stale; null for your own file"
    )
    synthetic_set: dict[str, Any] = opt({}, "overrides of the synthetic preset (e.g. shift_strength)")
    params: list[str] = opt([], "config layers shared by every step")
    steps: list[Step] = field(default_factory=list)
    source: str = "pipeline"


def load_pipeline(path: str | Path = "params/pipeline.yaml") -> Pipeline:
    """Read and check a pipeline file (``yaml.safe_load``; unknown keys and wrong types refused)."""
    raw = read_yaml(path)
    steps_raw = raw.pop("steps", None)
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ParamsError(path, "steps", "a non-empty list of steps", repr(steps_raw)[:60])
    pipe: Pipeline = parse_dataclass(Pipeline, raw, path)
    check_run_name(pipe.run_name, path)
    pipe.source = str(path)
    for i, s in enumerate(steps_raw):
        step: Step = parse_dataclass(Step, s, path, f"steps[{i}].")
        if not step.name or not step.notebook:
            raise ParamsError(path, f"steps[{i}]", "a name and a notebook", repr(s)[:80])
        check_run_name(step.name, f"{path}: steps[{i}].name")
        check_notebook(step.notebook, path, f"steps[{i}].notebook")
        pipe.steps.append(step)
    names = [s.name for s in pipe.steps]
    for s in pipe.steps:
        if names.count(s.name) > 1:
            raise ParamsError(path, f"steps ({s.name})", "unique step names", f"'{s.name}' twice")
        for need in s.needs:
            if need not in names or names.index(need) >= names.index(s.name):
                raise ParamsError(path, f"steps ({s.name}).needs", "names of earlier steps", repr(need))
        for key in s.set:
            resolve_key(key, f"{path}: steps ({s.name}).set")
    return pipe


def check_notebook(notebook: str, source: object, key: str, root: str | Path = ".") -> None:
    """A step runs a notebook of the project's ``notebooks/`` folder only: a notebook anywhere
    else could write outside the runs folder (it runs with the user's rights)."""
    folder = (Path(root) / NOTEBOOKS).resolve()
    path = Path(notebook)
    resolved = (Path(root) / path).resolve()
    if path.is_absolute() or folder not in resolved.parents or resolved.suffix != ".ipynb":
        raise ParamsError(source, key, f"a .ipynb notebook in the project's {NOTEBOOKS}/ folder", repr(notebook))


def select(pipe: Pipeline, only: list[str] | None) -> list[Step]:
    """The steps to run (all, or those named, in pipeline order)."""
    if not only:
        return list(pipe.steps)
    unknown = [n for n in only if n not in {s.name for s in pipe.steps}]
    if unknown:
        raise CbhError(f"{pipe.source}: unknown steps {unknown}; known: {', '.join(s.name for s in pipe.steps)}")
    return [s for s in pipe.steps if s.name in only]


def check_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``--set`` keys resolved to dotted keys; unknown ones and per-step keys refused."""
    out = {}
    for key, value in overrides.items():
        dotted = resolve_key(key, "--set")
        if dotted in PER_STEP_KEYS:
            raise ParamsError(
                "--set",
                key,
                "a setting shared by every step (train.mode, campaign and run_dir are "
                "chosen by the pipeline and its options: --only, --campaign, --run-name)",
                "a per-step key",
            )
        out[dotted] = value
    return out


def step_config(
    pipe: Pipeline, step: Step, run: RunDir, overrides: dict[str, Any] | None = None, progress: bool = False
) -> Config:
    """The fully checked config a step runs with."""
    layers: list[Any] = [*pipe.params, *step.params, (f"{pipe.source}: steps ({step.name}).set", step.set)]
    if overrides:
        layers.append(("--set", overrides))
    paths = {"campaign": pipe.campaign, "run_dir": run.root.as_posix(), "progress": progress}
    return load_config(*layers, (f"{pipe.source}", paths))
