"""r-GAN's generator: the FFP U-Net predicts from each input frame, a ConvLSTM reads those predictions in order.

    net = RecurrentUNet(channels=3)                     # features 64, depth 4, ConvLSTM hidden (64, 64)
    pred = net(clip[:, :3])                             # (N, 3, 3, 256, 256) in [-1, 1] -> (N, 3, 256, 256)
    pred, steps = net(clip[:, :3], return_steps=True)   # steps: the U-Net's per-frame predictions (N, 3, 3, H, W)

At 256x256 with 3 colour input frames and the defaults: 8,150,534 parameters (U-Net 7,699,011, ConvLSTM 449,792,
read-out 1,731); the ConvLSTM runs at full resolution with a (N, 64, 256, 256) state per layer.

The released r-GAN code (Lu et al., ECCV 2020) makes the last of eight ConvLSTM layers (16-128-256-128-64-32-16-3
wide, at 256x256) three channels wide and takes its hidden state as the frame. Here a 3x3 convolution and tanh read
the frame from the top layer's hidden state, so the state can be wider than an image; the stack's widths are
``hidden``. The released code also restarts the ConvLSTM state inside its time loop (see ``vad.nets.convlstm``).

``residual=True`` (not in the paper; see ``experiments/results/rgan_family_pilots.md``) reads the CHANGE from the
last input frame instead of the frame: prediction = clip(I_t + conv3x3(h_t), -1, 1), the read-out's weights 1/100 of
their Xavier draw, so an untrained net predicts the last frame to within about 1% and training starts from
copy-last. (Exactly zero weights would be a saddle: no gradient reaches the layers below, and the read-out's own
gradient averages out over the many static pixels, so nothing learns.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vad.nets.convlstm import ConvLSTM
from vad.nets.unet import UNet

#: the scale of a change read-out's initial (Xavier) weights
CHANGE_INIT_SCALE = 0.01


def add_change(last: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    """A frame predicted as a change from the last input frame: clip(last + change, -1, 1); (N, C, H, W) each."""
    return (last + change).clamp(-1.0, 1.0)


def init_change_conv(conv: nn.Conv2d) -> None:
    """Initialise a convolution that outputs a change: Xavier-uniform weights times :data:`CHANGE_INIT_SCALE`, zero
    bias, so the change starts near zero while gradients still reach the layers below it."""
    nn.init.xavier_uniform_(conv.weight)
    with torch.no_grad():
        conv.weight.mul_(CHANGE_INIT_SCALE)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class RecurrentUNet(nn.Module):
    """U-Net per frame, then a ConvLSTM over the per-frame predictions; the final hidden state gives frame t+1.

    For T = 1..t: P_T = U(I_T) (one U-Net, shared weights, all frames in one batch); (h_T, c_T) =
    ConvLSTM(P_T, (h_{T-1}, c_{T-1})) with (h_0, c_0) = 0; prediction = tanh(conv3x3(h_t)), or with ``residual``
    clip(I_t + conv3x3(h_t), -1, 1).

    Args:
        channels: image channels C (in and out).
        features, depth, norm, relu_after_upconv, init: the U-Net's (see :class:`vad.nets.UNet`).
        hidden: the ConvLSTM layers' widths, bottom first.
        kernel_size: the ConvLSTM gates' convolution size.
        residual: read out the change from the last input frame (read-out initialised near zero).

    Input (N, t, C, H, W) in [-1, 1], H and W multiples of 2**(depth - 1); output (N, C, H, W) in [-1, 1].
    """

    def __init__(
        self,
        channels: int,
        features: int = 64,
        depth: int = 4,
        hidden: Sequence[int] = (64, 64),
        kernel_size: int = 3,
        norm: str = "none",
        relu_after_upconv: bool = True,
        init: str = "xavier",
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.residual = residual
        self.unet = UNet(channels, channels, features, depth, norm, relu_after_upconv, init)
        self.convlstm = ConvLSTM(channels, hidden, kernel_size)
        self.read_out = nn.Conv2d(self.convlstm.out_channels, channels, 3, padding=1)
        if residual:
            init_change_conv(self.read_out)
        else:
            nn.init.xavier_uniform_(self.read_out.weight)
            nn.init.zeros_(self.read_out.bias)

    def read(self, h: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The predicted frame from the top ConvLSTM layer's hidden state (N, hidden[-1], H, W) and the last input
        frame (N, C, H, W) (used with ``residual``) -> (N, C, H, W)."""
        if self.residual:
            return add_change(last, self.read_out(h))
        return torch.tanh(self.read_out(h))

    def step_predictions(self, frames: torch.Tensor) -> torch.Tensor:
        """The U-Net's prediction from each input frame: (N, t, C, H, W) -> (N, t, C, H, W)."""
        if frames.ndim != 5 or frames.shape[2] != self.channels:
            raise ValueError(f"RecurrentUNet expects (N, t, {self.channels}, H, W) frames, got {tuple(frames.shape)}")
        n, t = frames.shape[:2]
        return self.unet(frames.flatten(0, 1)).unflatten(0, (n, t))

    def forward(
        self, frames: torch.Tensor, return_steps: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(N, t, C, H, W) -> predicted frame t+1 (N, C, H, W); with ``return_steps`` also the U-Net's per-frame
        predictions (N, t, C, H, W)."""
        steps = self.step_predictions(frames)
        outputs, _ = self.convlstm.sequence(steps)
        prediction = self.read(outputs[:, -1], frames[:, -1])
        return (prediction, steps) if return_steps else prediction
