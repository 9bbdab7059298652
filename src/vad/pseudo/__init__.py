"""Pseudo-anomalies: training plug-ins (:mod:`vad.pseudo.plugins`) and the labelled validation set built from
held-out normal videos (:mod:`vad.pseudo.validation`); the operations themselves are in :mod:`vad.pseudo.kinds`."""
