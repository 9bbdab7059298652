"""vad: a PyTorch Lightning + Hydra suite for video anomaly detection (frame-prediction family)."""

__version__ = "0.1.0"

import os
from pathlib import Path


def config_dir() -> Path:
    """The Hydra config folder (``vad/conf/``, shipped inside the package; ``VAD_CONFIG_DIR`` overrides)."""
    env = os.environ.get("VAD_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent / "conf"
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: the vad config folder was not found; reinstall vad (`make install`, or pip install of "
            "its wheel), or set VAD_CONFIG_DIR to a config folder"
        )
    return path
