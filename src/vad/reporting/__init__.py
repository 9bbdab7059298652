"""What a run leaves for people: its files (``files``: scores.csv, metrics.json, the whole report), the printed tables
(``summary``), the figures (``plots``), what ran it (``machine``), the method's sample panels (``panels``) and the
experiment trackers (``tracking``).

May import ``vad.methods`` and below (evaluation, data, nets, core), never ``vad.app`` or ``vad.inference``.
"""
