"""The input spec of a trained detector: how its clips are cut and its frames converted, read once from a run config.

A detector scores clips of ``clip_len`` frames ``frame_stride`` apart, each frame converted to ``channels`` (1 grey,
3 RGB) and resized to ``size`` (H, W) with ``interpolation``, as the frame cache does (``vad.data.frames``). The spec
comes from the run config a checkpoint carries (``model.clip_len``, ``dataset.*``); an export stores it as the
``input`` block of its ``vad.json`` and reads it back from there (:meth:`InputSpec.to_metadata`,
:meth:`InputSpec.from_metadata`: the keys of every export written so far).

    spec = InputSpec.of_run(run_cfg)                   # InputSpec(clip_len=5, frame_stride=1, size=(256, 256), ...)
    scorer = StreamScorer(model, spec, batch_size=eval_batch_size(run_cfg))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: the keys of an export's ``input`` block that loading reads
METADATA_KEYS = ("clip_len", "frame_stride", "image_size", "channels", "interpolation")


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """The clips and frames a detector takes: ``clip_len`` frames ``frame_stride`` apart, each with ``channels``
    channels at ``size`` = (H, W), resized with ``interpolation`` (``vad.data.frames.resize``'s names)."""

    clip_len: int
    frame_stride: int = 1
    size: tuple[int, int]
    channels: int
    interpolation: str = "linear"

    @property
    def span(self) -> int:
        """Input frames one clip covers, first to last."""
        return (self.clip_len - 1) * self.frame_stride + 1

    @classmethod
    def of_run(cls, run_cfg: Any) -> InputSpec:
        """The spec of a training run's config (a DictConfig or a dict of it): ``model.clip_len`` and the dataset's
        ``frame_stride``, ``image_size``, ``channels`` and ``interpolation``."""
        data = run_cfg["dataset"]
        return cls(
            clip_len=int(run_cfg["model"]["clip_len"]),
            frame_stride=int(data.get("frame_stride", 1)),
            size=(int(data["image_size"][0]), int(data["image_size"][1])),
            channels=int(data["channels"]),
            interpolation=str(data.get("interpolation", "linear")),
        )

    def to_metadata(self) -> dict[str, Any]:
        """The ``input`` block of an export's ``vad.json``: the spec, the layout and the values the model takes."""
        return {
            "layout": "B, T, C, H, W",
            "clip_len": self.clip_len,
            "frame_stride": self.frame_stride,
            "image_size": list(self.size),
            "channels": self.channels,
            "colour": "grey" if self.channels == 1 else "RGB",
            "interpolation": self.interpolation,
            "values": "uint8 / 127.5 - 1, in [-1, 1]",
        }

    @classmethod
    def from_metadata(cls, block: Mapping[str, Any]) -> InputSpec:
        """The spec of an export's ``input`` block (it holds :data:`METADATA_KEYS`)."""
        return cls(
            clip_len=int(block["clip_len"]),
            frame_stride=int(block["frame_stride"]),
            size=(int(block["image_size"][0]), int(block["image_size"][1])),
            channels=int(block["channels"]),
            interpolation=str(block["interpolation"]),
        )


def eval_batch_size(run_cfg: Any, batch_size: int | None = None) -> int:
    """Clips per forward pass: ``batch_size`` when given, else the run's ``dataset.eval_batch_size`` (the batches of
    ``vad.evaluate``, which ``vad.score`` of a file reproduces), else its ``dataset.batch_size``."""
    data = run_cfg["dataset"]
    return int(batch_size or data.get("eval_batch_size") or data["batch_size"])
