"""r-GAN — the recurrent frame predictor of "Few-shot Scene-adaptive Anomaly Detection" (Lu, Yu, Reddy, Wang,
ECCV 2020, supplementary), trained as a plain (not meta-learned) detector.

Each of t = 3 input frames goes through the FFP U-Net; a ConvLSTM reads the U-Net's per-frame predictions in order,
carrying its state across the steps, and its final hidden state yields the prediction of frame t+1
(:class:`vad.nets.rgan.RecurrentUNet`). The generator minimises L1 + (1 - MS-SSIM) / 2 + gradient difference (the
paper's eq. 2; Mathieu et al.'s form without padding) + an LSGAN adversarial term against FFP's PatchGAN
discriminator (eq. 3: D minimises 0.5 (D(G) - 1)^2 + 0.5 D(P)^2). The per-frame anomaly score is the same
prediction loss on the test frame (higher = more anomalous), min-max normalised per video; the PSNR of the
prediction is a second signal.

What this fixes of the released code (meta-training only; there is no released test code): the ConvLSTM state
persists across the time steps (the released generator re-initialises it inside its time loop, so it predicts from
the last frame alone); the discriminator is the paper's LSGAN (the code uses BCE with 0.9 / 0.1 labels); the
gradient difference term of the paper is part of the loss (the code leaves it out). Kept from the code: Adam with
betas (0.5, 0.999), G 2e-4, D 1e-5. The adversarial weight is FFP's 0.05 (same discriminator and U-Net family;
the released code weights its BCE term 1). MS-SSIM uses as many scales as the working size allows (5 need 176 px;
3 at 64x64, 4 at 128x128), recorded in the run's hyper-parameters (``msssim``).

    python -m vad.train model=rgan dataset=ped2                  # or experiment=rgan_ped2 trainer=gpu (256x256)
    python -m vad.train experiment=rgan_ped2_cpu paths.data_dir=<folder holding ped2>
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from vad.methods import panels
from vad.methods.base import Clip
from vad.methods.frame_predictor import Prediction
from vad.methods.recurrent_gan import RecurrentGAN
from vad.nets.rgan import RecurrentUNet


class RGAN(RecurrentGAN):
    """r-GAN: U-Net per frame + ConvLSTM generator, LSGAN PatchGAN discriminator (see the module docstring); the
    arguments are :class:`~vad.methods.recurrent_gan.RecurrentGAN`'s, with ``generator`` the keyword arguments of
    :class:`vad.nets.rgan.RecurrentUNet` (features, depth, hidden, kernel_size, norm, relu_after_upconv, init,
    residual)."""

    def build_generator(self, config: dict[str, Any]) -> nn.Module:
        return RecurrentUNet(self.channels, **config)

    def forward_clip(self, clip: Clip) -> Prediction:
        frame, steps = self.generator(clip.inputs, return_steps=True)
        return Prediction(frame, {"steps": steps})

    def sample_panels(self, batch: Mapping[str, Any]) -> dict[str, panels.Panel]:
        """Last input, prediction, target, error map, then the U-Net's prediction from each input frame (what the
        ConvLSTM reads)."""
        shown = super().sample_panels(batch)
        steps = self.forward_clip(self.split_clip(batch["frames"])).extras["steps"]
        for k in range(steps.shape[1]):
            shown[f"U-Net, frame {k + 1}"] = panels.image(steps[:, k])
        return shown
