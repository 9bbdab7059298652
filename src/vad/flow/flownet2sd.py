"""FlowNet2-SD, the small-displacement FlowNet2 network, with its published NVIDIA weights (frozen).

The module's ``state_dict`` matches NVIDIA flownet2-pytorch's ``FlowNet2-SD.pth`` key for key and shape for shape
(60 tensors, 45,371,666 parameters). The checkpoint is not downloaded by the suite; put it here::

    weights/                      (paths.weights_dir, VAD_WEIGHTS_DIR)
      FlowNet2-SD.pth             a dict with 'state_dict' (as published) or the bare state_dict

    flow = FlowNet2SD("weights/FlowNet2-SD.pth")
    uv = flow(a, b)               # (N, 2, H, W) pixels, b(x + uv(x)) ≈ a(x)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vad.checkpoint_io import compare_state
from vad.errors import ConfigError
from vad.flow.base import FlowEstimator

# The network sees sizes that are multiples of its total stride (six stride-2 convolutions).
STRIDE = 64
# The net predicts flow divided by this factor (the training targets were scaled down by it).
FLOW_DIVISOR = 20.0
RGB_MAX = 255.0


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.LeakyReLU(0.1))


def _deconv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1), nn.LeakyReLU(0.1))


def _inter_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    # A one-element Sequential only to reproduce the checkpoint's key names (`inter_conv5.0.weight`).
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1))


def _predict_flow(in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, 2, 3, 1, 1)


def _upsample_flow() -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(2, 2, 4, 2, 1)


class FlowNet2SD(FlowEstimator):
    """FlowNet2-SD with frozen weights, differentiable w.r.t. both frames.

    Args:
        checkpoint: path of ``FlowNet2-SD.pth``; None leaves the weights randomly initialised (shape checks and
            tests only, its flow means nothing).
        input_size: (H, W) the frames are resized to before the net (see :class:`FlowEstimator`); the official FFP
            code feeds 384x512 (conf/flow/flownet2sd.yaml); fed 256x256 directly, the net returns flows 1.5-2x
            smaller, which lowers the effective weight of FFP's flow loss.

    Preprocessing: frames in [-1, 1] become RGB in [0, 255] (grey is replicated to three channels); both frames are
    replicate-padded at the bottom and right to multiples of 64, so the net sees every pixel at its native scale, and
    the flow is cropped back to the input size. The net subtracts the per-sample per-channel mean over both frames,
    divides by 255, and its output is ``20 * flow2`` upsampled x4 bilinearly, in pixels.
    """

    differentiable = True

    def __init__(
        self, checkpoint: str | os.PathLike[str] | None = None, input_size: Sequence[int] | None = None
    ) -> None:
        super().__init__(input_size)
        self.conv0 = _conv(6, 64)
        self.conv1 = _conv(64, 64, stride=2)
        self.conv1_1 = _conv(64, 128)
        self.conv2 = _conv(128, 128, stride=2)
        self.conv2_1 = _conv(128, 128)
        self.conv3 = _conv(128, 256, stride=2)
        self.conv3_1 = _conv(256, 256)
        self.conv4 = _conv(256, 512, stride=2)
        self.conv4_1 = _conv(512, 512)
        self.conv5 = _conv(512, 512, stride=2)
        self.conv5_1 = _conv(512, 512)
        self.conv6 = _conv(512, 1024, stride=2)
        self.conv6_1 = _conv(1024, 1024)

        self.deconv5 = _deconv(1024, 512)
        self.deconv4 = _deconv(1026, 256)
        self.deconv3 = _deconv(770, 128)
        self.deconv2 = _deconv(386, 64)

        self.inter_conv5 = _inter_conv(1026, 512)
        self.inter_conv4 = _inter_conv(770, 256)
        self.inter_conv3 = _inter_conv(386, 128)
        self.inter_conv2 = _inter_conv(194, 64)

        self.predict_flow6 = _predict_flow(1024)
        self.predict_flow5 = _predict_flow(512)
        self.predict_flow4 = _predict_flow(256)
        self.predict_flow3 = _predict_flow(128)
        self.predict_flow2 = _predict_flow(64)

        self.upsampled_flow6_to_5 = _upsample_flow()
        self.upsampled_flow5_to_4 = _upsample_flow()
        self.upsampled_flow4_to_3 = _upsample_flow()
        self.upsampled_flow3_to_2 = _upsample_flow()

        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        self.freeze()

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Load ``FlowNet2-SD.pth`` strictly; ConfigError naming the file when it is missing or does not match."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"{path}: FlowNet2-SD checkpoint not found; get FlowNet2-SD.pth, the FlowNet2-SD checkpoint published "
                "by NVIDIA's flownet2-pytorch project (github.com/NVIDIA/flownet2-pytorch), and put it at this path "
                "(paths.weights_dir) or point flow.checkpoint=<file> at it"
            )
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ConfigError(f"{path}: cannot read this file as a torch checkpoint ({error})") from error
        state = content.get("state_dict", content) if isinstance(content, dict) else None
        if not isinstance(state, dict):
            raise ConfigError(f"{path}: expected a state_dict or a dict with key 'state_dict', got {type(content)}")
        problem = self._mismatch(state)
        if problem:
            raise ConfigError(f"{path}: not a FlowNet2-SD checkpoint ({problem}); use NVIDIA's FlowNet2-SD.pth")
        self.load_state_dict(state, strict=True)

    def _mismatch(self, state: dict[str, object]) -> str:
        """What differs between ``state`` and this module's state_dict ('' when the keys and shapes all match)."""
        mismatch = compare_state(self.state_dict(), state)
        missing, unexpected = mismatch.missing, mismatch.unexpected
        wrong = [f"{name} {found} != {shape}" for name, found, shape in mismatch.reshaped]
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:3])}")
        if wrong:
            parts.append(f"{len(wrong)} wrong shapes, e.g. {'; '.join(wrong[:3])}")
        return "; ".join(parts)

    def network(self, frames: Tensor) -> Tensor:
        """(N, 6, H, W) normalised pair, H and W multiples of 64 -> (N, 2, H / 4, W / 4) raw ``flow2``."""
        out_conv1 = self.conv1_1(self.conv1(self.conv0(frames)))
        out_conv2 = self.conv2_1(self.conv2(out_conv1))
        out_conv3 = self.conv3_1(self.conv3(out_conv2))
        out_conv4 = self.conv4_1(self.conv4(out_conv3))
        out_conv5 = self.conv5_1(self.conv5(out_conv4))
        out_conv6 = self.conv6_1(self.conv6(out_conv5))

        flow6 = self.predict_flow6(out_conv6)
        concat5 = torch.cat((out_conv5, self.deconv5(out_conv6), self.upsampled_flow6_to_5(flow6)), dim=1)
        flow5 = self.predict_flow5(self.inter_conv5(concat5))
        concat4 = torch.cat((out_conv4, self.deconv4(concat5), self.upsampled_flow5_to_4(flow5)), dim=1)
        flow4 = self.predict_flow4(self.inter_conv4(concat4))
        concat3 = torch.cat((out_conv3, self.deconv3(concat4), self.upsampled_flow4_to_3(flow4)), dim=1)
        flow3 = self.predict_flow3(self.inter_conv3(concat3))
        concat2 = torch.cat((out_conv2, self.deconv2(concat3), self.upsampled_flow3_to_2(flow3)), dim=1)
        return self.predict_flow2(self.inter_conv2(concat2))

    def compute(self, a: Tensor, b: Tensor) -> Tensor:
        """(N, 1 or 3, H, W) pair in [-1, 1] (RGB order) -> (N, 2, H, W) flow from ``a`` to ``b`` in pixels."""
        height, width = a.shape[2:]
        pad_h, pad_w = -height % STRIDE, -width % STRIDE
        if pad_h or pad_w:
            a = F.pad(a, (0, pad_w, 0, pad_h), mode="replicate")
            b = F.pad(b, (0, pad_w, 0, pad_h), mode="replicate")
        pair = torch.stack((a, b), dim=2).expand(-1, 3, -1, -1, -1)  # (N, 3, 2, H, W); grey -> RGB
        pair = (pair + 1.0) * (RGB_MAX / 2.0)
        mean = pair.mean(dim=(2, 3, 4), keepdim=True)
        pair = (pair - mean) / RGB_MAX
        frames = torch.cat((pair[:, :, 0], pair[:, :, 1]), dim=1)
        flow = F.interpolate(FLOW_DIVISOR * self.network(frames), scale_factor=4, mode="bilinear", align_corners=False)
        return flow[:, :, :height, :width]
