"""Terminal progress during ``cbh run``: a thread that reads the run's logs and prints a line
whenever pretraining or a model's units advance (the notebooks themselves run headless)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from cbhlib.pipeline.monitor import pretrain_status, training_status
from cbhlib.store.rundir import RunDir


class Watcher:
    """``with Watcher(run_root, say):`` prints progress lines every ``interval`` s (``say=None``: silent)."""

    def __init__(self, run_root: str | Path, say: Callable[[str], None] | None, interval: float = 3.0) -> None:
        self.run, self.say, self.interval = RunDir(run_root), say, interval
        self._stop = threading.Event()
        self._seen: dict[str, str] = {}
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Print what changed since the last poll."""
        if self.say is None:
            return
        pre = pretrain_status(self.run)
        if pre and self._seen.get("pretrain") != pre:
            self._seen["pretrain"] = pre
            self.say(f"  ... {pre}")
        table = training_status(self.run)
        for r in table.itertuples():
            key = f"{r.model}/{r.protocol}"
            line = (
                f"  ... {key}: {r.units_done}/{r.units} units done, {r.running} running, {r.pending} pending; "
                f"{r.latest}"
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
