"""The campaign file and what is read from it.

Owns: the HDF5 contract and its validation (``contract``, ``h5safe``), the lazy reader and
writer (``campaign``), fold splits and per-fold scaling (``folds``), pretraining frames
(``frames``), and the DataFrame and xarray views (``tabular``, ``xarray_view``).

May import: ``errors``, ``constants``, ``fields``, ``atomic``, ``config``, ``models``.
"""
