"""The Hydra configs of the entry points (one folder per config group); Hydra reads them as ``pkg://vad.conf``.

This file makes the folder a package, which Hydra's ``pkg://`` search path requires; it holds no code. A user's own
config folder adds to these with ``--config-dir <folder>`` or ``hydra.searchpath=[file://<folder>]``.
"""
