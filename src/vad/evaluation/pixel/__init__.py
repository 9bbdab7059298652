"""Pixel-level evaluation of per-pixel anomaly maps against ground-truth masks.

    masks       reading masks, resizing maps to them, the input checks of every pixel metric
    roc         pixel AUC (PixelROC, pixel_auc) and the UCSD 40 % frame criterion
    regions     RBDC / TBDC (region- and track-based detection criteria)
    settings    pixel_metrics / pixel_thresholds / pixel_bins of a run config
    evaluation  PixelEvaluation: a test's error maps spooled to disk and measured at its end

May import vad.evaluation's frame-level modules, vad.data, vad.errors and libraries; never vad.methods or above.
"""
