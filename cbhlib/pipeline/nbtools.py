"""Keeping the notebooks honest: text sources, paired ``.ipynb``, parameters from the config.

Each notebook is a jupytext ``py:percent`` file (the source of truth, reviewed as text)
paired with an ``.ipynb`` (what JupyterLab opens and papermill executes; committed without
outputs). Its parameters cell is tagged ``parameters`` and states the config sections it
declares (``sections=["encoder", "pretrain"]``); the cell's lines are exactly the
config's (name, type, default, help), so ``cbh notebooks`` can refresh them and a test
can check them.
"""

from __future__ import annotations

from pathlib import Path

from cbhlib.config import parameters_cell
from cbhlib.errors import CbhError


def parameters_cell_of(nb: object) -> object:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]  # type: ignore[attr-defined]
    if len(cells) != 1:
        raise CbhError(f"expected exactly one cell tagged 'parameters'; found {len(cells)}")
    return cells[0]


def expected_parameters(cell: object) -> str:
    return parameters_cell(*cell.metadata.get("sections", []))  # type: ignore[attr-defined]


def refresh(py_path: str | Path) -> bool:
    """Rewrite the parameters cell of a ``py:percent`` notebook from the config; True if it changed."""
    import jupytext

    path = Path(py_path)
    nb = jupytext.read(path)
    cell = parameters_cell_of(nb)
    want = expected_parameters(cell)
    if cell.source == want:  # type: ignore[attr-defined]
        return False
    cell.source = want  # type: ignore[attr-defined]
    jupytext.write(nb, path, fmt="py:percent")
    return True


def cells_of(path: str | Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """(type, source, tags) of every cell: what a pair must agree on."""
    import jupytext

    nb = jupytext.read(path)
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


def sync(folder: str | Path = "notebooks") -> list[str]:
    """Refresh parameters cells, then write each ``.ipynb`` from its ``.py`` keeping cell ids.

    Returns:
        Lines describing what changed.
    """
    import jupytext
    import nbformat

    out = []
    for py in sorted(Path(folder).glob("*.py")):
        if refresh(py):
            out.append(f"{py}: parameters cell refreshed from the config")
        ipynb = py.with_suffix(".ipynb")
        new = jupytext.read(py)
        if ipynb.exists():
            old = nbformat.read(ipynb, as_version=4)
            ids = {(c.cell_type, c.source.strip()): c.get("id") for c in old.cells}
            for c in new.cells:
                if (c.cell_type, c.source.strip()) in ids and ids[(c.cell_type, c.source.strip())]:
                    c["id"] = ids[(c.cell_type, c.source.strip())]
            if cells_of(ipynb) == cells_of(py) and [c.get("id") for c in old.cells] == [c.get("id") for c in new.cells]:
                continue
        for c in new.cells:
            if c.cell_type == "code":
                c.outputs, c.execution_count = [], None
        new.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(new, ipynb)
        out.append(f"{ipynb}: written from {py.name}")
    return out


def declared(notebook: str | Path) -> set[str]:
    """Names declared in a notebook's parameters cell."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)).keys())


def keys_taken(notebook: str | Path) -> set[str] | None:
    """Dotted keys of the settings a notebook's parameters cell declares (None where it cannot be read)."""
    from cbhlib.config import by_name

    names = by_name()
    try:
        return {names[n].key for n in declared(notebook) if n in names}
    except Exception:  # missing, not a notebook, or not JSON (papermill and nbformat raise their own)
        return None
