"""How OpenMP threads wait, set where every process starts (before torch or scikit-learn load it).

torch and scikit-learn run their CPU kernels on GNU OpenMP (libgomp). By default a thread
that waits for the others *spins* for up to 300,000 iterations before it sleeps. On a quiet
machine that saves a wake-up; on a machine where another process holds a core (a shared
login node, a laptop doing other work, two of our own workers) the spinning thread burns
its whole time slice while the thread it waits for cannot run, and a step that takes
milliseconds stalls: one encoder took 15x longer with two CPU-bound neighbours.

:func:`configure` shortens the spin (``GOMP_SPINCOUNT``, chosen by measurement in
``benchmarks/run.py``'s contention rows) unless the user set ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT`` themselves. libgomp reads them once, when it is loaded, so this runs on
``import cbhlib`` (the CLI, notebook kernels, Dask workers and a user's own notebook all
import cbhlib first); a process that imported torch before cbhlib keeps libgomp's defaults.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

log = logging.getLogger(__name__)

SPIN_ENV = "GOMP_SPINCOUNT"
WAIT_ENV = "OMP_WAIT_POLICY"
SPIN = "10000"  # iterations a waiting thread spins before it sleeps (libgomp's default: 300000)


LOADED_BEFORE: list[str] = []  # OpenMP users already imported when configure() first ran


def configure(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the wait policy in ``environ`` (default ``os.environ``) unless the user chose one.

    Returns:
        what was set (empty when the user's own setting was kept).
    """
    env = os.environ if environ is None else environ
    if environ is None and not LOADED_BEFORE:
        LOADED_BEFORE.extend(m for m in ("torch", "sklearn") if m in sys.modules)
    if WAIT_ENV in env or SPIN_ENV in env:
        return {}
    env[SPIN_ENV] = SPIN
    return {SPIN_ENV: SPIN}


def describe(environ: MutableMapping[str, str] | None = None) -> str:
    """The policy in force, in one line (for environment reports and logs)."""
    env = os.environ if environ is None else environ
    spin = env.get(SPIN_ENV, "(libgomp default)")
    policy = f"{WAIT_ENV}={env[WAIT_ENV]}" if WAIT_ENV in env else f"{SPIN_ENV}={spin}"
    late = f" ({', '.join(LOADED_BEFORE)} imported before cbhlib: libgomp kept its defaults)" if LOADED_BEFORE else ""
    return policy + late


# --------------------------------------------------------------------------- fewer threads while others run

OTHERS_FOR_ONE_LESS = 0.5  # cores held by other processes that cost one of our threads
FIRST_LOOK = 0.5  # seconds before the first decision: /proc/stat counts 1/100 s, so a shorter window
# while this process works could misjudge its neighbours by a fifth of a core


