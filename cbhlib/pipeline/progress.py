"""Terminal progress during ``cbh run``: a thread that reads the run's logs and prints a line
whenever pretraining or a model's units advance (the notebooks themselves run headless)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from cbhlib.pipeline.monitor import duration, pretrain_status, running_steps, training_status
from cbhlib.store.rundir import RunDir


class Watcher:
    """``with Watcher(run_root, say):`` prints progress lines every ``interval`` s (``say=None``: silent)."""

    def __init__(
        self, run_root: str | Path, say: Callable[[str], None] | None, interval: float = 3.0, every: float = 30.0
    ) -> None:
        self.run, self.say, self.interval, self.every = RunDir(run_root), say, interval, every
        self._stop = threading.Event()
        self._seen: dict[str, str] = {}
        self._said_steps = 0.0  # when the running steps' time-left line was last printed
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Print what changed since the last poll."""
        if self.say is None:
            return
        pre = pretrain_status(self.run)
        if pre and self._seen.get("pretrain") != pre:
            self._seen["pretrain"] = pre
            self.say(f"  ... {pre}")
        now = time.monotonic()
        if now - self._said_steps >= self.every:  # every step over a few seconds: elapsed and time left
            lines = running_steps(self.run)
            for line in lines:
                self.say(f"  ... {line}")
            self._said_steps = now if lines else self._said_steps
        table = training_status(self.run)
        for r in table.itertuples():
            key = f"{r.model}/{r.protocol}"
            left = f"; at most {duration(r.remaining_s_max)} left" if r.units_done < r.units else ""
            line = (
                f"  ... {key}: {r.units_done}/{r.units} units done, {r.running} running, {r.pending} pending; "
                f"{r.latest}{left}"
            )
            if self._seen.get(key) != line:
                self._seen[key] = line
                self.say(line)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # a half-written log line: try again next time
                continue

    def __enter__(self) -> Watcher:
        if self.say is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
