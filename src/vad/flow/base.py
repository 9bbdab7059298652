"""The interface every flow estimator implements, and the route from a config name to an estimator.

flow = build_flow("lk")                      # conf/flow/lk.yaml, or any mapping with a `_target_`
uv = flow(a, b)                              # (N, 2, H, W) pixels: b(x + uv(x)) ≈ a(x)
"""

from __future__ import annotations

import hashlib
from abc import ABCMeta, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from vad import config_dir
from vad.errors import ConfigError, unwrapped_constructor_errors

# ITU-R BT.601 luma weights, the ones OpenCV's RGB -> grey conversion uses, so grey frames from the frame cache and
# grey frames converted here agree.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def to_grey(x: Tensor) -> Tensor:
    """(N, 1 or 3, H, W) grey or RGB -> (N, 1, H, W) luminance, same range as the input."""
    if x.shape[1] == 1:
        return x
    weights = x.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def resize_flow(flow: Tensor, size: Sequence[int]) -> Tensor:
    """A (N, 2, h, w) flow in pixels of its own size -> (N, 2, H, W) in pixels of ``size`` = (H, W).

    The field is resampled (area averaging when both sides shrink, which also averages the estimator's noise away;
    bilinear otherwise) and each component is multiplied by its axis's scale: x by W / w, y by H / h. A translation
    of 4 px at 128 columns is 2 px at 64 columns.
    """
    height, width = (int(s) for s in size)
    h, w = flow.shape[-2:]
    if (h, w) == (height, width):
        return flow
    if height <= h and width <= w:
        resized = F.interpolate(flow, size=(height, width), mode="area")
    else:
        resized = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
    scale = flow.new_tensor([width / w, height / h]).view(1, 2, 1, 1)
    return resized * scale


def _input_size(value: Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        height, width = (int(s) for s in value)
    except (TypeError, ValueError):
        height = width = 0
    if height < 1 or width < 1:
        raise ConfigError(f"flow.input_size={value!r}: must be null or two positive integers [height, width]")
    return (height, width)


class FlowEstimator(nn.Module, metaclass=ABCMeta):
    """A frozen optical-flow estimator: ``forward(a, b) -> (N, 2, H, W)``, in pixels.

    Inputs are two batches of images ``(N, C, H, W)`` in [-1, 1] with C = 1 (grey) or 3 (RGB). Output channel 0 is the
    horizontal (x) and channel 1 the vertical (y) displacement of each pixel of ``a`` to its position in ``b``, so that
    ``b(x + flow(x)) ≈ a(x)``. Parameters never train and the module stays in eval mode whatever its parent does;
    ``differentiable`` says whether gradients flow back to both inputs.

    ``input_size`` (H, W), when given, is the size the estimator works at, whatever the caller's frame size: the
    frames are resized to it (bilinear, antialiased when shrinking; differentiable) and the flow is brought back to
    the caller's size and pixel units (:func:`resize_flow`). FlowNet2-SD as the official FFP code feeds it
    (384x512), or DIS on Ped2 at its native 240x360 for 64x64 targets. Subclasses implement :meth:`compute`.
    """

    differentiable: bool = True

    def __init__(self, input_size: Sequence[int] | None = None) -> None:
        super().__init__()
        self.input_size = _input_size(input_size)

    def freeze(self) -> None:
        """Stop every parameter from training and switch to eval mode; subclasses call this at the end of __init__."""
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FlowEstimator:
        # A parent's .train() must not switch a frozen estimator to training behaviour.
        return super().train(False)

    def identity(self) -> str:
        """What makes this estimator's flows what they are, as text: the class, its plain settings (numbers,
        strings, tuples of them) and a digest of its weights. Flow-target caches (:mod:`vad.data.flows`) are keyed
        by it, so flows of another estimator, preset or checkpoint are never reused. A subclass whose output depends
        on anything else (a library version) adds it."""
        settings = {
            k: v
            for k, v in sorted(vars(self).items())
            if not k.startswith("_") and k != "training" and isinstance(v, int | float | str | bool | tuple)
        }
        digest = hashlib.sha1()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
        return f"{type(self).__module__}.{type(self).__qualname__} {settings} weights={digest.hexdigest()[:16]}"

    @staticmethod
    def check_pair(a: Tensor, b: Tensor) -> None:
        """Raise ValueError unless ``a`` and ``b`` are equally shaped (N, 1 or 3, H, W) batches."""
        if a.ndim != 4 or a.shape[1] not in (1, 3) or a.shape != b.shape:
            raise ValueError(
                f"flow inputs must be two (N, 1 or 3, H, W) batches of the same shape, got {tuple(a.shape)} and "
                f"{tuple(b.shape)}"
            )

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """(N, C, H, W) pair in [-1, 1] -> (N, 2, H, W) flow from ``a`` to ``b`` in pixels of (H, W)."""
        self.check_pair(a, b)
        size = a.shape[-2:]
        if self.input_size is None or tuple(size) == self.input_size:
            return self.compute(a, b)
        shrink = self.input_size[0] < size[0] or self.input_size[1] < size[1]

        def resized(x: Tensor) -> Tensor:
            return F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=shrink)

        return resize_flow(self.compute(resized(a), resized(b)), size)

    @abstractmethod
    def compute(self, a: Tensor, b: Tensor) -> Tensor:
        """The estimation itself on a checked (N, C, h, w) pair at the working size of the estimator."""


