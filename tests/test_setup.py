"""The project's own promises: environment files agree, notebooks are clean, the CLI informs."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from cbhlib.cli import main
from cbhlib.params import ParamsError, load_params_yaml, parse_params
from tests.conftest import ROOT

CONDA_NAMES = {"torch": "pytorch"}


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


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_clean(path: Path) -> None:
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in code) == 1
    src = "".join("".join(c["source"]) for c in code)
    assert "import *" not in src and "MPLBACKEND" not in src


@pytest.mark.parametrize("path", sorted((ROOT / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_params_files_parse(path: Path) -> None:
    raw = load_params_yaml(path)
    if "mode" in raw:
        parse_params(raw, str(path), check_paths=False)


PARAM_CASES = {
    "unknown mode": ({"mode": "fancy"}, "mode"),
    "unknown key": ({"learning_rate": 0.1}, "learning_rate"),
    "wrong type": ({"epochs": "fifty"}, "epochs"),
    "negative learning rate": ({"lr": -1e-3}, "lr"),
    "zero epochs": ({"epochs": 0}, "epochs"),
    "missing campaign": ({"campaign": "no/such/file.h5"}, "campaign"),
    "bad protocol": ({"protocols": ["lofo", "shuffle"]}, "protocols"),
    "list of wrong type": ({"seeds": ["a"]}, "seeds[0]"),
    "bool for int": ({"batch_size": True}, "batch_size"),
}


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
def test_bad_params_are_named(case: str, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, key = PARAM_CASES[case]
    with pytest.raises(ParamsError) as info:
        parse_params(raw, "my.yaml")
    msg = str(info.value)
    assert "my.yaml" in msg and f"'{key}'" in msg and "expected" in msg and "found" in msg
    # through the command: one line, exit 2, nothing written
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump({"campaign": str(tiny_campaign), "run_dir": str(tmp_path / "run"),
                                    "mode": "physical_only", "epochs": 2, **raw}))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"'{key}'" in err and str(path) in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_cli_info_generate_and_monitor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.h5"
    assert main(["generate", "--preset", "tiny", "-o", str(out)]) == 0
    assert "generated" in capsys.readouterr().out
    assert main(["generate", "--preset", "tiny", "-o", str(out)]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("30Oct24", "10Feb25", "23Oct24", "12Feb25", "18Feb25", "derived_geometric_H", "images: "):
        assert name in text
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [f["samples"] for f in info["flights"]] == [125, 41, 25, 36, 6]
    assert main(["monitor", str(tmp_path / "nowhere")]) == 2
