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

import os
import sys
from collections.abc import MutableMapping

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
