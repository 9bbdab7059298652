"""The FFP generator: a U-Net that maps t stacked frames to the next frame, plus the weight initialisers of the nets.

    net = UNet(in_channels=12, out_channels=3)          # t=4 colour frames -> 1 colour frame, 7,704,195 parameters
    pred = net(clip.flatten(1, 2))                      # (N, 12, 256, 256) in [-1, 1] -> (N, 3, 256, 256) in [-1, 1]

Two published variants, selected by constructor arguments:

- official TensorFlow code of Liu et al. (the default): no normalisation, a ReLU after each transposed conv, Xavier
  (Glorot uniform) weights and zero biases -> ``UNet(c_in, c_out)``;
- the popular PyTorch port: BatchNorm in every double conv (and those convs without bias), no ReLU after the
  transposed conv, N(0, 0.02) weights -> ``UNet(c_in, c_out, norm="batch", relu_after_upconv=False, init="normal")``.
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("none", "batch")
INITS = ("xavier", "normal")


def init_weights(module: nn.Module, scheme: str) -> None:
    """Initialise every conv, transposed conv and linear layer of ``module`` in place; biases are set to zero.

    ``"xavier"``: Glorot uniform, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (TF ``xavier_initializer``);
    batch-norm scales 1. ``"normal"``: N(0, 0.02) weights (the pix2pix / DCGAN convention); batch-norm scales
    N(1, 0.02).
    """
    if scheme not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {scheme!r}")
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            if scheme == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            else:
                nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
            if scheme == "xavier":
                nn.init.ones_(layer.weight)
            else:
                nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


class DoubleConv(nn.Sequential):
    """Two (3x3 conv, padding 1) -> (BatchNorm) -> ReLU; (N, in_channels, H, W) -> (N, out_channels, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "none") -> None:
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        layers: list[nn.Module] = []
        for channels in (in_channels, out_channels):
            # A bias right before a batch norm is cancelled by its mean subtraction.
            layers.append(nn.Conv2d(channels, out_channels, 3, padding=1, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net generator of FFP (Liu et al., CVPR 2018), usable for any image-to-image prediction.

    Level i (i < depth) has width ``features * 2**i`` (64/128/256/512 at the defaults). Encoder: a DoubleConv per
    level, 2x2 max-pool between levels. Decoder, from the bottom up: 2x2 stride-2 transposed conv halving the width
    (then ReLU when ``relu_after_upconv``), concat [skip, upsampled], DoubleConv. Head: 3x3 conv then tanh.

    Input (N, in_channels, H, W) in [-1, 1] with H and W divisible by ``size_multiple`` = 2**(depth - 1); output
    (N, out_channels, H, W) in [-1, 1].

    Parameter count with w_i = features * 2**i, c = in_channels, o = out_channels, b = 1 without norm
    (conv biases) and b = 0 with batch norm (which brings 2 parameters per channel instead):
      encoder   sum_{i<depth}  9 (w_{i-1} w_i + w_i^2) + 2 b w_i          (w_{-1} = c)
      decoder   sum_{i<depth-1} 4 w_{i+1} w_i + w_i  +  9 (2 w_i w_i + w_i^2) + 2 b w_i
      norm      4 * sum of all DoubleConv widths (batch only)
      head      9 w_0 o + o
    For c=12, o=3 at the defaults: 7,704,195 (official); 7,707,011 with ``norm="batch"`` (the PyTorch port).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: int = 64,
        depth: int = 4,
        norm: str = "none",
        relu_after_upconv: bool = True,
        init: str = "xavier",
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        self.in_channels = in_channels
        self.size_multiple = 2 ** (depth - 1)
        widths = [features * 2**i for i in range(depth)]
        self.encoder = nn.ModuleList(
            DoubleConv(c_in, c_out, norm) for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth - 1)):
            up: list[nn.Module] = [nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)]
            if relu_after_upconv:
                up.append(nn.ReLU(inplace=True))
            self.upsample.append(nn.Sequential(*up))
            self.decoder.append(DoubleConv(2 * widths[level], widths[level], norm))
        self.head = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) in [-1, 1] -> (N, out_channels, H, W) in [-1, 1]."""
        self._check_input(x)
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(self.pool(x) if level else x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.upsample, self.decoder, strict=True):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
        return torch.tanh(self.head(x))

    def _check_input(self, x: torch.Tensor) -> None:
        check_frame_stack(x, "UNet", self.in_channels, self.size_multiple, why=" (2**(depth-1))")


def check_frame_stack(x: torch.Tensor, net: str, in_channels: int, size_multiple: int, why: str = "") -> None:
    """One-line ValueError unless ``x`` is (N, in_channels, H, W) with H and W multiples of ``size_multiple``."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{net} expects (N, {in_channels}, H, W) (frames stacked on channels), got {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height % size_multiple or width % size_multiple:
        raise ValueError(
            f"{net} input size {height}x{width} is not divisible by {size_multiple}{why}; resize the frames to a "
            f"multiple of {size_multiple} (dataset.image_size), e.g. 256x256"
        )
