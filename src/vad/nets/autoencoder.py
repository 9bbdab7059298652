"""r-GAN*'s generator: an autoencoder with the FFP U-Net's structure but no skips, a ConvLSTM over its latent maps.

    net = RecurrentAutoencoder(channels=3)              # widths 64-512, 4 poolings, latent and ConvLSTM 32 wide
    pred = net(clip[:, :3])                             # (N, 3, 3, 256, 256) in [-1, 1] -> (N, 3, 256, 256)
    latents = net.encoder(clip[:, 0])                   # (N, 32, 16, 16): the paper's 16x16x32 latent at 256x256

At 256x256 with 3 colour input frames and the defaults: 7,384,483 parameters (encoder 4,832,864, ConvLSTM 73,856,
decoder 2,477,763). Without skips every frame must pass through the 16x16x32 bottleneck, and the recurrence runs
there: the ConvLSTM reads the t latent maps in order with its state carried across the steps, and the decoder turns
its final hidden state into frame t+1 (Lu et al., ECCV 2020, supplementary: r-GAN*). ``residual=True`` (not in the
paper) decodes the change from the last input frame instead, as ``vad.nets.rgan.RecurrentUNet`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vad.nets.convlstm import ConvLSTM
from vad.nets.rgan import add_change, init_change_conv
from vad.nets.unet import DoubleConv, check_frame_stack, init_weights


class ConvEncoder(nn.Module):
    """Level i < depth: DoubleConv to ``features * 2**i`` channels, then 2x2 max-pool; then a 3x3 conv (no
    activation) to ``latent`` channels. (N, in_channels, H, W) in [-1, 1] -> (N, latent, H / 2**depth, W / 2**depth);
    H and W multiples of 2**depth."""

    def __init__(
        self,
        in_channels: int,
        latent: int,
        features: int = 64,
        depth: int = 4,
        norm: str = "none",
        init: str = "xavier",
    ) -> None:
        super().__init__()
        if depth < 1 or features < 1 or latent < 1:
            raise ValueError(f"depth, features and latent must be >= 1, got {depth}, {features}, {latent}")
        self.in_channels = in_channels
        self.size_multiple = 2**depth
        widths = [features * 2**i for i in range(depth)]
        self.levels = nn.ModuleList(
            DoubleConv(c_in, c_out, norm) for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.to_latent = nn.Conv2d(widths[-1], latent, 3, padding=1)
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frame_stack(x, "ConvEncoder", self.in_channels, self.size_multiple, why=" (2**depth)")
        for level in self.levels:
            x = self.pool(level(x))
        return self.to_latent(x)


class ConvDecoder(nn.Module):
    """A 3x3 conv + ReLU from ``in_channels`` to the deepest width, then for each level from the deepest: 2x2
    stride-2 transposed conv (+ ReLU when ``relu_after_upconv``) to the next shallower width (the top level keeps
    ``features``) and a DoubleConv; a 3x3 conv and tanh to ``out_channels``.
    (N, in_channels, h, w) -> (N, out_channels, h * 2**depth, w * 2**depth) in [-1, 1]. With ``change`` the last conv
    starts near zero and has no tanh: the output is a change to add to a frame (see ``vad.nets.rgan.add_change``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: int = 64,
        depth: int = 4,
        norm: str = "none",
        relu_after_upconv: bool = True,
        init: str = "xavier",
        change: bool = False,
    ) -> None:
        super().__init__()
        self.change = change
        widths = [features * 2**i for i in range(depth)]
        self.from_latent = nn.Sequential(nn.Conv2d(in_channels, widths[-1], 3, padding=1), nn.ReLU(inplace=True))
        self.levels = nn.ModuleList()
        for level in reversed(range(depth)):
            width, shallower = widths[level], widths[max(level - 1, 0)]
            up: list[nn.Module] = [nn.ConvTranspose2d(width, shallower, 2, stride=2)]
            if relu_after_upconv:
                up.append(nn.ReLU(inplace=True))
            self.levels.append(nn.Sequential(*up, DoubleConv(shallower, shallower, norm)))
        self.head = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        init_weights(self, init)
        if change:
            init_change_conv(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.from_latent(x)
        for level in self.levels:
            x = level(x)
        return self.head(x) if self.change else torch.tanh(self.head(x))


class RecurrentAutoencoder(nn.Module):
    """Encoder per frame, ConvLSTM over the latent maps, decoder from the final hidden state (r-GAN*).

    For T = 1..t: z_T = E(I_T) (shared weights, all frames in one batch); (h_T, c_T) = ConvLSTM(z_T, (h_{T-1},
    c_{T-1})), (h_0, c_0) = 0; prediction = D(h_t), or with ``residual`` clip(I_t + D(h_t), -1, 1).

    Args:
        channels: image channels C (in and out).
        features, depth, norm, relu_after_upconv, init: the encoder's / decoder's widths and variants, as the FFP
            U-Net's (``depth`` poolings: 256 -> 16 at the default 4).
        latent: channels of the latent maps.
        hidden: the ConvLSTM layers' widths (default: one layer as wide as the latent).
        kernel_size: the ConvLSTM gates' convolution size.
        residual: decode the change from the last input frame (the decoder's last conv initialised near zero).

    Input (N, t, C, H, W) in [-1, 1], H and W multiples of 2**depth; output (N, C, H, W) in [-1, 1].
    """

    def __init__(
        self,
        channels: int,
        features: int = 64,
        depth: int = 4,
        latent: int = 32,
        hidden: Sequence[int] | None = None,
        kernel_size: int = 3,
        norm: str = "none",
        relu_after_upconv: bool = True,
        init: str = "xavier",
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.residual = residual
        self.encoder = ConvEncoder(channels, latent, features, depth, norm, init)
        self.convlstm = ConvLSTM(latent, list(hidden) if hidden else [latent], kernel_size)
        self.decoder = ConvDecoder(
            self.convlstm.out_channels, channels, features, depth, norm, relu_after_upconv, init, change=residual
        )

    def latents(self, frames: torch.Tensor) -> torch.Tensor:
        """The latent map of each input frame: (N, t, C, H, W) -> (N, t, latent, H / 2**depth, W / 2**depth)."""
        if frames.ndim != 5 or frames.shape[2] != self.channels:
            raise ValueError(
                f"RecurrentAutoencoder expects (N, t, {self.channels}, H, W) frames, got {tuple(frames.shape)}"
            )
        n, t = frames.shape[:2]
        return self.encoder(frames.flatten(0, 1)).unflatten(0, (n, t))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, t, C, H, W) -> predicted frame t+1 (N, C, H, W)."""
        outputs, _ = self.convlstm.sequence(self.latents(frames))
        decoded = self.decoder(outputs[:, -1])
        return add_change(frames[:, -1], decoded) if self.residual else decoded
