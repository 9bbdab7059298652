"""The MNAD encoder and decoder (Park, Noh, Ham, CVPR 2020); the memory between them is ``vad.nets.memory.Memory``.

    encoder, decoder = MNADEncoder(12), MNADDecoder(3)      # prediction: t=4 colour frames -> the next frame
    features, skips = encoder(clip.flatten(1, 2))           # (N, 12, 256, 256) -> (N, 512, 32, 32) + 3 skip maps
    frame = decoder(memory(features).decoder_input(), skips)   # (N, 1024, 32, 32) -> (N, 3, 256, 256) in [-1, 1]

With w = ``features`` (64 in the paper), block = [3x3 conv -> BatchNorm -> ReLU] x 2:

- encoder: block w -> 2x2 max-pool -> block 2w -> pool -> block 4w -> pool -> 3x3 conv 8w -> BN -> ReLU -> 3x3 conv
  8w (no final BN / ReLU: these are the queries); returns the 8w-channel map at 1/8 of the input size and the
  outputs of the first three blocks (the U-Net skips).
- decoder: input concat[query, read memory] (16w channels); block 8w; then three times upsample (3x3 transposed conv
  stride 2, padding 1, output padding 1 -> BN -> ReLU, halving the width) and a block; with ``skips`` (prediction)
  each block takes concat[encoder skip, upsampled], without (reconstruction) only the upsampled map; the last block
  ends in a 3x3 conv to the image channels and tanh.

Parameters at w=64 (PyTorch's default initialisation, as in the reference code): prediction encoder 12 -> 512:
4,693,376, decoder with skips -> 3: 10,957,443; reconstruction encoder 3 -> 512: 4,688,192, decoder without skips
-> 3: 10,183,299.
"""

from __future__ import annotations

import torch
from torch import nn

from vad.nets.unet import check_frame_stack


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU()]


def block(in_channels: int, out_channels: int) -> nn.Sequential:
    """[3x3 conv -> BatchNorm -> ReLU] x 2; (N, in_channels, H, W) -> (N, out_channels, H, W)."""
    return nn.Sequential(*_conv_bn_relu(in_channels, out_channels), *_conv_bn_relu(out_channels, out_channels))


def upsample(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 transposed conv, stride 2 -> BatchNorm -> ReLU; (N, in_channels, H, W) -> (N, out_channels, 2H, 2W)."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class MNADEncoder(nn.Module):
    """(N, in_channels, H, W) in [-1, 1], H and W divisible by 8 -> queries (N, 8w, H/8, W/8) and the skips
    [(N, w, H, W), (N, 2w, H/2, W/2), (N, 4w, H/4, W/4)]."""

    size_multiple = 8

    def __init__(self, in_channels: int, features: int = 64) -> None:
        super().__init__()
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        self.in_channels = in_channels
        self.features = features
        self.out_channels = 8 * features
        w = features
        self.blocks = nn.ModuleList([block(in_channels, w), block(w, 2 * w), block(2 * w, 4 * w)])
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(*_conv_bn_relu(4 * w, 8 * w), nn.Conv2d(8 * w, 8 * w, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._check_input(x)
        skips = []
        for stage in self.blocks:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        return self.head(x), skips

    def _check_input(self, x: torch.Tensor) -> None:
        check_frame_stack(x, "MNADEncoder", self.in_channels, self.size_multiple)


class MNADDecoder(nn.Module):
    """concat[query, read] (N, 16w, h, w) -> image (N, out_channels, 8h, 8w) in [-1, 1].

    Args:
        out_channels: image channels.
        features: w, as in the encoder.
        skips: U-Net skips from the encoder (prediction variant); False for the reconstruction variant.
        in_channels: channels of the input map (default 16w, concat[query, read]; a net that feeds the decoder
            more, such as the co-memory network's appearance decoder, says how many).
        output: ``tanh`` (images in [-1, 1]) or ``linear`` (unbounded values, e.g. optical flow in pixels).
    """

    def __init__(
        self,
        out_channels: int,
        features: int = 64,
        skips: bool = True,
        in_channels: int | None = None,
        output: str = "tanh",
    ) -> None:
        super().__init__()
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        if output not in ("tanh", "linear"):
            raise ValueError(f"output must be 'tanh' or 'linear', got {output!r}")
        self.uses_skips = skips
        w = features
        self.in_channels = 16 * w if in_channels is None else int(in_channels)
        self.bottom = block(self.in_channels, 8 * w)
        self.upsamples = nn.ModuleList([upsample(8 * w, 4 * w), upsample(4 * w, 2 * w), upsample(2 * w, w)])
        factor = 2 if skips else 1
        self.blocks = nn.ModuleList([block(factor * 4 * w, 4 * w), block(factor * 2 * w, 2 * w)])
        self.head = nn.Sequential(
            *_conv_bn_relu(factor * w, w),
            *_conv_bn_relu(w, w),
            nn.Conv2d(w, out_channels, 3, padding=1),
            *([nn.Tanh()] if output == "tanh" else []),
        )

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``x`` (N, in_channels, h, w); ``skips`` the encoder's three skip maps (prediction) or None
        (reconstruction)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"MNADDecoder expects (N, {self.in_channels}, h, w), got {tuple(x.shape)}")
        if self.uses_skips != (skips is not None):
            raise ValueError("pass the encoder's skips to a decoder built with skips=True, and only to it")
        x = self.bottom(x)
        stages = [*self.blocks, self.head]
        pending = list(skips) if skips is not None else []
        for up, stage in zip(self.upsamples, stages, strict=True):
            x = up(x)
            if pending:
                x = torch.cat([pending.pop(), x], dim=1)
            x = stage(x)
        return x
