"""r-GAN* — r-GAN with its recurrence in an autoencoder's latent space (Lu, Yu, Reddy, Wang, ECCV 2020,
supplementary), which exists only in the paper.

An autoencoder with the FFP U-Net's structure but no skip connections encodes each of the t = 3 input frames to a
16x16x32 latent map (at 256x256); a ConvLSTM reads the latent maps in order, its state carried across the steps, and
the decoder upsamples its final hidden state to the prediction of frame t+1 (:class:`vad.nets.autoencoder.
RecurrentAutoencoder`). Everything else is r-GAN's (:mod:`vad.methods.recurrent_gan`): L1 + (1 - MS-SSIM)/2 + gradient
difference + LSGAN PatchGAN, the per-frame prediction loss as the score, PSNR beside it, the released code's Adam
settings.

    python -m vad.train model=rgan_latent dataset=ped2            # or experiment=rgan_latent_ped2 trainer=gpu
    python -m vad.train experiment=rgan_latent_ped2_cpu paths.data_dir=<folder holding ped2>
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vad.methods.base import Clip
from vad.methods.frame_predictor import Prediction
from vad.methods.recurrent_gan import RecurrentGAN
from vad.nets.autoencoder import RecurrentAutoencoder


class RGANLatent(RecurrentGAN):
    """r-GAN* (see the module docstring); the arguments are r-GAN's (:class:`~vad.methods.recurrent_gan.RecurrentGAN`),
    with ``generator`` the keyword arguments of :class:`~vad.nets.autoencoder.RecurrentAutoencoder` (features, depth,
    latent, hidden, kernel_size, norm, relu_after_upconv, init, residual)."""

    def build_generator(self, config: dict[str, Any]) -> nn.Module:
        return RecurrentAutoencoder(self.channels, **config)

    def forward_clip(self, clip: Clip) -> Prediction:
        return Prediction(self.generator(clip.inputs))
