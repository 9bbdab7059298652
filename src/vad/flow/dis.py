"""OpenCV's DIS (dense inverse search) optical flow behind the flow interface: fast, accurate, not differentiable.

Serves precomputed flow targets (e.g. the motion branch of AMC-style methods), never a loss that needs gradients.

    flow = DISFlow(preset="medium")
    uv = flow(a, b)        # (N, 2, H, W) pixels on a's device, b(x + uv(x)) ≈ a(x); no gradient
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from vad.errors import ConfigError
from vad.flow.base import FlowEstimator, to_grey

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def to_uint8_grey(x: Tensor) -> np.ndarray:
    """(N, 1 or 3, H, W) in [-1, 1] -> (N, H, W) uint8 luminance on the CPU."""
    grey = ((to_grey(x.detach()) + 1.0) * 127.5).round().clamp(0, 255)
    return grey[:, 0].to(device="cpu", dtype=torch.uint8).numpy()


class DISFlow(FlowEstimator):
    """OpenCV DIS optical flow on uint8 grey frames, one pair at a time.

    Args:
        preset: ``ultrafast``, ``fast`` or ``medium`` (OpenCV's speed/accuracy presets; ``medium`` is the most
            accurate, with variational refinement).
        input_size: (H, W) to estimate at (see :class:`FlowEstimator`); None: the frames' own size.
    """

    differentiable = False

    def __init__(self, preset: str = "medium", input_size: Sequence[int] | None = None) -> None:
        super().__init__(input_size)
        if preset not in PRESETS:
            raise ConfigError(f"flow.preset={preset}: unknown DIS preset; choose one of {', '.join(PRESETS)}")
        self.preset = preset
        self.freeze()

    def identity(self) -> str:
        # DIS lives in OpenCV: another release may compute other flows.
        return f"{super().identity()} opencv={cv2.__version__}"

    def compute(self, a: Tensor, b: Tensor) -> Tensor:
        """(N, 1 or 3, H, W) pair in [-1, 1] -> (N, 2, H, W) flow from ``a`` to ``b`` in pixels (detached)."""
        # A fresh OpenCV object per call: cheap, and keeps the module picklable (checkpoints, spawned workers).
        dis = cv2.DISOpticalFlow_create(PRESETS[self.preset])
        flows = [
            dis.calc(first, second, None) for first, second in zip(to_uint8_grey(a), to_uint8_grey(b), strict=True)
        ]
        return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(device=a.device, dtype=a.dtype)
