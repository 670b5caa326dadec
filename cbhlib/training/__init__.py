"""Fitting models: MAE pretraining, encoders, embeddings, heads, fine-tuning, prediction.

Owns: the pretraining loop (``pretrain``), the encoders a run needs (``encoders``) and
their cached embeddings (``embed``), batched head training (``heads``), end-to-end
fine-tuning (``finetune``), the shared loop pieces (``loops``), one model under every
protocol (``runner``), applying a finished run (``predict``) and the run's Dask cluster
as seen from a step (``cluster``).

May import: ``evaluation`` and every layer below it.
"""
