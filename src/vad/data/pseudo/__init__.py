"""Pseudo-anomalies: training plug-ins (:mod:`vad.data.pseudo.plugins`) and the labelled validation set built from
held-out normal videos (:mod:`vad.data.pseudo.validation`); the operations themselves are in :mod:`vad.data.pseudo.kinds`."""
