"""Scaling out: a setting sweep (serial and on Dask) and the dask-jobqueue job scripts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cbhlib.cli import main
from tests.conftest import ROOT

SWEEP = """name: tiny
preset: tiny
set: {seeds: [0, 1], protocols: [lofo], train.epochs: 3, train.patience: 2}
models: [climatology, gbdt, physical_only]
grid:
  synthetic.shift_strength: [0, 1]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "params", tmp_path / "params")
    (tmp_path / "params" / "sweep_tiny.yaml").write_text(SWEEP)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_sweep_writes_one_tidy_table_and_a_figure(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "params/sweep_tiny.yaml"]) == 0
    folder = project / "runs" / "sweep-tiny"
    table = pd.read_csv(folder / "sweep.csv")
    assert len(table) == 2 * 3  # points x models x protocols
    assert set(table["model"]) == {"climatology", "gbdt", "physical_only"} and set(table["shift_strength"]) == {0, 1}
    assert {"pooled_mae_m", "pooled_mae_m_sd", "n_seeds"} <= set(table.columns)
    assert (table.loc[table["model"] == "physical_only", "n_seeds"] == 2).all()
    assert (table.loc[table["model"] == "physical_only", "pooled_mae_m_sd"] > 0).all()  # two seeds differ
    assert (folder / "sweep.png").stat().st_size > 10_000
    assert (folder / "point0" / "reports" / "gbdt__lofo.json").exists()
    # shifting the flights apart must hurt the tree on held-out flights
    gbdt = table[table["model"] == "gbdt"].set_index("shift_strength")["pooled_mae_m"]
    assert gbdt[1] > gbdt[0]
    # a second run reuses every finished unit and gives the same table
    again = main(["sweep", "params/sweep_tiny.yaml"])
    assert again == 0 and pd.read_csv(folder / "sweep.csv").equals(table)


