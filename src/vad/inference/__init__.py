"""Scoring any video or stream with a trained detector, and exporting it.

    spec       InputSpec: the clips and frames a detector takes, read once from a run config, stored in exports
    sources    the inputs (files, frame folders, cameras, streams) and the reader thread
    scorer     StreamScorer: rolling clips, batched signals, calibrated and causally smoothed scores, alerts, events
    overlay    the score plot and the overlay video
    exporters  TorchScript / ONNX export of a detector's signals with its metadata (vad.json)
    exported   ExportedDetector: an exported file used like a trained detector

May import vad.methods, vad.evaluation (every score is computed there), vad.data and the core; never vad.app.
"""
