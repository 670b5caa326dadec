"""One pipeline at a time per run folder: a lock file holding the owner's host and pid.

A second ``cbh run`` on the same run folder is refused with a clear message while the
first is alive; a lock left by a killed run (its process is gone) is detected, reported
and taken over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from cbhlib.errors import CbhError

log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(owner: dict) -> bool:
    """A lock owner that is a process of this host no longer running (its run was killed)."""
    pid = owner.get("pid")
    return owner.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


def in_use(path: str | os.PathLike) -> bool:
    """Whether a live pipeline holds the lock file ``path`` (one on another host counts as live)."""
    try:
        owner = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True  # being written right now
    return not (isinstance(owner, dict) and _stale(owner))


class RunLock:
    """``with RunLock(path):`` holds the lock file for the block."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.held = False

    def _write(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}, fh)
        return True

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._write():
                self.held = True
                return
            try:
                owner = json.loads(self.path.read_text())
            except (OSError, ValueError):
                owner = {}
            owner = owner if isinstance(owner, dict) else {}
            host, pid = owner.get("host"), owner.get("pid")
            if owner and _stale(owner):
                log.warning("removing the stale lock %s of a run that was killed (pid %s)", self.path, pid)
                self.path.unlink(missing_ok=True)
                continue
            if not owner:  # being written right now, or garbage: give it a moment
                time.sleep(0.2)
                if not self.path.exists():
                    continue
            started = time.strftime("%H:%M:%S", time.localtime(owner.get("started", 0))) if owner else "?"
            raise CbhError(
                f"{self.path.parent}: expected a run folder no other pipeline is using; found one in use "
                f"by pid {pid} on {host} (started {started}); wait for it or use another --run-name"
            )
        raise CbhError(f"{self.path}: could not take the run folder's lock")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
