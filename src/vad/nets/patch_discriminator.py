"""PatchGAN discriminator of FFP (pix2pix style, no normalisation): one real/fake probability per image patch.

    disc = PatchDiscriminator(in_channels=3)             # 128-256-512-512, reflect padding 2, sigmoid output
    probs = disc(frames)                                 # (N, 3, 256, 256) in [-1, 1] -> (N, 1, 35, 35) in [0, 1]

The official FFP code reflect-pads 2 pixels before every conv; the popular PyTorch port zero-pads 2
(``padding_mode="zeros"``). Both use the same layer sizes, so the output map has the same size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vad.nets.unet import init_weights

PADDING_MODES = ("reflect", "zeros")
KERNEL = 4


class PatchDiscriminator(nn.Module):
    """conv k4 s2 for every width but the last, conv k4 s1 for the last width, then conv k4 s1 to one channel.

    Each conv but the final one is followed by LeakyReLU(0.2); no normalisation anywhere. ``padding`` pixels are added
    on every side before each conv (reflect or zeros). At the defaults a 256x256 input gives a 35x35 map and a 64x64
    input an 11x11 map; ``output_size`` computes it for any size.

    Input (N, in_channels, H, W) in [-1, 1]; output (N, 1, h, w): probabilities in [0, 1] when ``sigmoid``, else
    logits. ``init``: ``"xavier"`` (the official TF default) or ``"normal"`` N(0, 0.02), see ``init_weights``.
    """

    def __init__(
        self,
        in_channels: int,
        features: Sequence[int] = (128, 256, 512, 512),
        padding: int = 2,
        padding_mode: str = "reflect",
        sigmoid: bool = True,
        init: str = "xavier",
    ) -> None:
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if not features:
            raise ValueError("features must list at least one width, e.g. (128, 256, 512, 512)")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.in_channels = in_channels
        self.padding = padding
        self.padding_mode = padding_mode
        self.sigmoid = sigmoid
        self.strides = [2] * (len(features) - 1) + [1, 1]
        widths = [in_channels, *features, 1]
        layers: list[nn.Module] = []
        for index, stride in enumerate(self.strides):
            layers.append(
                nn.Conv2d(widths[index], widths[index + 1], KERNEL, stride, padding, padding_mode=padding_mode)
            )
            if index < len(self.strides) - 1:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.layers = nn.Sequential(*layers)
        init_weights(self, init)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Size (h, w) of the output map for an input of ``height`` x ``width``; ValueError when it is too small."""
        return self._side(height, (height, width)), self._side(width, (height, width))

    def _side(self, size: int, input_size: tuple[int, int]) -> int:
        for stride in self.strides:
            # Reflect padding needs more pixels than it pads; every conv needs at least one output pixel.
            if (self.padding_mode == "reflect" and size <= self.padding) or size + 2 * self.padding < KERNEL:
                raise ValueError(
                    f"input {input_size[0]}x{input_size[1]} is too small for the patch discriminator "
                    f"(strides {self.strides}, padding {self.padding}); use larger frames, e.g. 64x64 or more"
                )
            size = (size + 2 * self.padding - KERNEL) // stride + 1
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) in [-1, 1] -> (N, 1, h, w): probabilities in [0, 1] (logits if not ``sigmoid``)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PatchDiscriminator expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        self.output_size(x.shape[-2], x.shape[-1])
        logits = self.layers(x)
        return torch.sigmoid(logits) if self.sigmoid else logits
