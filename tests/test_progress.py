"""Progress with time left for every step over a few seconds (issue 22 item 5)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from cbhlib.config import load_config
from cbhlib.pipeline.monitor import Watcher, eta, running_steps, status_text
from cbhlib.pipeline.spec import check_overrides
from cbhlib.store.rundir import RunDir
from tests.conftest import ROOT


def _log(run: Path, *records: dict) -> None:
    path = RunDir(run).pipeline_log
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")


def _started(seconds_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - seconds_ago))


def test_a_running_step_shows_elapsed_and_time_left_from_its_last_run(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "mine"
    _log(run, {"name": "compare", "status": "ok", "seconds": 600.0, "time": _started(900)})
    _log(run, {"name": "compare", "status": "running", "seconds": 0.0, "time": _started(60)})
    (line,) = running_steps(RunDir(run))
    assert re.fullmatch(r"compare running (59|60|61|62) s; about 9 min left \(10 min last time\)", line), line
    said: list[str] = []
    Watcher(run, said.append, every=0).poll()
    assert any("compare running" in s and "left" in s for s in said), said
    assert "compare running" in status_text(run)


def test_a_first_run_estimates_from_another_run_or_says_it_cannot(tmp_path: Path) -> None:
    _log(tmp_path / "runs" / "other", {"name": "compare", "status": "ok", "seconds": 120.0, "time": _started(999)})
    fresh = tmp_path / "runs" / "fresh"
    _log(fresh, {"name": "compare", "status": "running", "seconds": 0.0, "time": _started(30)})
    (line,) = running_steps(RunDir(fresh))
    assert "about 90 s left (2 min in run other)" in line or "about 89 s left" in line, line
    _log(fresh, {"name": "explore", "status": "running", "seconds": 0.0, "time": _started(5)})
    assert any("explore running" in s and "no earlier run" in s for s in running_steps(RunDir(fresh)))


def test_sweep_points_and_units_say_how_long_is_left() -> None:
    assert eta(1, 3, 10.0) == "about 20 s left" and eta(3, 3, 30.0) == "" and eta(0, 3, 1.0) == "no estimate yet"
    from cbhlib.pipeline.sweep import _left

    assert re.fullmatch(r"; \d+ s so far, about \d+ s left", _left(1, 2, time.perf_counter() - 5))


def test_the_readme_quick_example_shrinks_every_step() -> None:
    text = (ROOT / "README.md").read_text()
    line = next(s for s in text.splitlines() if "--run-name quick" in s)
    sets = dict(item.split("=", 1) for item in re.findall(r"--set (\S+)", line))
    keys = check_overrides(dict(sets))
    assert {"pretrain", "train", "compare"} <= {k.split(".")[0] for k in keys} and "seeds" in keys
    from cbhlib.config import parse_sets

    cfg = load_config(overrides=parse_sets([f"{k}={v}" for k, v in sets.items()]))
    default = load_config()
    assert cfg.pretrain.epochs < default.pretrain.epochs and cfg.train.epochs < default.train.epochs
    assert cfg.compare.bootstrap_reps < default.compare.bootstrap_reps and len(cfg.seeds) < len(default.seeds)


def test_the_monitor_names_what_a_unit_is_tested_on() -> None:
    """A LOFO unit by its held-out flight, a nested one as such, another protocol's by its test fold;
    internal fold numbers (40003) only where the log names no test set."""
    import pandas as pd

    from cbhlib.pipeline.monitor import _held_out

    rec = {"fold": 40003, "test_flight": "30Oct24", "protocol": "lofo"}
    assert _held_out(pd.Series(rec)) == "30Oct24 held out"
    assert _held_out(pd.Series({**rec, "protocol": "lofo_nested"})) == "30Oct24 held out, nested"
    assert _held_out(pd.Series({**rec, "protocol": "random", "test_flight": "random-3"})) == "test fold random-3"
    assert _held_out(pd.Series({"fold": 2, "protocol": "lofo"})) == "fold 2"


def test_monitor_loop_stops_when_no_pipeline_holds_the_run(tmp_path, monkeypatch, capsys) -> None:
    """``cbh monitor --loop`` refreshes while a live pipeline holds the run's lock and stops,
    saying so, once none does (it printed blocks forever on a finished run)."""
    import json
    import socket

    from cbhlib.cli import main
    from cbhlib.cli import run as cli_run
    from cbhlib.store.lock import RunLock
    from cbhlib.store.rundir import RunDir

    run = RunDir(tmp_path / "r")
    run.root.mkdir()
    lock = RunLock(run.lock)
    lock.acquire()  # held by this (live) process: the loop keeps watching
    sleeps: list[float] = []

    def fake_sleep(s: float) -> None:
        sleeps.append(s)
        assert len(sleeps) < 5, "the loop did not stop after the run ended"
        if len(sleeps) == 2:
            lock.release()

    monkeypatch.setattr(cli_run.time, "sleep", fake_sleep)
    assert main(["monitor", str(run.root), "--loop", "--interval", "0.1"]) == 0
    out = capsys.readouterr().out
    assert len(sleeps) == 2 and out.count("notebooks:") == 3 and "stopped watching" in out
    # a lock left by a process that is gone is not a running pipeline
    run.lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 999999999, "started": 0}))
    sleeps.clear()
    monkeypatch.setattr(cli_run, "IDLE_LOOKS", 3)  # never held while watched: a few looks (a run may be starting)
    assert main(["monitor", str(run.root), "--loop"]) == 0 and len(sleeps) == 2
