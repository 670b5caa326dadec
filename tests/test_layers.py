"""The package's floor plan holds: layers import only downwards, and no module imports itself back."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def _cycles(package: str) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), run-time imports only."""
    g = grimp.build_graph(package, exclude_type_checking_imports=True, cache_dir=None)
    edges = {m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(edges):
        if m not in index:
            visit(m)
    return out


def test_the_layer_contract_is_kept() -> None:
    res = _lint_imports(ROOT)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "0 broken" in res.stdout


def test_no_module_imports_itself_back() -> None:
    assert _cycles("cbhlib") == []


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    copy = tmp_path / "proj"
    shutil.copytree(ROOT / "cbhlib", copy / "cbhlib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    folds = copy / "cbhlib" / "data" / "folds.py"
    folds.write_text(folds.read_text() + "\n\ndef _up() -> None:\n    from cbhlib.pipeline import spec  # noqa: F401\n")
    res = _lint_imports(copy)
    assert res.returncode != 0
    assert "cbhlib.data.folds -> cbhlib.pipeline.spec" in res.stdout


@pytest.mark.parametrize("package", ["data", "sources", "store", "models", "evaluation", "training", "pipeline", "cli"])
def test_each_subpackage_says_what_it_owns_and_may_import(package: str) -> None:
    doc = (ROOT / "cbhlib" / package / "__init__.py").read_text()
    assert "May import" in doc or package == "cli"
    modules = [p for p in (ROOT / "cbhlib" / package).glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= 12, f"cbhlib/{package}: {len(modules)} modules"
