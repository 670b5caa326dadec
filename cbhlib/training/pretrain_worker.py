"""One pretraining process of a serial run: ``python -m cbhlib.training.pretrain_worker JOBS.json``.

:func:`cbhlib.training.encoders.ensure` starts one per core and gives each a share of the
encoders to pretrain (a JSON file: the run's settings, the campaign file, and per encoder
its scope, seed and checkpoint path). A fresh interpreter, not a fork or a
``multiprocessing`` spawn: nothing of the parent's torch state is copied, and a user's
script without an ``if __name__ == "__main__"`` guard is never re-run. Each finished
encoder is announced on stdout as ``done <name>``; an error exits with status 2 and its
one-line message on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cbhlib.config import load_config
from cbhlib.data.frames import Scope
from cbhlib.errors import CbhError
from cbhlib.training.encoders import DONE, _make_encoder


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        spec = json.loads(Path(args[0]).read_text())
        cfg = load_config(("pretraining jobs", spec["config"]), check=False)
        for job in spec["jobs"]:
            sc = Scope(**job["scope"])
            _make_encoder(spec["campaign"], cfg, sc, int(job["seed"]), job["path"], spec["log"], spec["key"])
            sys.stdout.write(f"{DONE}{sc.key}_seed{job['seed']}\n")  # the parent's progress protocol
            sys.stdout.flush()
    except CbhError as exc:
        sys.stderr.write(f"cbh: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
