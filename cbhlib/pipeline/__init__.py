"""Running the notebooks: the pipeline file, executors, sweeps, rendering, summaries.

Owns: the pipeline file (``spec``), serial and Dask execution (``execute``,
``distributed``), sweeps (``sweep``), the notebooks' setup and parameter sync
(``notebook``, ``nbtools``), HTML rendering (``render``), ``summary.json`` and
``index.html`` (``summary``), the README writer (``readme``) and progress (``monitor``,
``progress``).

May import: ``plots``, ``training`` and every layer below; only ``cli`` imports it.
"""
