"""``python -m cbhlib.cli``: the ``cbh`` command."""

import sys

from cbhlib.cli import main

sys.exit(main())
