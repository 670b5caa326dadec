"""One source of truth: layered config, one error format, notebooks that match it, no code from values."""

from __future__ import annotations

import base64
from pathlib import Path

import papermill
import pytest
import yaml

from cbhlib.cli import main
from cbhlib.config import (
    SECTIONS,
    by_name,
    config_from_namespace,
    leaves,
    load_config,
    notebook_values,
    parse_sets,
    read_yaml,
    resolve_key,
    section_leaves,
)
from cbhlib.errors import CbhError, ParamsError
from cbhlib.fields import type_name
from cbhlib.pipeline.execute import safe_translator
from cbhlib.pipeline.nbtools import cells_of, expected_parameters, parameters_cell_of
from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def test_layers_merge_in_order(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text("encoder:\n  patch: 16\ntrain:\n  epochs: 7\nseeds: [4]\n")
    b = tmp_path / "b.yaml"
    b.write_text("train.epochs: 9\n")
    cfg = load_config(a, b, ("step", {"encoder_depth": 3}), overrides={"train.lr": 0.01})
    assert (cfg.encoder.patch, cfg.train.epochs, cfg.seeds, cfg.encoder.depth, cfg.train.lr) == (16, 9, [4], 3, 0.01)
    assert load_config().train.epochs == 50  # the seed's default


def test_every_setting_has_a_unique_flat_name_help_and_plain_default() -> None:
    names = [lf.name for lf in leaves().values()]
    assert len(names) == len(set(names))
    for lf in leaves().values():
        assert lf.help and by_name()[lf.name].key == lf.key and resolve_key(lf.name, "t") == lf.key
        assert type_name(lf.type) in ("str", "int", "float", "bool", "list[int]", "list[str]")
    assert set(SECTIONS) == {"encoder", "pretrain", "train", "head", "adapt", "compare", "explore", "sweep", "figures"}


CASES = {
    "unknown key": ({"seeed": 3}, "seeed", "did you mean 'seeds'"),
    "unknown nested key": ({"train": {"epochz": 3}}, "train.epochz", "did you mean 'train.epochs'"),
    "wrong type": ({"train.epochs": "fifty"}, "train.epochs", "an integer"),
    "bool for int": ({"train.batch_size": True}, "train.batch_size", "an integer"),
    "negative learning rate": ({"train.lr": -1e-3}, "train.lr", "> 0"),
    "unknown mode": ({"train.mode": "fancy"}, "train.mode", "one of image_only"),
    "bad protocol": ({"protocols": ["lofo", "shuffle"]}, "protocols", "one of lofo"),
    "list of wrong type": ({"seeds": ["a"]}, "seeds[0]", "an integer"),
    "bytes from !!binary": ({"seeds": b"+__import__('os')"}, "seeds", "a plain value"),
    "heads not dividing": ({"encoder.embed_dim": 50, "encoder.heads": 3}, "encoder.heads", "a divisor"),
    "duplicate seeds": ({"seeds": [1, 1]}, "seeds", "distinct"),
    "infinite": ({"train.lr": float("inf")}, "train.lr", "finite"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_settings_are_named_once(
    case: str, tiny_campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, key, expected = CASES[case]
    with pytest.raises(ParamsError) as info:
        load_config(("my.yaml", raw))
    msg = str(info.value)
    assert msg.startswith("my.yaml: ") and f"'{key}'" in msg and expected in msg and "found" in msg
    if isinstance(next(iter(raw.values())), bytes):
        return
    path = tmp_path / "my.yaml"  # through the command: one line, exit 2, nothing written
    path.write_text(yaml.safe_dump({"campaign": str(tiny_campaign), "run_dir": str(tmp_path / "run"), **raw}))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"'{key}'" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_set_values_are_yaml_and_binary_tags_are_refused() -> None:
    assert parse_sets(["seeds=[0, 1]", "train.lr=0.01", "progress=false", "campaign=data/x.h5"]) == {
        "seeds": [0, 1],
        "train.lr": 0.01,
        "progress": False,
        "campaign": "data/x.h5",
    }
    payload = base64.b64encode(b'"+str(__import__("os").system("id"))+"').decode()
    with pytest.raises(ParamsError, match="plain value"):
        parse_sets([f"seeds=!!binary {payload}"])
    with pytest.raises(ParamsError, match="YAML value"):
        parse_sets(["seeds=!!python/object:os.system [id]"])


def test_a_key_given_twice_in_a_yaml_file_is_refused(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys: `train: {epochs: 3}` then `train: {lr: 0.1}` lost the epochs."""
    layer = tmp_path / "p.yaml"
    layer.write_text("train:\n  epochs: 3\nseeds: [0]\ntrain:\n  lr: 0.1\n")
    with pytest.raises(ParamsError, match=r"p.yaml: parameter '\(file\)': expected each key once per mapping; "
                       r"found 'train' again at line 4"):  # fmt: skip
        load_config(layer)
    layer.write_text("train: {epochs: 3, lr: 0.1}\nhead: {hidden: [8, 8]}\ncompare: {baselines: [ridge, gbdt]}\n")
    assert load_config(layer).train.epochs == 3  # equal values in lists and other mappings are fine


def test_a_number_in_exponent_notation_is_a_number(tmp_path: Path) -> None:
    """PyYAML reads 1e-3 (no dot) as text: ``--set train.lr=1e-3`` and ``lr: 5e-4`` were refused as strings."""
    layer = tmp_path / "p.yaml"
    layer.write_text("train:\n  lr: 5e-4\nhead:\n  dropout: 2E-1\n")
    cfg = load_config(layer, overrides=parse_sets(["train.weight_decay=1e-3"]))
    assert (cfg.train.lr, cfg.head.dropout, cfg.train.weight_decay) == (5e-4, 0.2, 1e-3)
    for bad, expected in (("train.lr=nan", "a number"), ("train.epochs=1e3", "an integer")):
        with pytest.raises(ParamsError, match=f"expected {expected}; found"):
            load_config(overrides=parse_sets([bad]))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("train:\n  epochs: [50\n", "expected ',' or ']', but got '<stream end>' at line 3, column 1"),
        ("train:\n  epochs: 50: 60\n", "mapping values are not allowed here at line 2, column 13"),
    ],
)
def test_a_yaml_syntax_error_says_where(tmp_path: Path, text: str, where: str) -> None:
    (tmp_path / "train.yaml").write_text(text)
    with pytest.raises(ParamsError) as err:
        read_yaml(tmp_path / "train.yaml")
    assert str(err.value) == f"{tmp_path / 'train.yaml'}: parameter '(file)': expected valid YAML; found {where}"


def test_a_folder_for_a_yaml_file_and_a_near_miss_key_say_so(tmp_path: Path) -> None:
    from cbhlib.sources.er2_config import load_import_config

    with pytest.raises(ParamsError, match="expected an existing YAML file; found a folder"):
        read_yaml(tmp_path)
    (tmp_path / "import.yaml").write_text("flight:\n  - {name: a}\n")
    with pytest.raises(CbhError, match=r"parameter 'flight': expected one of flights, .* \(did you mean 'flights'\?\)"):
        load_import_config(tmp_path / "import.yaml")


def test_safe_translator_writes_values_that_read_back_identically() -> None:
    tr = safe_translator()
    values = {
        "a": 'x"+__import__("os").system("id")+"',
        "b": "back\\slash\\",
        "c": "new\nline",
        "d": [1, 2.5, None],
        "e": {"k": ["v", True]},
        "f": -3,
    }
    code = tr.codify(values)
    ns: dict = {}
    exec(compile(code, "injected", "exec"), {"__builtins__": {}}, ns)
    assert ns == values
    with pytest.raises(ParamsError):
        tr.translate(b"bytes")
    with pytest.raises(ParamsError):
        tr.translate(object())


def test_notebook_values_pass_only_changed_plain_settings() -> None:
    cfg = load_config(overrides={"train.epochs": 3, "seeds": [0]})
    vals = notebook_values(cfg, {"train_epochs", "seeds", "train_lr", "not_a_setting"})
    assert vals == {"train_epochs": 3, "seeds": [0]}


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_matches_the_config(py: Path) -> None:
    """Names, types, defaults and help of every parameter equal the config's (papermill's own parser)."""
    import jupytext

    cell = parameters_cell_of(jupytext.read(py))
    assert cell.source == expected_parameters(cell), "run `cbh notebooks` to refresh it"
    sections = cell.metadata.get("sections", [])
    declared = papermill.inspect_notebook(str(py.with_suffix(".ipynb")))
    want = {lf.name: lf for lf in section_leaves(*sections)}
    assert list(declared) == list(want)
    for name, p in declared.items():
        lf = want[name]
        assert (
            p["inferred_type_name"] == type_name(lf.type) and p["default"] == repr(lf.default) and p["help"] == lf.help
        )


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.name)
def test_paired_notebooks_agree_and_are_committed_clean(py: Path) -> None:
    import json

    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists() and cells_of(py) == cells_of(ipynb)
    nb = json.loads(ipynb.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert all(c.get("id") for c in nb["cells"])  # stable ids, kept by `cbh notebooks`
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    src = "".join("".join(c["source"]) for c in code if "parameters" not in c["metadata"].get("tags", []))
    assert "import *" not in src and "MPLBACKEND" not in src
    assert "runs/" not in src and "figures/" not in src  # every path comes from the config and RunDir


def test_notebook_sync_keeps_cell_ids(tmp_path: Path) -> None:
    import json
    import shutil

    from cbhlib.pipeline.nbtools import sync

    for p in (ROOT / "notebooks").glob("01_explore_campaign.*"):
        shutil.copy(p, tmp_path / p.name)
    before = [c["id"] for c in json.loads((tmp_path / "01_explore_campaign.ipynb").read_text())["cells"]]
    assert sync(tmp_path) == []  # already in sync
    text = (
        (tmp_path / "01_explore_campaign.py")
        .read_text()
        .replace("# ## CBH distribution per flight", "# ## CBH per flight")
    )
    (tmp_path / "01_explore_campaign.py").write_text(text)
    assert sync(tmp_path)
    after = json.loads((tmp_path / "01_explore_campaign.ipynb").read_text())["cells"]
    changed = [i for i, c in enumerate(after) if c["id"] != before[i]]
    assert len(changed) == 1 and "CBH per flight" in "".join(after[changed[0]]["source"])


def test_a_single_value_for_a_list_setting_is_refused_with_how_to_write_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(
        ParamsError,
        match=r"parameter 'seeds': expected a list of int in brackets; for one value "
        r"write seeds=\[3\]; found 3 \(int\)",
    ):
        load_config(overrides=parse_sets(["seeds=3"]))
    with pytest.raises(ParamsError, match=r"protocols=\[lofo\]"):
        load_config({"protocols": "lofo"})
    assert load_config(overrides=parse_sets(["seeds=[3]"])).seeds == [3]
    monkeypatch.chdir(ROOT)
    assert main(["run", "--run-name", "never-made", "--set", "seeds=3", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "write seeds=[3]" in err
    assert not (ROOT / "runs" / "never-made").exists()


def test_notebook_parameter_errors_use_the_notebooks_names_and_papermill_spelling() -> None:
    with pytest.raises(ParamsError) as info:  # papermill's -p passes '[0]' as text
        config_from_namespace({"seeds": "[0]"})
    assert "-y 'seeds: [0]'" in str(info.value) and "seeds=[[0]]" not in str(info.value)
    with pytest.raises(ParamsError) as info:
        config_from_namespace({"explore_images_per_flight": -2})
    msg = str(info.value)
    assert "parameter 'explore_images_per_flight' (setting explore.images_per_flight): expected" in msg, msg
    with pytest.raises(ParamsError) as info:  # a nested setting: the hints use the notebook's name
        config_from_namespace({"head_hidden": "[64, 32]"})
    assert "-y 'head_hidden: [64, 32]'" in str(info.value) and info.value.setting == "head.hidden"
    with pytest.raises(ParamsError, match=r"for one value write head_hidden=\[64\]"):
        config_from_namespace({"head_hidden": 64})
    with pytest.raises(ParamsError, match=r"parameter 'seeds\[1\]': expected an integer"):
        config_from_namespace({"seeds": [0, "x"]})  # a top-level setting keeps its one name
    with pytest.raises(ParamsError, match=r"^x\.yaml: parameter 'explore\.images_per_flight': "):
        load_config(("x.yaml", {"explore": {"images_per_flight": -2}}))  # YAML keeps the dotted key


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["predcit"], "invalid choice: 'predcit'"),
        (["predict", "x", "--modle", "concat", "--campaign", "x.h5", "-o", "y.csv"], "unknown option --modle"),
        (["run", "--sett", "seeds=[0]"], "unrecognized arguments: --sett"),
        (["run", "--zzzz"], "unrecognized arguments: --zzzz"),
        (["predict", "x", "--camp", "x.h5", "--mod", "concat"], "required: -o/--output"),  # prefixes argparse accepts
        (["predict", "--", "--mdl"], "required: --model"),  # after --: positionals, not options
    ],
)
def test_a_mistyped_command_or_option_gets_its_closest_spelling_in_one_line(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and said in err and len(err.splitlines()) == 1, err
    close = {"predcit": "mean 'predict'?", "--modle": "(did you mean --model?)", "--sett": "did you mean --set?"}
    hint = next((h for k, h in close.items() if k in argv), None)
    assert (hint in err) if hint else "did you mean" not in err, err


def test_a_range_written_as_text_gets_no_one_value_hint() -> None:
    """`cbh_range_km: "0.1-2"` was told to write `[0.1-2]`; a text that is no single value gets no such hint."""
    with pytest.raises(ParamsError) as info:
        load_config(overrides={"seeds": "0-4"})
    assert "expected a list of int in brackets; found '0-4'" in str(info.value) and "[0-4]" not in str(info.value)