def no_flow() -> None:
    """The value of ``flow=none`` (conf/flow/none.yaml): no estimator; methods treat None as "no flow available"."""
    return None


def flow_names() -> list[str]:
    """Names of the flow configs in conf/flow/, sorted."""
    return sorted(path.stem for path in (config_dir() / "flow").glob("*.yaml"))


def _named_config(name: str) -> DictConfig:
    """conf/flow/<name>.yaml resolved against the default paths config (``${paths.weights_dir}`` and the like)."""
    names = flow_names()
    if name not in names:
        raise ConfigError(f"flow={name}: unknown flow estimator; choose one of {', '.join(names)}")
    root = OmegaConf.create(
        {
            "paths": OmegaConf.load(config_dir() / "paths" / "default.yaml"),
            "flow": OmegaConf.load(config_dir() / "flow" / f"{name}.yaml"),
        }
    )
    return root.flow


def build_flow(config: str | Mapping[str, Any] | DictConfig, **overrides: Any) -> FlowEstimator | None:
    """Build the estimator a flow config describes; None for ``none``.

    ``config`` is a name of conf/flow/ (``"lk"``, ``"dis"``, ``"flownet2sd"``, ``"none"``) or a config node with a
    ``_target_`` (the ``flow`` node of a composed Hydra config). ``overrides`` replace constructor arguments, e.g.
    ``build_flow("flownet2sd", checkpoint="weights/FlowNet2-SD.pth")``.
    """
    node = _named_config(config) if isinstance(config, str) else config
    if not isinstance(node, DictConfig):
        node = OmegaConf.create(dict(node))
    if "_target_" not in node:
        raise ConfigError(f"flow config {OmegaConf.to_yaml(node).strip()!r} has no _target_; use one of conf/flow/")
    with unwrapped_constructor_errors():
        estimator = instantiate(node, **overrides)
    if estimator is not None and not isinstance(estimator, FlowEstimator):
        raise ConfigError(f"flow._target_={node._target_}: builds a {type(estimator).__name__}, not a FlowEstimator")
    return estimator


def pixel_grid(height: int, width: int, like: Tensor) -> Tensor:
    """(1, 2, H, W) pixel coordinates (x, y) on ``like``'s device and dtype."""
    ys = torch.arange(height, device=like.device, dtype=like.dtype)
    xs = torch.arange(width, device=like.device, dtype=like.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y)).unsqueeze(0)


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Sample ``image`` at ``x + flow(x)``: (N, C, H, W) and (N, 2, H, W) pixels -> (N, C, H, W).

    Bilinear, edge pixels repeated outside the frame; differentiable w.r.t. both the image and the flow.
    """
    _, _, height, width = image.shape
    coords = pixel_grid(height, width, flow) + flow
    # grid_sample wants (x, y) in [-1, 1] with -1 and 1 at the centres of the edge pixels (align_corners=True).
    scale = flow.new_tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)]).view(1, 2, 1, 1)
    grid = (coords * scale - 1.0).permute(0, 2, 3, 1)
    return nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
