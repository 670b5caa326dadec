"""How people use the package besides `make run`: from their own notebook, from JupyterLab."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cbhlib
from cbhlib.data.campaign import Campaign, write_campaign
from cbhlib.data.tabular import campaign_from_dataframe
from tests.conftest import ROOT


def _samples_csv(path: Path, n_per: tuple[int, ...] = (50, 40, 30)) -> Path:
    """The columns a scientist has: flight, time, cbh_km, lat, lon and ERA5 features (no solar angles)."""
    rng = np.random.default_rng(0)
    rows = []
    for k, n in enumerate(n_per):
        t0 = pd.Timestamp("2025-02-10 18:00") + pd.Timedelta(days=k)
        walk = np.cumsum(rng.normal(0, 0.05, n))
        cbh = np.clip(0.8 + walk, 0.1, 1.9)
        t2m = 285 + rng.normal(0, 1, n)
        rows.append(
            pd.DataFrame(
                {
                    "flight": f"F{k}",
                    "time": t0 + pd.to_timedelta(np.arange(n) * 12, unit="s"),
                    "cbh_km": np.round(cbh / 0.03) * 0.03,
                    "lat": 33.0 + 0.01 * np.arange(n),
                    "lon": -120.0,
                    "t2m": t2m,
                    "d2m": t2m - cbh / 0.125 + rng.normal(0, 0.5, n),
                    "blh": cbh + 0.3,
                }
            )
        )
    df = pd.concat(rows, ignore_index=True).sample(frac=1.0, random_state=1)  # rows in any order
    df.to_csv(path, index=False)
    return path


def test_the_readme_snippet_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use cbhlib from your own notebook", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    df = pd.read_csv(_samples_csv(tmp_path / "my_samples.csv"))
    marks = df["cbh_km"].to_numpy(np.float32)[:, None, None, None]  # each image carries its row's label
    np.save(tmp_path / "my_images.npy", np.broadcast_to(marks, (len(df), 1, 8, 8)).copy())
    (tmp_path / "data").mkdir()
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    camp = Campaign(tmp_path / "data" / "my_campaign.h5")
    np.testing.assert_array_equal(camp.images(np.arange(camp.n_samples))[:, 0, 0, 0], camp.cbh_km)  # beside its row
    assert "physical_only" in out and "lofo" in out and "climatology" in out
    assert (tmp_path / "runs" / "mine" / "reports" / "physical_only__lofo.json").exists()
    ds = namespace["ds"]
    assert ds.sizes["sample"] == 120 and ds["cbh"].attrs["units"] == "km" and ds["era5_t2m"].attrs["units"] == "K"
    assert np.issubdtype(ds["time"].dtype, np.datetime64) and "flight" in ds.coords
    assert float(ds["sza"].min()) > 0 and float(ds["saa"].max()) <= 360  # computed: the CSV has no solar angles
    from cbhlib.pipeline.runlist import compare_runs, list_runs

    assert list(list_runs(tmp_path)["name"]) == ["mine"]  # the summary makes it a run cbh runs and cbh compare read
    assert "physical_only" in str(compare_runs("mine", "mine", tmp_path, reps=50).headline)


def test_dataframes_with_datetime64_times_become_campaigns(tmp_path: Path) -> None:
    df = pd.read_csv(_samples_csv(tmp_path / "s.csv"), parse_dates=["time"])
    data = campaign_from_dataframe(df, time="time", features={"era5": ["t2m", "d2m"]})
    expected = (df["time"] - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy()
    np.testing.assert_allclose(data.time_utc, expected[data.row_order])
    assert data.flight_names == list(dict.fromkeys(df["flight"]))
    aware = df.assign(time=df["time"].dt.tz_localize("UTC").dt.tz_convert("America/Los_Angeles"))
    np.testing.assert_allclose(campaign_from_dataframe(aware, time="time").time_utc, data.time_utc)
    camp = Campaign(write_campaign(tmp_path / "c.h5", data))
    assert camp.n_flights == 3 and camp.features["era5"].names == ["t2m", "d2m"]
    with pytest.raises(cbhlib.CbhError, match="expected columns"):
        campaign_from_dataframe(df.drop(columns="cbh_km"), time="time")


def test_the_public_surface_is_small_documented_and_lazy() -> None:
    import subprocess
    import sys

    assert {"Campaign", "run_mode", "load_config", "campaign_from_dataframe", "load_heads", "predict"} <= set(
        cbhlib.__all__
    )
    for name in cbhlib.__all__:
        assert getattr(cbhlib, name) is not None
    code = "import sys, cbhlib; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.fixture
def lab_project(tmp_path: Path, tiny_campaign: Path) -> Path:
    """A fresh project as JupyterLab sees it: notebooks, params, a (tiny) default campaign."""
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copytree(ROOT / "params", tmp_path / "params")
    (tmp_path / "data").mkdir()
    shutil.copy(tiny_campaign, tmp_path / "data" / "synthetic_default.h5")
    return tmp_path


def test_a_notebook_runs_from_the_notebooks_folder_as_lab_would(lab_project: Path) -> None:
    """The kernel starts in notebooks/: defaults resolve from the project root, outputs go to
    runs/interactive (never the pipeline's run), nothing is written inside notebooks/."""
    import papermill

    papermill.execute_notebook(
        str(lab_project / "notebooks" / "01_explore_campaign.ipynb"),
        str(lab_project / "out.ipynb"),
        kernel_name="python3",
        progress_bar=False,
        cwd=str(lab_project / "notebooks"),
        parameters={"progress": False},
    )
    assert (lab_project / "runs" / "interactive" / "figures" / "explore_example_images.png").exists()
    assert not (lab_project / "notebooks" / "runs").exists() and not (lab_project / "runs" / "default").exists()


def test_a_notebook_outside_the_project_says_where_to_run_from(tmp_path: Path) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    shutil.copy(ROOT / "notebooks" / "01_explore_campaign.ipynb", tmp_path / "nb.ipynb")
    with pytest.raises(PapermillExecutionError, match="expected to run inside the cbh-fusion project"):
        papermill.execute_notebook(
            str(tmp_path / "nb.ipynb"),
            str(tmp_path / "out.ipynb"),
            kernel_name="python3",
            progress_bar=False,
            cwd=str(tmp_path),
        )


@pytest.mark.slow
def test_every_notebook_runs_with_its_own_defaults_from_lab(lab_project: Path) -> None:
    """Run All in Lab, in order, with nothing changed (slow: the full default settings)."""
    import papermill

    for name in ("01_explore_campaign", "01b_pretrain_encoder", "02_train_fusion", "03_cross_flight_comparison"):
        papermill.execute_notebook(
            str(lab_project / "notebooks" / f"{name}.ipynb"),
            str(lab_project / f"{name}.out.ipynb"),
            kernel_name="python3",
            progress_bar=False,
            cwd=str(lab_project / "notebooks"),
        )
    assert (lab_project / "runs" / "interactive" / "comparison_summary.json").exists()
