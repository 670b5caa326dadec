"""``RunDir``: the one place that knows where everything of a run lives.

    runs/<name>/
      index.html  summary.json  predictions.csv (.parquet)     the run at a glance
      pretrain_summary.json  comparison_summary.json            the pretraining and comparison steps
      reports/<model>__<protocol>.json                           one report per model and protocol
      units/<protocol>/<model>/fold<k>_seed<s>.json              one result per unit (written last)
      checkpoints/<protocol>/<model>/fold<k>_seed<s>.pt          its fusion head (and scalers)
      encoders/<settings>/<scope>_seed<s>.pt                     pretrained MAE encoders
      cache/                                                     embeddings, image statistics
      figures/<name>.png  tables/<name>.csv                      what the notebooks show
      notebooks/<step>.ipynb  html/<step>[.report].html          executed and rendered notebooks
      config/<step>.yaml  logs/*.log                             what ran, and how it went
      .lock                                                      held while a pipeline runs

Nothing else in the package builds a path under a run folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cbhlib.errors import ParamsError

RUNS_ROOT = "runs"  # every run folder lives under this folder of the project root
RUN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
UNIT_FILE = re.compile(r"^fold(\d+)_seed(\d+)\.json$")


def check_run_name(name: str, source: object = "--run-name") -> str:
    """A plain folder name: letters, digits and ``-_.``; not ``.`` or ``..``."""
    if not isinstance(name, str) or not RUN_NAME.match(name) or name in (".", "..") or len(name) > 100:
        raise ParamsError(
            source, "run_name", "a plain name (letters, digits, '-', '_', '.'; no '/' and not '.' or '..')", repr(name)
        )
    return name


class RunDir:
    """Paths of one run folder (created lazily by the writers)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.root = Path(path)

    @classmethod
    def named(cls, name: str, project_root: str | os.PathLike = ".") -> RunDir:
        """``runs/<name>`` under the project root; ``name`` must be a plain name."""
        return cls(Path(project_root) / RUNS_ROOT / check_run_name(name))

    @classmethod
    def all_named(cls, project_root: str | os.PathLike = ".") -> list[RunDir]:
        """Every run folder under the project's runs folder that holds a ``summary.json``, by name."""
        base = Path(project_root) / RUNS_ROOT
        folders = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        return [cls(p) for p in folders if RUN_NAME.match(p.name) and (p / "summary.json").is_file()]

    def step_configs(self) -> list[Path]:
        """The resolved config of every step that ran (``config/<step>.yaml``), sorted."""
        folder = self.root / "config"
        return sorted(folder.glob("*.yaml")) if folder.is_dir() else []

    @property
    def name(self) -> str:
        return self.root.name

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    # ---- folders
    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def html(self) -> Path:
        return self.root / "html"

    # ---- files of the run
    @property
    def index(self) -> Path:
        return self.root / "index.html"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def predictions_csv(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def predictions_parquet(self) -> Path:
        return self.root / "predictions.parquet"

    @property
    def pretrain_summary(self) -> Path:
        return self.root / "pretrain_summary.json"

    @property
    def comparison_summary(self) -> Path:
        return self.root / "comparison_summary.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def pipeline_log(self) -> Path:
        return self.logs / "pipeline.log"

    @property
    def pretrain_log(self) -> Path:
        return self.logs / "pretrain.log"

    @property
    def library_log(self) -> Path:
        return self.logs / "cbh.log"

    def training_log(self, model: str) -> Path:
        return self.logs / f"training_{model}.log"

    def figure(self, name: str) -> Path:
        return self.figures / f"{name}.png"

    def table(self, name: str) -> Path:
        return self.tables / f"{name}.csv"

    def step_config(self, step: str) -> Path:
        return self.root / "config" / f"{step}.yaml"

    def notebook(self, step: str) -> Path:
        return self.notebooks / f"{step}.ipynb"

    def html_page(self, step: str, report: bool = False) -> Path:
        return self.html / f"{step}{'.report' if report else ''}.html"

    # ---- units, checkpoints, reports
    def unit_json(self, model: str, protocol: str, fold: int, seed: int) -> Path:
        return self.root / "units" / protocol / model / f"fold{fold}_seed{seed}.json"

    def unit_checkpoint(self, model: str, protocol: str, fold: int, seed: int) -> Path:
        return self.root / "checkpoints" / protocol / model / f"fold{fold}_seed{seed}.pt"

    def unit_files(self, model: str, protocol: str) -> list[tuple[int, int, Path]]:
        """(fold, seed, path) of every unit result of a model and protocol, sorted."""
        folder = self.root / "units" / protocol / model
        out = []
        for p in folder.glob("fold*_seed*.json") if folder.is_dir() else []:
            m = UNIT_FILE.match(p.name)
            if m:
                out.append((int(m.group(1)), int(m.group(2)), p))
        return sorted(out)

    def report(self, model: str, protocol: str) -> Path:
        return self.reports_dir / f"{model}__{protocol}.json"

    def reports(self) -> list[tuple[str, str, Path]]:
        """(model, protocol, path) of every report, sorted."""
        out = []
        for p in sorted(self.reports_dir.glob("*__*.json")) if self.reports_dir.is_dir() else []:
            model, protocol = p.stem.rsplit("__", 1)
            out.append((model, protocol, p))
        return out

    # ---- encoders and caches
    def encoder_dir(self, settings: str) -> Path:
        return self.root / "encoders" / settings

    def encoder_settings(self, settings: str) -> Path:
        """The settings an encoder folder was made with (notebook names), to say how another step differs."""
        return self.encoder_dir(settings) / "settings.json"

    def encoder(self, settings: str, scope: str, seed: int) -> Path:
        return self.encoder_dir(settings) / f"{scope}_seed{seed}.pt"

    def encoders(self) -> list[Path]:
        folder = self.root / "encoders"
        return sorted(folder.glob("*/*.pt")) if folder.is_dir() else []

    def cache_file(self, kind: str, key: str, suffix: str = ".npz") -> Path:
        return self.cache / f"{kind}_{key}{suffix}"

    @classmethod
    def sweep(cls, name: str, point: int | None = None, project_root: str | os.PathLike = ".") -> RunDir:
        """A sweep's folder (``runs/sweep-<name>``), or the run folder of one of its points."""
        root = Path(project_root) / RUNS_ROOT / check_run_name(f"sweep-{name}")
        return cls(root if point is None else root / f"point{point}")

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the run folder, as index.html links it."""
        return Path(os.path.relpath(path, self.root)).as_posix()
