"""Pseudo-anomalies: training plug-ins (:mod:`vad.data.pseudo.plugins`) and the labelled validation set built from
held-out normal videos (:mod:`vad.data.pseudo.validation`); the operations themselves are in
:mod:`vad.data.pseudo.kinds`. May import the rest of :mod:`vad.data` and the core; the rules that choose by the
validation set's AUCs are :mod:`vad.selection`.
"""
