"""What writes campaign files: the synthetic twin and the ER-2 import.

Owns: the calibrated synthetic campaign (``synth``, ``synth_era5``, ``synth_images``) and
the importer of the real ER-2 camera, lidar and navigation files (``er2``, ``er2_read``,
``er2_config``). Both write through :func:`cbhlib.data.campaign.write_campaign`.

May import: ``data`` and the layers below it.
"""
