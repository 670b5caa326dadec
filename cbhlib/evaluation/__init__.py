"""Scoring what the models predict, honestly.

Owns: the baselines on the models' folds (``baselines``), metrics and reports
(``metrics``, ``reports``, ``results``), paired intervals (``stats``), the comparison and
its findings (``compare``), few-shot adaptation and intervals (``adapt``, ``conformal``),
shift diagnostics (``shift``), image statistics (``imagestats``), exploration tables
(``explore``) and the published numbers (``published``).

May import: ``sources``, ``store``, ``data``, ``models`` and the layers below them; never
``training`` (training imports evaluation: the baselines' and heads' one unit writer is
:func:`cbhlib.evaluation.reports.write_unit`).
"""
