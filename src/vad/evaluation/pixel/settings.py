"""The pixel-level settings of a run config: ``pixel_metrics`` (on / off), ``pixel_thresholds`` (RBDC / TBDC) and
``pixel_bins`` (pixel AUC), checked once, for :class:`vad.evaluation.pixel.evaluation.PixelEvaluation`.

    settings = settings_from_config(cfg)      # PixelSettings(enabled=True, thresholds=100, bins=1048576)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vad.errors import ConfigError


@dataclass(frozen=True)
class PixelSettings:
    """``pixel_metrics`` (on / off), ``pixel_thresholds`` (RBDC / TBDC) and ``pixel_bins`` (pixel AUC; None exact)."""

    enabled: bool = True
    thresholds: int = 100
    bins: int | None = 1 << 20


def settings_from_config(cfg: Mapping[str, Any]) -> PixelSettings:
    """The pixel settings of a run config (``pixel_metrics``, ``pixel_thresholds``, ``pixel_bins``), checked."""
    enabled = cfg.get("pixel_metrics", True)
    thresholds = cfg.get("pixel_thresholds", PixelSettings.thresholds)
    bins = cfg.get("pixel_bins", PixelSettings.bins)
    if not isinstance(enabled, bool):
        raise ConfigError(f"pixel_metrics={enabled!r} must be true or false")
    if isinstance(thresholds, bool) or not isinstance(thresholds, int) or thresholds < 1:
        raise ConfigError(f"pixel_thresholds={thresholds!r} must be a positive integer (RBDC / TBDC thresholds)")
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int) or bins < 1):
        raise ConfigError(f"pixel_bins={bins!r} must be a positive integer, or null for the exact pixel AUC")
    return PixelSettings(enabled, thresholds, bins)
