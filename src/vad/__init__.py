"""vad: a PyTorch Lightning + Hydra suite for video anomaly detection (frame-prediction family)."""

__version__ = "0.1.0"

import os
from pathlib import Path

#: the package that holds the Hydra configs; Hydra reads it as ``pkg://vad.conf``, from a wheel as from the checkout
CONFIG_PACKAGE = "vad.conf"


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


def config_search_path() -> str:
    """Where the entry points' Hydra finds the configs: ``pkg://vad.conf``, or the folder ``VAD_CONFIG_DIR`` names
    (as an absolute path, Hydra's form for a folder on disk)."""
    return str(config_dir().resolve()) if os.environ.get("VAD_CONFIG_DIR") else f"pkg://{CONFIG_PACKAGE}"
