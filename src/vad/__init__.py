"""vad: a PyTorch Lightning + Hydra suite for video anomaly detection (frame-prediction family)."""

__version__ = "0.1.0"
