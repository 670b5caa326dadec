"""Runs you can list and compare: ``cbh runs``, ``cbh compare RUN_A RUN_B``, and MLflow logging.

A run is read from what it wrote: ``summary.json`` (headline rows), ``config/<step>.yaml``
(the resolved settings of each step) and its unit files (per-sample predictions, for paired
intervals where both runs scored the same samples of the same campaign file).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from cbhlib.config import leaves
from cbhlib.errors import CbhError
from cbhlib.pipeline.nbtools import keys_taken
from cbhlib.store.rundir import RunDir

log = logging.getLogger(__name__)

# not settings of the run as a whole (a step's mode; threads and device are: a thread count
# changes float sums, so `cbh compare` must show it)
PER_STEP = ("train.mode", "run_dir", "progress")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (d or {}).items() if isinstance(d, dict) else []:
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_summary(run: RunDir) -> dict[str, Any]:
    """A run's ``summary.json``; one line naming the file when it is missing or unreadable."""
    try:
        return json.loads(run.summary.read_text())
    except FileNotFoundError:
        raise CbhError(
            f"{run.summary}: expected a finished run's summary.json; found no such file (cbh run writes it; "
            "after run_mode from Python: cbhlib.write_summary(run_dir, campaign))"
        ) from None
    except (OSError, ValueError) as exc:
        raise CbhError(f"{run.summary}: expected JSON; found {str(exc).splitlines()[0]}") from None


def step_settings(run: RunDir, steps: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each step's resolved settings by dotted key (``config/<step>.yaml``).

    Args:
        steps: the pipeline's step names (their configs alone: a training notebook records its
            settings a second time as ``train_<model>.yaml``); None: every config file.
    """
    out = {}
    named = [run.step_config(s) for s in steps or [] if run.step_config(s).is_file()]
    for path in named or run.step_configs():
        try:
            out[path.stem] = _flat(yaml.safe_load(path.read_text()))
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            log.warning("%s: unreadable (%s); left out", path, str(exc).splitlines()[0])
    return out


def run_settings(
    run: RunDir,
    changed_only: bool = True,
    steps: list[str] | None = None,
    taken: dict[str, set[str]] | None = None,
) -> dict[str, Any]:
    """The run's settings shared by its steps (those that differ from the defaults, or all).

    ``steps``: the pipeline's step names; None: those its ``summary.json`` lists, if any.
    ``taken``: per step, the keys its notebook takes (the others keep their defaults there and
    are not counted); a step not in it counts every key. None: read from the run's executed
    notebooks (``notebooks/<step>.ipynb``).
    """
    seen: dict[str, list[tuple[Any, str]]] = {}  # key -> (value, step) per step
    defaults = {k: lf.default for k, lf in leaves().items()}
    per_step = step_settings(run, _pipeline_steps(run) if steps is None else steps)
    if taken is None:
        taken = {step: keys for step in per_step if (keys := keys_taken(run.notebook(step))) is not None}
    for step, values in per_step.items():
        for key, value in values.items():
            if key not in PER_STEP and (step not in taken or key in taken[step]):
                seen.setdefault(key, []).append((value, step))
    merged = {key: _shared_value(pairs, defaults.get(key)) for key, pairs in seen.items()}
    if changed_only:
        merged = {k: v for k, v in merged.items() if k == "campaign" or defaults.get(k, object()) != v}
    return dict(sorted(merged.items()))


def _pipeline_steps(run: RunDir) -> list[str]:
    """The step names a run's ``summary.json`` lists (none: not written by ``cbh run``, or unreadable)."""
    try:
        detail = json.loads(run.summary.read_text())["steps"]["detail"] if run.summary.is_file() else []
        return [str(d["name"]) for d in detail]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _shared_value(pairs: list[tuple[Any, str]], default: Any = None) -> Any:
    """One setting across a run's steps (``pairs``: (value, step) per step): the value itself where
    every step ran with it; otherwise the value set away from the default (by most steps), then
    in brackets what the other steps kept ("2 (explore: 8)"; a step whose notebook does not take
    the setting keeps the default), never the steps of more than three."""
    groups: dict[str, tuple[Any, list[str]]] = {}
    for value, step in pairs:
        groups.setdefault(repr(value), (value, []))[1].append(step)
    if len(groups) == 1:
        return pairs[0][0]
    ranked = sorted(groups.values(), key=lambda g: (g[0] == default, -len(g[1])))
    (lead, _), others = ranked[0], ranked[1:]
    where = [", ".join(steps) if len(steps) <= 3 else f"{len(steps)} steps" for _, steps in others]
    return f"{lead!r} ({'; '.join(f'{w}: {v!r}' for w, (v, _) in zip(where, others, strict=True))})"


