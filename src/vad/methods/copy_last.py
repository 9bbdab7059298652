"""The untrained "copy-last" predictor: the prediction of frame t+1 is frame t.

Its score is the PSNR between consecutive frames, i.e. plain frame differencing. Any learned predictor must beat it
under the same protocol (same dropped frames, same normalisation), which is why its clip length follows the
method it is compared with.

    python -m vad.evaluate model=copy_last dataset=ped2 model.clip_len=5
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vad.errors import ConfigError
from vad.methods.base import VADModule


class CopyLast(VADModule):
    """Score = PSNR(frame t, frame t+1); no weights, nothing to train.

    Args:
        channels: image channels (1 or 3).
        clip_len: frames per item; only the last two are used, the first ``clip_len - 1`` frames of each video are
            dropped exactly as for a predictor with ``clip_len - 1`` inputs.
        score: fusion weights of the ``psnr`` signal.
        common: the other arguments every method takes, see :class:`~vad.methods.base.VADModule`.
    """

    signals = ("psnr",)
    trainable = False

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)
        self.save_hyperparameters()

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        raise ConfigError(
            "model=copy_last has no weights to train; evaluate it with `python -m vad.evaluate model=copy_last`"
        )

    def configure_optimizers(self) -> None:
        return None

    def predict(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.split_clip(batch["frames"]).last
