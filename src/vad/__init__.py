"""vad: a PyTorch Lightning + Hydra suite for video anomaly detection (frame-prediction family)."""

__version__ = "0.1.0"

import os
from pathlib import Path


def config_dir() -> Path:
    """The Hydra config folder (``conf/`` of the checkout; ``VAD_CONFIG_DIR`` overrides)."""
    env = os.environ.get("VAD_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: the vad config folder was not found; install vad from its checkout (`make install`) "
            "or set VAD_CONFIG_DIR to the conf/ folder"
        )
    return path