def _lofo_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [r for r in summary.get("headline") or [] if r.get("protocol") == "lofo"]
    return rows or list(summary.get("headline") or [])


def list_runs(project_root: str | Path = ".") -> pd.DataFrame:
    """One row per finished run: name, date, campaign, models, and its headline (lowest LOFO pooled MAE)."""
    rows = []
    for run in RunDir.all_named(project_root):
        try:
            s = read_summary(run)
        except CbhError as exc:
            log.warning("%s", exc)
            continue
        heads = [r for r in _lofo_rows(s) if isinstance(r.get("pooled_mae_m"), (int, float))]
        best = min(heads, key=lambda r: r["pooled_mae_m"]) if heads else None
        rows.append(
            {
                "name": run.name,
                "date": str(s.get("generated", "")),
                "campaign": str(s.get("campaign", "")),
                "models": ", ".join(dict.fromkeys(str(r["model"]) for r in s.get("headline") or [])),
                "headline": f"{best['model']} {best['pooled_mae_m']:.0f} m ({best['protocol']} pooled MAE)"
                if best
                else "no results",
            }
        )
    return pd.DataFrame(rows, columns=["name", "date", "campaign", "models", "headline"])


@dataclass
class RunComparison:
    """Settings and headline differences of two runs; ``paired`` where both scored the same samples."""

    a: str
    b: str
    settings: list[tuple[str, Any, Any]] = field(default_factory=list)  # key, value in A, value in B
    headline: pd.DataFrame = field(default_factory=pd.DataFrame)
    note: str = ""
    only: dict[str, list[str]] = field(default_factory=dict)  # run name -> "model (protocol)" scored by it alone


def _predictions(run: RunDir, campaign: Path) -> pd.DataFrame:
    from cbhlib.data.campaign import Campaign
    from cbhlib.evaluation.results import load_predictions

    return load_predictions(run, Campaign(campaign))


def _same_campaign(sa: dict[str, Any], sb: dict[str, Any], root: Path) -> Path | None:
    """The campaign file both runs used, if it is the same file (same bytes) and still there."""
    from cbhlib.data.campaign import Campaign

    pa, pb = root / str(sa.get("campaign", "")), root / str(sb.get("campaign", ""))
    if not (pa.is_file() and pb.is_file()):
        return None
    try:
        return pa if pa.resolve() == pb.resolve() or Campaign(pa).fingerprint() == Campaign(pb).fingerprint() else None
    except CbhError:
        return None


def _paired(pa: pd.DataFrame, pb: pd.DataFrame, reps: int) -> tuple[float, float, float] | None:
    """MAE(B) - MAE(A) with its 95 % paired interval (km), if both scored exactly the same samples."""
    from cbhlib.evaluation.stats import paired_mae_difference

    wa = pa.pivot_table(index="seed", columns="sample", values="pred_km")
    wb = pb.pivot_table(index="seed", columns="sample", values="pred_km")
    if wa.empty or list(wa.columns) != list(wb.columns) or wa.isna().any().any() or wb.isna().any().any():
        return None
    truth = pa.drop_duplicates("sample").set_index("sample").loc[wa.columns]
    d = paired_mae_difference(
        truth["truth_km"].to_numpy(), wb.to_numpy(), wa.to_numpy(), truth["flight"].to_numpy(), "B", "A", reps=reps
    )
    return d.diff, d.lo, d.hi


