"""vad.methods: the detectors, one LightningModule per method, on one shared base.

base.py (declarations, the LightningModule core) composes optimisation.py (G/D steps, schedulers), pseudo_objective.py
(pseudo-anomaly objective, the shared end of a training step) and loops.py (training means, calibration,
validation, test); panels.py holds the sample-panel data; frame_predictor.py, recurrent_gan.py and amc_signals.py what
several methods share; then one file per method, independent of the others. losses.py: the loss functions.
May import vad.evaluation, vad.flow, vad.data, vad.nets and the core; never vad.inference, vad.reporting or vad.app.
"""