def _snapshot() -> tuple[float, float, float] | None:
    """(monotonic seconds, CPU-seconds busy on the whole machine, CPU-seconds of this process)."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):  # not Linux: no adaptation
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = (sum(f[:8]) - f[3] - f[4]) / hz  # all but idle and iowait
    t = os.times()
    return time.monotonic(), busy, t.user + t.system


class Governor:
    """Torch's thread count follows the cores other processes leave free.

    Every ``interval`` seconds (a :meth:`tick` from a training loop) it compares the
    machine's busy CPU time with this process's own: the difference is what other
    processes used. While they hold a core, waiting threads would stall each other, so the
    process runs with fewer threads; when they leave, it returns to its full count. A
    thread count set by the user (``--set threads=N``, ``OMP_NUM_THREADS``) is kept fixed,
    and so are reproducible runs (float sums depend on the thread count).
    """

    def __init__(self, full: int, interval: float = 2.0, fixed: bool = False) -> None:
        self.full, self.interval, self.fixed = max(1, full), interval, fixed
        self.current = self.full
        self.changes: list[tuple[float, int]] = []
        self.last = _snapshot()
        # the first look comes soon (the first epoch of a busy machine should not wait `interval`),
        # without blocking: this process's own CPU time is subtracted, so working meanwhile is fine
        self.next_look = self.last[0] + FIRST_LOOK if self.last is not None else math.inf

    def _decide(self, snap: tuple[float, float, float] | None) -> None:
        if snap is None or self.last is None:
            return
        dt = snap[0] - self.last[0]
        if dt <= 0:
            return
        others = max(0.0, (snap[1] - self.last[1]) - (snap[2] - self.last[2])) / dt
        self.last, self.next_look = snap, snap[0] + self.interval
        free = (os.cpu_count() or 1) - others
        want = max(1, min(self.full, int(free + (1 - OTHERS_FOR_ONE_LESS))))
        if want != self.current:
            import torch

            torch.set_num_threads(want)
            log.info("torch threads %d -> %d (other processes hold %.1f cores)", self.current, want, others)
            self.current = want
            self.changes.append((snap[0], want))

    def tick(self) -> int:
        """Re-decide at most every ``interval`` seconds (the first time ``FIRST_LOOK`` after the
        start); the thread count in force."""
        if self.fixed or self.full <= 1 or self.last is None:
            return self.current
        if time.monotonic() >= self.next_look:
            self._decide(_snapshot())
        return self.current


_GOVERNOR: list[Governor] = []


def governor() -> Governor:
    """This process's governor (created on first use with torch's thread count then)."""
    if not _GOVERNOR:
        import torch

        fixed = os.environ.get("CBH_THREADS_FIXED") == "1" or "OMP_NUM_THREADS" in os.environ
        _GOVERNOR.append(Governor(torch.get_num_threads(), fixed=fixed))
    return _GOVERNOR[0]


def tick() -> int:
    """Shorthand for ``governor().tick()``, called by the training loops."""
    return governor().tick()


def fix(threads: int) -> None:
    """Pin the thread count (the user's ``threads`` setting): no adaptation in this process."""
    import torch

    torch.set_num_threads(threads)
    os.environ["CBH_THREADS_FIXED"] = "1"
    if _GOVERNOR:
        _GOVERNOR[0].fixed, _GOVERNOR[0].current = True, threads


def openmp_limits() -> object:
    """A context holding every OpenMP runtime (scikit-learn's too) to the governor's thread count."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=tick(), user_api="openmp")


# --------------------------------------------------------------------------- encoders: one thread each

ENCODER_THREADS = 1
"""Torch threads of every encoder's pretraining, on any machine and under any load.

A weight gradient's float sum is split differently over 1 and 2 threads, and thousands of
steps amplify the last-digit difference into a different encoder (the encoder rows moved
15.5 m between ``threads: 1`` and ``2``): one thread per encoder makes an encoder depend
on its settings and seed alone, not on the core count, the ``threads`` setting, the load
(the governor) or which process trained it. The cores are used by training several
encoders at once in separate processes (:func:`cbhlib.training.encoders.ensure`), which
also runs no OpenMP barrier that a busy neighbour could stall."""


def usable_cores(threads: int = 0) -> int:
    """Cores this process may use: ``threads`` (the user's setting) if set, else
    ``OMP_NUM_THREADS`` if set, else the CPU affinity (a batch job's allocation)."""
    if threads > 0:
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


_PIN_LOCK = threading.Lock()
_PINS: list[tuple[int, bool, int]] = []  # (threads, governor fixed, governor current) before the first pin


@contextmanager
def pinned(n: int) -> Iterator[None]:
    """Torch runs on ``n`` threads inside (the governor holds still); restored when the last
    of several concurrent pins in this process (encoders on one Dask worker's threads) ends."""
    import torch

    gov = governor()
    with _PIN_LOCK:
        if not _PINS:
            _PINS.append((torch.get_num_threads(), gov.fixed, gov.current))
        else:
            _PINS.append(_PINS[0])
        torch.set_num_threads(n)
        gov.fixed, gov.current = True, n
    try:
        yield
    finally:
        with _PIN_LOCK:
            before, fixed, current = _PINS.pop()
            if not _PINS:
                torch.set_num_threads(before)
                gov.fixed, gov.current = fixed, current
