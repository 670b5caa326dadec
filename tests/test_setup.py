"""The project's own promises: environment files agree, notebooks are clean, the CLI informs."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from cbhlib.cli import main
from cbhlib.config import load_config, read_yaml
from cbhlib.pipeline.spec import load_pipeline
from tests.conftest import ROOT

CONDA_NAMES = {"torch": "pytorch", "arch": "arch-py"}


def _req(spec: str) -> tuple[str, str]:
    m = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", spec)
    assert m, spec
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_environment_yml_mirrors_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = dict(_req(s) for s in project["dependencies"] + project["optional-dependencies"]["notebooks"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = {}
    pip_section = None
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep["pip"]
            continue
        name, ver = _req(dep)
        conda[name] = ver
    assert "pip" in conda and pip_section and any("-e ." in p for p in pip_section)
    expected = {CONDA_NAMES.get(k, k): v for k, v in pip_deps.items()}
    assert {k: v for k, v in conda.items() if k not in ("python", "pip")} == expected
    assert conda["python"] == project["requires-python"]


def test_torch_requirement_admits_the_local_wheel() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_spec = next(d for d in deps if d.startswith("torch"))
    assert torch_spec == "torch>=2.4"
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_params_files_parse(path: Path) -> None:
    """Every params file is a valid config layer, a pipeline, a sweep or a cluster file."""
    raw = read_yaml(path)
    if "steps" in raw:
        pipe = load_pipeline(path)
        for step in pipe.steps:
            assert (ROOT / step.notebook).exists()
    elif path.name.startswith(("sweep", "cluster")):
        assert raw
    else:
        load_config(path)


def test_cli_help_version_and_every_option_documented(capsys: pytest.CaptureFixture[str]) -> None:
    from cbhlib.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert p.description or sub._choices_actions, name
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"cbh {name} {action.option_strings or action.dest}: no help text"
    assert all(a.help for a in sub._choices_actions)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "cbh (cbhlib)" in capsys.readouterr().out


def test_cli_info_generate_and_params(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.h5"
    assert main(["generate", "--preset", "tiny", "-o", str(out)]) == 0
    assert "generated" in capsys.readouterr().out
    assert main(["generate", "--preset", "tiny", "-o", str(out)]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    for name in (
        "30Oct24",
        "10Feb25",
        "23Oct24",
        "12Feb25",
        "18Feb25",
        "derived_geometric_H",
        "images: ",
        "hPa" if False else "K",
    ):
        assert name in text
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [f["samples"] for f in info["flights"]] == [125, 41, 25, 36, 6]
    assert {"feature", "unit", "mean", "std"} <= set(info["features"][0])
    assert main(["params", "encoder"]) == 0
    out_params = capsys.readouterr().out
    assert "encoder.patch" in out_params and "train.epochs" not in out_params


def test_no_module_is_over_about_400_lines_and_no_library_prints() -> None:
    for path in (ROOT / "cbhlib").rglob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 420, f"{path.name}: {len(text.splitlines())} lines"
        if path.relative_to(ROOT / "cbhlib").parts[0] != "cli" and path.name != "notebook.py":
            assert not re.search(r"^\s*print\(", text, re.M), f"{path.name} prints instead of logging"


def test_run_paths_live_only_in_rundir() -> None:
    hits = []
    for path in (ROOT / "cbhlib").rglob("*.py"):
        if path.name in ("rundir.py", "constants.py", "config.py"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if (
                re.search(r"[\"']runs[\"'/]|runs/", line)
                and not line.strip().startswith("#")
                and "add_parser(" not in line
            ):
                hits.append(f"{path.name}:{i}: {line.strip()}")
    assert not hits, hits


def test_make_run_installs_widgets_and_dask_and_shared_options_follow_the_command() -> None:
    """Issue 22 item 9: no TqdmWarning on rendered pages, --workers after make run, --debug after the command."""
    from cbhlib.cli import build_parser

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("ipywidgets") for d in extras["notebooks"])
    make = (ROOT / "Makefile").read_text()
    notebooks_target = make.split("$(VENV)/.notebooks:", 1)[1].split("\n\n", 1)[0]
    assert '".[notebooks,dask]"' in notebooks_target and "run: $(VENV)/.notebooks" in make
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in ("run", "sweep", "generate", "import-er2", "pretrain", "train", "predict", "validate"):
        opts = {o for a in sub.choices[name]._actions for o in a.option_strings}
        assert {"--debug", "--quiet", "--verbose"} <= opts, name
    assert parser.parse_args(["validate", "f.h5", "--debug"]).debug is True
    assert parser.parse_args(["--debug", "validate", "f.h5"]).debug is True
    assert parser.parse_args(["validate", "f.h5"]).debug is False


def test_verbose_and_quiet_set_what_reaches_the_terminal(tmp_path: Path) -> None:
    import logging
    import os

    import numpy as np
    import pandas as pd

    from cbhlib.data.campaign import write_campaign
    from cbhlib.data.tabular import campaign_from_dataframe

    df = pd.DataFrame({"flight": ["A"] * 3, "time_utc": 1.74e9 + np.arange(3.0), "lat": 33.0, "lon": -120.0})
    path = write_campaign(tmp_path / "c.h5", campaign_from_dataframe(df, cbh=None, features={}))

    def terminal_level() -> int:
        return next(h.level for h in logging.getLogger("cbhlib").handlers if getattr(h, "_cbh", False))

    for flag, level in (("--verbose", logging.INFO), ("--quiet", logging.ERROR), ("--debug", logging.DEBUG)):
        assert main(["info", str(path), flag]) == 0
        assert terminal_level() == level, flag
    assert main(["info", str(path)]) == 0 and terminal_level() == logging.WARNING
    assert os.environ.get("TQDM_DISABLE") != "1"  # --quiet turned progress bars off for its command only
