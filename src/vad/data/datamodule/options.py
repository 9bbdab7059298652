"""Checks of the dataset config's values (``dataset.*``): a wrong value fails when the datamodule is built, in one
line naming the key and what it must be, not as a TypeError deep inside a loader.

    check_positive("batch_size", 0)        # ConfigError: dataset.batch_size must be an integer >= 1, got 0
    check_image_size([256, 256])           # (256, 256)
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vad.errors import ConfigError


def plain(value: Any) -> Any:
    """Hydra hands over DictConfig / ListConfig; validation works on plain containers."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive(key: str, value: Any, minimum: int = 1) -> int:
    """``dataset.<key>`` as an int >= ``minimum``; anything else (a bool, a float) raises ConfigError."""
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"dataset.{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(key: str, value: Any, choices: tuple) -> Any:
    """``dataset.<key>`` as the one of ``choices`` it equals (``True`` is not 1)."""
    if value not in choices or isinstance(value, bool):
        shown = " or ".join(str(c) for c in choices)
        raise ConfigError(f"dataset.{key} must be {shown}, got {value!r}")
    return choices[choices.index(value)]


def check_image_size(value: Any) -> tuple[int, int]:
    """``dataset.image_size`` as (height, width)."""
    value = plain(value)
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_int(v) and v >= 1 for v in value):
        raise ConfigError(f"dataset.image_size must be two positive integers [height, width], got {value!r}")
    return int(value[0]), int(value[1])


def check_val_videos(value: Any) -> int | float:
    """``dataset.val_videos``: a count of held-out training videos, or a fraction of them."""
    if _is_int(value) and value >= 0:
        return int(value)
    if isinstance(value, float) and 0.0 <= value < 1.0:
        return value
    raise ConfigError(
        f"dataset.val_videos must be a count >= 0 or a fraction in [0, 1) of the training videos, got {value!r}"
    )


def check_generator(value: Any) -> dict[str, Any] | None:
    """``dataset.generator``: the keyword arguments of the synthetic scene generator, or None."""
    value = plain(value)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"dataset.generator must be a mapping of vad.data.synthetic.generate arguments, got {value!r}"
        )
    return dict(value)
