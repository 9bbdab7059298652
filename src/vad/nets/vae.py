"""r-VAE's generator: a VGG16-like variational encoder-decoder predicts the next frame from each input frame, and a
ConvLSTM reads those predictions in order.

    net = RecurrentVAE(channels=3)                      # VGG16 widths 64-512, 8x8x64 latent at 256x256
    out = net(clip[:, :3])                              # (N, 3, 3, 256, 256) in [-1, 1]
    out.prediction, out.steps, out.mu, out.logvar       # (N, 3, 256, 256), (N, 3, 3, 256, 256), (N, 3, 64, 8, 8) x 2

``residual=True`` (not in the paper) predicts changes instead of frames: P_T = clip(I_T + D(z_T), -1, 1) and the
final prediction clip(I_t + conv3x3(h_t), -1, 1), both last convolutions starting near zero, as in
``vad.nets.rgan.RecurrentUNet``.

At 256x256 with 3 colour input frames and the defaults: 26,723,270 parameters (encoder 14,780,352: VGG16's 13
convolutions, 14,714,688, plus the 1x1 mean and log-variance heads; decoder 11,491,395; ConvLSTM 449,792; read-out
1,731).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from vad.nets.convlstm import ConvLSTM
from vad.nets.rgan import add_change, init_change_conv
from vad.nets.unet import check_frame_stack, init_weights

#: convolutions per block of VGG16 (each block ends with a 2x2 max-pool); block b is features * min(2**b, 8) wide
VGG16_BLOCKS = (2, 2, 3, 3, 3)


def _block_widths(features: int, blocks: Sequence[int]) -> list[int]:
    return [features * min(2**b, 8) for b in range(len(blocks))]


def _convs(c_in: int, width: int, count: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for k in range(count):
        layers += [nn.Conv2d(c_in if k == 0 else width, width, 3, padding=1), nn.ReLU(inplace=True)]
    return layers


class VGGEncoder(nn.Module):
    """q(z | I): VGG16-like blocks of 3x3 conv + ReLU, each followed by a 2x2 max-pool, then two 1x1 convs to the
    posterior's mean and log-variance. (N, C, H, W) in [-1, 1] -> mu, logvar (N, latent, H / 2**B, W / 2**B) for B
    blocks; H and W multiples of 2**B."""

    def __init__(self, in_channels: int, latent: int, features: int = 64, blocks: Sequence[int] = VGG16_BLOCKS) -> None:
        super().__init__()
        if not blocks or min(blocks) < 1 or features < 1 or latent < 1:
            raise ValueError(f"blocks must be >= 1 convs each, features and latent >= 1; got {blocks}, {features}")
        self.in_channels = in_channels
        self.size_multiple = 2 ** len(blocks)
        layers: list[nn.Module] = []
        c_in = in_channels
        for width, count in zip(_block_widths(features, blocks), blocks, strict=True):
            layers += [*_convs(c_in, width, count), nn.MaxPool2d(2)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.mu = nn.Conv2d(c_in, latent, 1)
        self.logvar = nn.Conv2d(c_in, latent, 1)
        init_weights(self, "xavier")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_frame_stack(x, "VGGEncoder", self.in_channels, self.size_multiple, why=" (2**blocks)")
        h = self.features(x)
        return self.mu(h), self.logvar(h)


class VGGDecoder(nn.Module):
    """p(I' | z), the encoder's mirror: a 3x3 conv + ReLU from ``latent`` to the deepest width, then for each block
    from the deepest a 2x2 stride-2 transposed conv + ReLU to the next shallower width and the block's 3x3 convs +
    ReLU, a 3x3 conv and tanh to ``out_channels``. (N, latent, h, w) -> (N, out_channels, h * 2**B, w * 2**B). With
    ``change`` the last conv starts near zero and has no tanh: the output is a change to add to a frame."""

    def __init__(
        self,
        latent: int,
        out_channels: int,
        features: int = 64,
        blocks: Sequence[int] = VGG16_BLOCKS,
        change: bool = False,
    ) -> None:
        super().__init__()
        self.change = change
        widths = _block_widths(features, blocks)
        layers: list[nn.Module] = [nn.Conv2d(latent, widths[-1], 3, padding=1), nn.ReLU(inplace=True)]
        for b in reversed(range(len(blocks))):
            shallower = widths[max(b - 1, 0)]
            layers += [nn.ConvTranspose2d(widths[b], shallower, 2, stride=2), nn.ReLU(inplace=True)]
            layers += _convs(shallower, shallower, blocks[b])
        layers.append(nn.Conv2d(widths[0], out_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)
        init_weights(self, "xavier")
        if change:
            init_change_conv(self.layers[-1])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.layers(z)
        return out if self.change else torch.tanh(out)


class VAEPrediction(NamedTuple):
    """What :class:`RecurrentVAE` makes of t input frames: the ``prediction`` of frame t+1 (N, C, H, W); the
    decoder's per-step predictions ``steps`` of frames 2..t+1 (N, t, C, H, W); the posteriors' ``mu`` and
    ``logvar`` (N, t, latent, h, w)."""

    prediction: torch.Tensor
    steps: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


class RecurrentVAE(nn.Module):
    """r-VAE's generator (Lu et al., ECCV 2020, supplementary).

    For T = 1..t: (mu_T, logvar_T) = E(I_T); z_T = mu_T + exp(logvar_T / 2) * eps in training (reparameterised),
    z_T = mu_T in eval mode (deterministic scores); P_T = D(z_T), the prediction of I_{T+1}; (h_T, c_T) =
    ConvLSTM(P_T, (h_{T-1}, c_{T-1})), (h_0, c_0) = 0; prediction of I_{t+1} = tanh(conv3x3(h_t)). With
    ``residual``: P_T = clip(I_T + D(z_T), -1, 1) and the prediction clip(I_t + conv3x3(h_t), -1, 1).

    Args:
        channels: image channels C (in and out).
        features: the first block's width (64 in VGG16); block b is ``features * min(2**b, 8)`` wide.
        blocks: convolutions per block (VGG16: 2, 2, 3, 3, 3); one 2x2 pooling per block.
        latent: channels of z.
        hidden: the ConvLSTM layers' widths over the predictions (full resolution).
        kernel_size: the ConvLSTM gates' convolution size.
        residual: predict changes from the input frames (last convolutions initialised near zero).

    Input (N, t, C, H, W) in [-1, 1], H and W multiples of 2**len(blocks).
    """

    def __init__(
        self,
        channels: int,
        features: int = 64,
        blocks: Sequence[int] = VGG16_BLOCKS,
        latent: int = 64,
        hidden: Sequence[int] = (64, 64),
        kernel_size: int = 3,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.residual = residual
        self.encoder = VGGEncoder(channels, latent, features, blocks)
        self.decoder = VGGDecoder(latent, channels, features, blocks, change=residual)
        self.convlstm = ConvLSTM(channels, hidden, kernel_size)
        self.read_out = nn.Conv2d(self.convlstm.out_channels, channels, 3, padding=1)
        init_weights(self.read_out, "xavier")
        if residual:
            init_change_conv(self.read_out)

    def forward(self, frames: torch.Tensor) -> VAEPrediction:
        """(N, t, C, H, W) -> :class:`VAEPrediction`."""
        if frames.ndim != 5 or frames.shape[2] != self.channels:
            raise ValueError(f"RecurrentVAE expects (N, t, {self.channels}, H, W) frames, got {tuple(frames.shape)}")
        n, t = frames.shape[:2]
        mu, logvar = self.encoder(frames.flatten(0, 1))
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        steps = self.decoder(z).unflatten(0, (n, t))
        if self.residual:
            steps = add_change(frames, steps)
        outputs, _ = self.convlstm.sequence(steps)
        change = self.read_out(outputs[:, -1])
        prediction = add_change(frames[:, -1], change) if self.residual else torch.tanh(change)
        return VAEPrediction(prediction, steps, mu.unflatten(0, (n, t)), logvar.unflatten(0, (n, t)))