def compare_runs(a: str | Path, b: str | Path, project_root: str | Path = ".", reps: int = 1000) -> RunComparison:
    """Settings diff and headline diff of two runs, with paired intervals where possible."""
    root = Path(project_root)
    ra, rb = (RunDir(p) if Path(p).is_dir() else RunDir.named(str(p), root) for p in (a, b))
    sa, sb = read_summary(ra), read_summary(rb)
    out = RunComparison(ra.name, rb.name)
    seta, setb = run_settings(ra, changed_only=False), run_settings(rb, changed_only=False)
    out.settings = [(k, seta.get(k, "-"), setb.get(k, "-")) for k in sorted(seta.keys() | setb.keys())]
    out.settings = [row for row in out.settings if row[1] != row[2]]
    campaign = _same_campaign(sa, sb, root)
    preds = (_predictions(ra, campaign), _predictions(rb, campaign)) if campaign is not None else None
    out.note = (
        f"paired 95 % intervals over the samples and seeds both runs scored ({campaign})"
        if preds is not None
        else "no paired intervals: the runs used different campaign files (or one is gone)"
    )
    rows = []
    heads_a = {(r["model"], r["protocol"]): r for r in sa.get("headline") or []}
    for r in sb.get("headline") or []:
        key = (r["model"], r["protocol"])
        if key not in heads_a:
            continue
        ma, mb = heads_a[key].get("pooled_mae_m"), r.get("pooled_mae_m")
        row = {"model": key[0], "protocol": key[1], "pooled_mae_a_m": ma, "pooled_mae_b_m": mb, "b_minus_a_m": None}
        if isinstance(ma, (int, float)) and isinstance(mb, (int, float)):
            row["b_minus_a_m"] = mb - ma
        row["interval_m"] = "n/a"
        if preds is not None:
            sel = [p[(p["model"] == key[0]) & (p["protocol"] == key[1])] for p in preds]
            got = _paired(sel[0], sel[1], reps) if all(len(s) for s in sel) else None
            row["interval_m"] = (
                f"[{1000 * got[1]:+.0f}, {1000 * got[2]:+.0f}]" if got else "n/a (different samples or seeds)"
            )
        rows.append(row)
    out.headline = pd.DataFrame(rows)
    heads_b = {(r["model"], r["protocol"]) for r in sb.get("headline") or []}
    for name, mine, theirs in ((ra.name, set(heads_a), heads_b), (rb.name, heads_b, set(heads_a))):
        if alone := [f"{m} ({p})" for m, p in sorted(mine - theirs)]:
            out.only[name] = alone
    return out


def log_to_mlflow(run: RunDir, tracking_dir: str | Path) -> str:
    """Log a finished run's settings, headline metrics, summary and figures to a local MLflow folder.

    Returns:
        The MLflow run id. Raises one line where MLflow is not installed (it is optional).
    """
    try:
        import mlflow
    except ImportError:
        raise CbhError("--mlflow: expected MLflow to be installed (optional): .venv/bin/pip install mlflow") from None
    summary = read_summary(run)
    mlflow.set_tracking_uri(Path(tracking_dir).resolve().as_uri())
    mlflow.set_experiment("cbh-fusion")
    with mlflow.start_run(run_name=run.name) as active:
        mlflow.log_params({k: str(v)[:500] for k, v in run_settings(run, changed_only=False).items()})
        metrics = {}
        for r in summary.get("headline") or []:
            for col in ("pooled_mae_m", "flight_mae_m", "r2_folds", "r2_pooled"):
                v = r.get(col)
                if isinstance(v, (int, float)) and np.isfinite(v):
                    metrics[f"{r['model']}.{r['protocol']}.{col}"] = float(v)
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(run.summary))
        if run.figures.is_dir():
            mlflow.log_artifacts(str(run.figures), artifact_path="figures")
        return str(active.info.run_id)
