"""The thread policy: OpenMP waits briefly, and torch's thread count follows the free cores."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from cbhlib import threads


def test_import_sets_a_short_spin_but_keeps_the_users_choice() -> None:
    code = "import os, cbhlib; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [threads.SPIN, "None"]
    mine = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert mine.split() == ["None", "ACTIVE"]  # the user's explicit setting wins
    assert threads.configure({"GOMP_SPINCOUNT": "5"}) == {}


def test_the_governor_gives_up_a_thread_while_others_hold_cores_and_takes_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = {"t": 0.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(threads, "_snapshot", lambda: (clock["t"], clock["busy"], clock["own"]))
    monkeypatch.setattr(threads.time, "sleep", lambda s: clock.update(t=clock["t"] + s))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    try:
        g = threads.Governor(2, interval=2.0)
        assert g.current == 2  # quiet machine at start
        clock.update(t=clock["t"] + 2.0, busy=clock["busy"] + 4.0, own=clock["own"] + 2.0)  # others: 1 core
        assert g.tick() == 1 and torch.get_num_threads() == 1
        clock.update(t=clock["t"] + 1.0, busy=clock["busy"] + 2.0, own=clock["own"] + 1.0)
        assert g.tick() == 1  # not yet time to look again
        clock.update(t=clock["t"] + 2.0, busy=clock["busy"] + 0.2, own=clock["own"] + 0.1)  # others gone
        assert g.tick() == 2 and [n for _, n in g.changes] == [1, 2]
        fixed = threads.Governor(2, fixed=True)
        clock.update(t=clock["t"] + 5.0, busy=clock["busy"] + 10.0, own=clock["own"] + 0.0)
        assert fixed.tick() == 2  # the user's thread count is never changed
    finally:
        torch.set_num_threads(before)


def test_the_governor_starts_without_waiting_and_looks_first_after_a_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No sleep when a training loop starts it (it cost every process 0.15 s); the first decision
    comes FIRST_LOOK seconds in, the next ones every ``interval``."""
    clock = {"t": 0.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(threads, "_snapshot", lambda: (clock["t"], clock["busy"], clock["own"]))
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(threads.time, "sleep", lambda s: pytest.fail("the governor slept"))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    try:
        g = threads.Governor(2, interval=2.0)
        first = threads.FIRST_LOOK
        clock.update(t=first / 2, busy=first, own=first / 2)  # others: 1 core, but too early to look
        assert g.tick() == 2
        clock.update(t=first, busy=2 * first, own=first)
        assert g.tick() == 1 and g.next_look == pytest.approx(first + 2.0)
        clock.update(t=first + 1.0, busy=2 * first + 1.0, own=first + 1.0)  # others gone, not yet time to look
        assert g.tick() == 1
    finally:
        torch.set_num_threads(before)