def test_a_sweep_on_two_dask_workers_gives_the_serial_table(project: Path) -> None:
    (project / "params" / "sweep_one.yaml").write_text(
        SWEEP.replace("tiny\npreset", "one\npreset")
        .replace("models: [climatology, gbdt, physical_only]", "models: [climatology, physical_only]")
        .replace("[0, 1], protocols", "[0], protocols")
    )
    assert main(["sweep", "params/sweep_one.yaml", "--workers", "2"]) == 0
    dask = pd.read_csv(project / "runs" / "sweep-one" / "sweep.csv")
    shutil.rmtree(project / "runs")
    assert main(["sweep", "params/sweep_one.yaml"]) == 0
    serial = pd.read_csv(project / "runs" / "sweep-one" / "sweep.csv")
    pd.testing.assert_frame_equal(dask, serial)


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        (
            "cluster-slurm.yaml",
            [
                "#SBATCH",
                "--gres=gpu:1",
                "#SBATCH -t 02:00:00",
                "--resources GPU=1,cpu=8,step=1",
                "source .venv/bin/activate",
            ],
        ),
        (
            "cluster-pbs.yaml",
            ["#PBS -q workq", "#PBS -l walltime=04:00:00", "--nworkers 2", "--resources cpu=8,step=1"],
        ),
    ],
)
def test_cluster_files_print_their_job_script_without_a_scheduler(
    project: Path, name: str, lines: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("dask_jobqueue")
    assert main(["run", "--cluster", f"params/{name}", "--dry-run"]) == 0
    script = capsys.readouterr().out
    for line in lines:
        assert line in script, f"{line!r} not in the job script:\n{script}"
    assert ("GPU" in script) == ("gpu" in "".join(lines))  # a GPU resource only where GPUs are asked for
    assert not (project / "runs").exists()  # nothing ran


def test_a_bad_cluster_file_is_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "params" / "cluster-bad.yaml").write_text("kind: lsf\ncores: 8\n")
    assert main(["run", "--cluster", "params/cluster-bad.yaml", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "cluster-bad.yaml" in err and "kind" in err and "lsf" in err and "Traceback" not in err


def test_the_readme_shows_each_scaling_row_from_its_newest_benchmark(tmp_path: Path) -> None:
    from cbhlib.pipeline.perftable import performance_section

    old = {
        "machine": {"cpus": 2},
        "date": "2026-11-27 10:00",
        "scaling": {"pipeline_default_w1_s": 957.0, "pipeline_default_w0_s": 286.0},
    }
    new = {"machine": {"cpus": 2}, "date": "2026-11-27 12:00", "scaling": {"pipeline_default_w1_s": 301.0}}
    (tmp_path / "a.json").write_text(json.dumps(new))
    (tmp_path / "b.json").write_text(json.dumps(old))
    text = performance_section([tmp_path / "a.json", tmp_path / "b.json"])
    assert "957" not in text and "| 301.0 |" in text and "| 286.0 |" in text
    assert text.index("10:00") < text.index("12:00")  # oldest first


def test_a_busy_runs_rows_both_say_it_ran_beside_neighbours() -> None:
    from cbhlib.pipeline.perftable import _scaling_label

    wall, peak = (
        _scaling_label("pipeline_default-busy_w0_s"),
        _scaling_label("pipeline_default-busy_w0_peak_process_rss_mb"),
    )
    for label in (wall, peak):
        assert label.startswith("whole `cbh run` on default, serial, beside one CPU-bound process per core: "), label
    assert wall.endswith("wall time (s)") and peak.endswith("peak resident (MB)")
    assert _scaling_label("pipeline_default_w2_s") == "whole `cbh run` on default, `--workers 2`: wall time (s)"


def _worker_env() -> dict[str, str | None]:
    import os

    return {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}


def test_local_workers_start_with_adaptive_malloc_and_their_thread_count() -> None:
    """Dask's MALLOC_TRIM_THRESHOLD_ made torch training in a worker 1.7-3x slower."""
    pytest.importorskip("distributed")
    from distributed import Client

    from cbhlib.pipeline.distributed import local_cluster

    with local_cluster(1, 1, threads_per_worker=1) as cluster, Client(cluster) as client:
        env = client.submit(_worker_env, pure=False).result()
        # work stealing broke the cpu/step slot accounting and hung `cbh run --workers 2` (dask/distributed#4446)
        stealing = client.run_on_scheduler(lambda dask_scheduler: "stealing" in dask_scheduler.extensions)
    assert env == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}
    assert stealing is False


def test_the_shift_sweep_notebook_runs_and_states_its_rankings(project: Path) -> None:
    """notebooks/04_shift_sweep through papermill on the tiny sweep: table, figure, conclusions."""
    import papermill

    out = project / "sweep.out.ipynb"
    (project / "params" / "sweep_tiny_fn.yaml").write_text(
        SWEEP.replace(
            "models: [climatology, gbdt, physical_only]", "models: [climatology, gbdt, gbdt_fn, physical_only]"
        )
    )
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "04_shift_sweep.ipynb"),
        str(out),
        kernel_name="python3",
        progress_bar=False,
        cwd=str(project),
        parameters={"sweep_file": "params/sweep_tiny_fn.yaml", "run_dir": "runs/shift-nb", "progress": False,
                    "seeds": [0]},  # over the sweep file's seeds [0, 1] (cbh run --set seeds=... was ignored)
    )  # fmt: skip
    run = project / "runs" / "shift-nb"
    table = pd.read_csv(run / "tables" / "sweep.csv")
    assert (table.loc[table["model"] == "physical_only", "n_seeds"] == 1).all()
    ranks = pd.read_csv(run / "tables" / "sweep_rankings.csv")
    assert {"model", "other", "holds"} <= set(ranks.columns) and len(ranks) == 6  # 4 models -> 6 pairs
    effect = pd.read_csv(run / "tables" / "sweep_adaptation.csv")  # plain against flight-normalised, per strength
    assert set(effect["model"]) == {"gbdt"} and len(effect) == 2 and "when flight-normalised" in out.read_text()
    assert (run / "figures" / "sweep_shift.png").stat().st_size > 10_000
    text = out.read_text()
    assert "Same order at every shift" in text and "(lower mean pooled MAE; untested):" in text
    assert "Order flips somewhere:" in text


def test_sweep_tables_show_where_flight_normalisation_helps_and_where_it_costs() -> None:
    import pandas as pd

    from cbhlib.pipeline.sweep import adaptation_effect, adaptation_text

    rows = []
    for s, (plain, fn) in {0.0: (300, 330), 1.0: (400, 320)}.items():
        for model, mae in (("gbdt", plain), ("gbdt_fn", fn)):
            rows.append({"shift_strength": s, "model": model, "protocol": "lofo", "pooled_mae_m": mae,
                         "flight_mae_m": mae + 5, "pooled_mae_m_sd": 3.0})  # fmt: skip
    effect = adaptation_effect(pd.DataFrame(rows), "shift_strength")
    assert effect["pooled_diff_m"].tolist() == [30.0, -80.0] and set(effect["model"]) == {"gbdt"}
    text = adaptation_text(effect, "shift_strength")
    assert "gbdt: lower mean pooled and per-flight MAE when flight-normalised at shift_strength = 1.0" in text
    assert "higher under both at 0.0" in text


def test_a_notebook_s_own_settings_reach_every_sweep_point_but_its_run_folder_does_not() -> None:
    from cbhlib.config import load_config
    from cbhlib.pipeline.sweep import notebook_overrides

    cfg = load_config({"seeds": [0, 1], "progress": False, "run_dir": "runs/x", "campaign": "data/x.h5", "threads": 1})
    assert notebook_overrides(cfg) == {"seeds": [0, 1]}
    assert notebook_overrides(load_config({})) == {}
