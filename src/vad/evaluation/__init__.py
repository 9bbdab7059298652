"""The one place a frame's score is computed, offline and live; pure numpy / scikit-learn / torch, no models.

    records      per-frame signals grouped by video (VideoSignals, group_records, videos_from_records)
    smoothing    the centred (protocol) and causal (stream) Gaussians, the check of their width, a stream's width
    fusion       per-video normalisation (min-max, division by the max) and signed fusion of signals into a score
    protocol     the frame-level protocol: drop, normalise, fuse, micro / macro AUC, EER, AP (evaluate, ProtocolResult)
    calibration  scores against normal frames' statistics, alert thresholds for a false-alarm rate (DEFAULT_FPR),
                 a test scored as a stream (calibrated_metrics), events
    patch        AMC's max-patch score of per-pixel error maps (torch)
    pixel/       pixel masks, pixel AUC and the UCSD criterion, RBDC / TBDC, the pixel evaluation of a test

May import vad.data (labels, masks, natural order), vad.errors and libraries; never vad.methods or anything above.
"""
