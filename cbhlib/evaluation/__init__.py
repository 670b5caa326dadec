"""Scoring what the models predict, honestly.

Owns: the baselines on the models' folds (``baselines``), label-free flight adaptation
(``flightnorm``), metrics and reports (``metrics``, ``reports``, ``results`` with the
published numbers), paired evidence (``stats``) and verdicts under both headline metrics
(``verdicts``), the comparison and its findings (``compare``), few-shot adaptation
(``adapt``), prediction intervals (``intervals``; those that adapt along a flight as its labels
arrive in ``intervals.online``), image statistics (``imagestats``), and
exploration tables with shift diagnostics (``explore``).

May import: ``sources``, ``store``, ``data``, ``models`` and the layers below them; never
``training`` (training imports evaluation: the baselines' and heads' one unit writer is
:func:`cbhlib.evaluation.reports.write_unit`).
"""
