"""Sample panels, the data: what a method shows of a batch (frames, flows, error maps, reconstructions).

A method's ``sample_panels(batch)`` returns named panels; ``vad.reporting.panels.render`` draws whatever it returns,
one row per sample, each row titled with its video and frame index:

    panels = {"last input": image(clip.last), "prediction": image(pred), "flow": flow(uv), "error": heatmap(err)}
    grid = vad.reporting.panels.render(panels, videos=batch["video"], frames=batch["index"], count=4)

Kinds: ``image`` (N, 1 or 3, H, W) in [-1, 1]; ``flow`` (N, 2, H, W) in pixels, drawn in the optical-flow colour
wheel; ``heatmap`` (N, H, W) or (N, 1, H, W), values >= 0, drawn with a colour map scaled to its own maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

KINDS = ("image", "flow", "heatmap")


@dataclass(frozen=True, eq=False)  # tensors do not compare to one bool
class Panel:
    """One named column of a sample grid: ``kind`` (see module docstring) and a batch of ``data``."""

    kind: str
    data: torch.Tensor | np.ndarray

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"panel kind must be one of {KINDS}, got {self.kind!r}")
        shape = tuple(self.data.shape)
        ok = {
            "image": len(shape) == 4 and shape[1] in (1, 3),
            "flow": len(shape) == 4 and shape[1] == 2,
            "heatmap": len(shape) == 3 or (len(shape) == 4 and shape[1] == 1),
        }[self.kind]
        if not ok:
            want = {"image": "(N, 1 or 3, H, W)", "flow": "(N, 2, H, W)", "heatmap": "(N, H, W) or (N, 1, H, W)"}
            raise ValueError(f"a {self.kind} panel must be {want[self.kind]}, got {shape}")

    def numpy(self) -> Panel:
        """The same panel with its data as a float32 numpy array on the CPU (detached)."""
        data = self.data
        if isinstance(data, torch.Tensor):
            data = data.detach().float().cpu().numpy()
        return Panel(self.kind, np.asarray(data, dtype=np.float32))

    def __len__(self) -> int:
        return int(self.data.shape[0])


class Samples(NamedTuple):
    """The panels of a batch with each sample's video name and target frame index, the arguments of
    ``vad.reporting.panels.render`` in its order: ``render(*samples)``."""

    panels: dict[str, Panel]
    videos: list[str]
    frames: list[int]


def image(x: torch.Tensor | np.ndarray) -> Panel:
    """Frames (N, 1 or 3, H, W) in [-1, 1]."""
    return Panel("image", x)


def flow(uv: torch.Tensor | np.ndarray) -> Panel:
    """Optical flows (N, 2, H, W) in pixels (x then y displacement), drawn in the flow colour wheel."""
    return Panel("flow", uv)


def heatmap(x: torch.Tensor | np.ndarray) -> Panel:
    """Non-negative maps (N, H, W) or (N, 1, H, W), e.g. a per-pixel error."""
    return Panel("heatmap", x)


def error_map(prediction: torch.Tensor, target: torch.Tensor) -> Panel:
    """The heat map of the channel mean of |prediction - target| of (N, C, H, W) frames in [-1, 1]."""
    return heatmap((prediction.float() - target.float()).abs().mean(dim=1))
