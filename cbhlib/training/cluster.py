"""The run's Dask cluster as seen from inside a step: training hands its encoders to it.

``cbh run --workers/--scheduler/--cluster`` (:mod:`cbhlib.pipeline.distributed`) sets
``CBH_DASK_SCHEDULER`` for every step's kernel; a serial run leaves it unset and
:func:`current_client` returns None.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)
SCHEDULER_ENV = "CBH_DASK_SCHEDULER"


def worker_resources(client: Any) -> set[str]:
    """Resource names the cluster's workers declare."""
    info = client.scheduler_info()
    return {r for w in info.get("workers", {}).values() for r in w.get("resources", {})}


def current_client() -> Any:
    """A client of the run's cluster inside a step's kernel, or None (serial runs)."""
    address = os.environ.get(SCHEDULER_ENV)
    if not address:
        return None
    try:
        from distributed import Client

        return Client(address, timeout="10s", set_as_default=False)
    except (ImportError, OSError) as exc:
        log.warning("cannot reach the Dask scheduler %s (%s); running here", address, exc)
        return None
