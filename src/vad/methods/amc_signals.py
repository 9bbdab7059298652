"""What AMC and the co-memory network share: the cached flow targets they take and AMC's max-patch score.

The max-patch score (:func:`patch_signals`): per frame the window with the largest flow error, the intensity error in
that window, and S = log(w_F S_F) + lambda_S log(w_I S_I), w the inverse means of S_F and S_I over the normal
training frames (``VADModule.training_mean``). May import the methods' base and losses, ``vad.evaluation`` and
``vad.flow``.

    signals = patch_signals(self, frame, target, flow, require_flows(self, clip)[:, -1], self.patch)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vad.evaluation.patch import max_patch, patch_score
from vad.flow import FlowEstimator
from vad.methods import losses
from vad.methods.base import Clip, FrozenNet, VADModule

#: the estimator of the flow targets (cached once per dataset; need not be differentiable)
FLOW_TARGETS = FrozenNet(
    group="flow_targets",
    what="flow-target estimator",
    kind=FlowEstimator,
    choices="flow_targets=dis (OpenCV, default) or flow_targets=flownet2sd",
)
#: the signals of a method scored by the max-patch score
PATCH_SIGNALS = ("psnr", "flow_error", "patch_flow_error", "patch_intensity_error", "patch_score")
PATCH_DEFAULTS: Mapping[str, float] = {"window": 16, "stride": 4, "lam": 0.2}


def require_flows(module: VADModule, clip: Clip) -> torch.Tensor:
    """The clip's flow targets (N, clip_len - 1, 2, H, W); a clear error when the batch carries none."""
    if clip.flows is None:
        raise RuntimeError(
            f"{type(module).__name__} needs flow targets in its batches: build the datamodule with "
            "vad.app.build.build_datamodule(cfg, model) (or call datamodule.request(model.clip_requests()))"
        )
    return clip.flows


def patch_signals(
    module: VADModule,
    frame: torch.Tensor,
    frame_target: torch.Tensor,
    flow: torch.Tensor,
    flow_target: torch.Tensor,
    patch: Mapping[str, Any],
) -> dict[str, torch.Tensor]:
    """The max-patch signals of a batch (see :data:`PATCH_SIGNALS`): intensity error = squared error averaged
    over the image channels, flow error = squared error averaged over the flow channels, both per pixel; the
    weights of the score are the inverse training means of the module (1 before they are computed)."""
    frame, frame_target = frame.float(), frame_target.float()
    flow_map = (flow.float() - flow_target.float()).square().mean(dim=1)
    intensity_map = losses.squared_error_map(frame, frame_target)  # on [0, 1] images, as the PSNR
    chosen = max_patch(flow_map, intensity_map, window=patch["window"], stride=patch["stride"])
    score = patch_score(
        chosen.select,
        chosen.value,
        w_flow=1.0 / module.training_mean("patch_flow_error"),
        w_intensity=1.0 / module.training_mean("patch_intensity_error"),
        lam=patch["lam"],
    )
    return {
        "psnr": losses.psnr(frame, frame_target),
        "flow_error": flow_map.flatten(1).mean(dim=1),
        "patch_flow_error": chosen.select,
        "patch_intensity_error": chosen.value,
        "patch_score": score,
    }
