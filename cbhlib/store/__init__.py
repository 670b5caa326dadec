"""The run folder and everything kept in it between processes.

Owns: every path of a run folder (``rundir``), the run lock (``lock``), unit
results with content hashes (``units``), content-keyed caches (``cache``) and safe
checkpoints (``checkpoints``, ``torch.load(weights_only=True)`` only).

May import: ``data`` and the layers below it.
"""
