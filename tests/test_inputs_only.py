"""A new flight without labels: valid for validate, info and predict; refused by training (issue 22 item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cbhlib.cli import main
from cbhlib.data.campaign import Campaign, write_campaign
from cbhlib.data.tabular import campaign_from_dataframe
from tests.conftest import ROOT


def _table(flights: tuple[str, ...], n: int, labels: bool = True, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k, name in enumerate(flights):
        cbh = np.clip(0.8 + np.cumsum(rng.normal(0, 0.05, n)), 0.1, 1.9)
        t2m = 285 + rng.normal(0, 1, n)
        rows.append(
            pd.DataFrame(
                {
                    "flight": name,
                    "time": pd.Timestamp("2025-02-10 18:00")
                    + pd.Timedelta(days=k)
                    + pd.to_timedelta(12 * np.arange(n), "s"),
                    "cbh_km": cbh,
                    "lat": 33.0,
                    "lon": -120.0,
                    "t2m": t2m,
                    "d2m": t2m - cbh / 0.125,
                }
            )
        )
    df = pd.concat(rows, ignore_index=True)
    return df if labels else df.drop(columns="cbh_km")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished physical_only run (3 labelled flights) and a one-flight campaign without labels."""
    tmp = tmp_path_factory.mktemp("inputs_only")
    feats = {"era5": ["t2m", "d2m"]}
    lab = write_campaign(
        tmp / "lab.h5", campaign_from_dataframe(_table(("A", "B", "C"), 30), time="time", features=feats)
    )
    new = campaign_from_dataframe(_table(("NEW",), 7, labels=False, seed=3), time="time", cbh=None, features=feats)
    new_path = write_campaign(tmp / "new.h5", new)
    sets = ["train.mode=physical_only", "train.epochs=2", "seeds=[0]", "protocols=[lofo]", "progress=false"]
    args = ["train", "--campaign", str(lab), "--run-dir", str(tmp / "run")] + [x for s in sets for x in ("--set", s)]
    assert main(args) == 0
    return tmp / "run", new_path


def test_an_inputs_only_flight_is_valid_and_described(trained, capsys: pytest.CaptureFixture[str]) -> None:
    _, new = trained
    camp = Campaign(new)
    assert not camp.has_labels and camp.n_flights == 1 and camp.has_solar_angles
    capsys.readouterr()
    assert main(["validate", str(new)]) == 0
    assert "1 flight; no labels: inputs only, for cbh predict" in capsys.readouterr().out
    assert main(["info", str(new)]) == 0
    out = capsys.readouterr().out
    assert "NEW" in out and "no labels" in out
    assert main(["info", str(new), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labels"] is False and info["flights"][0]["samples"] == 7


def test_predict_writes_predictions_for_an_inputs_only_flight(trained, tmp_path: Path) -> None:
    run, new = trained
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), "--model", "physical_only", "--campaign", str(new), "-o", str(out)]) == 0
    pred = pd.read_csv(out)
    assert len(pred) == 7 and set(pred["flight"]) == {"NEW"} and np.isfinite(pred["pred_km"]).all()


def test_training_and_the_pipeline_refuse_it_with_one_line(
    trained, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, new = trained
    capsys.readouterr()
    code = main(
        ["train", "--campaign", str(new), "--run-dir", str(tmp_path / "r"), "--set", "train.mode=physical_only"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "samples/cbh_km: expected lidar labels" in err and "inputs-only campaign" in err
    monkeypatch.chdir(ROOT)
    assert main(["run", "--campaign", str(new), "--run-name", "never-made", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "inputs-only campaign; predict it with `cbh predict" in err, err
    assert not (ROOT / "runs" / "never-made").exists()


def test_generate_writes_a_new_flight_without_lidar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's stand-in for a flight of one's own: the synthetic campaign without samples/cbh_km."""
    out = tmp_path / "my_flight.h5"
    args = ["generate", "--preset", "tiny", "--seed", "11", "--set", "unlabelled_factor=0", "-o", str(out)]
    assert main([*args, "--set", "labels=false"]) == 0
    camp = Campaign(out)
    assert not camp.has_labels and camp.n_samples > 0 and camp.n_unlabelled == 0
    assert main([*args[:-1], str(tmp_path / "labelled.h5")]) == 0
    labelled = Campaign(tmp_path / "labelled.h5")  # the same draw with labels: only the labels differ
    np.testing.assert_array_equal(camp.images([0, 5]), labelled.images([0, 5]))
    assert labelled.has_labels and labelled.n_samples == camp.n_samples
    assert main(["validate", str(out)]) == 0
    assert "no labels: inputs only, for cbh predict" in capsys.readouterr().out
    assert main([*args[:-1], str(tmp_path / "typo.h5"), "--set", "label=false"]) == 2
    assert "found an unknown key (did you mean 'labels'?)" in capsys.readouterr().err
