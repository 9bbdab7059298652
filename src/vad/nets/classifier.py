"""The OGNet-style frame classifier of the pseudo-anomaly method: is this frame a pseudo-anomaly or a normal one?

    net = FrameClassifier(in_channels=3)            # conv5x5 s2 64-128-256-512, BN, LeakyReLU, linear -> 2
    logits = net(frames)                            # (N, 3, H, W) in [-1, 1] -> (N, 2): [normal, pseudo-anomaly]

Four 5x5 convolutions of stride 2 (BatchNorm after all but the first, LeakyReLU 0.2), global average pooling and a
linear layer to two logits. OGNet flattens a fixed-size map into its linear layer; the pooling makes the classifier
work at any working size (64x64 on CPU, 256x256 in the papers).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: the index of the pseudo-anomaly class in the logits
ABNORMAL = 1


class FrameClassifier(nn.Module):
    """Frames (N, C, H, W) in [-1, 1] -> logits (N, 2) of [normal, pseudo-anomaly]."""

    def __init__(self, in_channels: int, features: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        if not features:
            raise ValueError("features must name at least one layer width")
        layers: list[nn.Module] = []
        previous = in_channels
        for k, width in enumerate(features):
            layers.append(nn.Conv2d(previous, width, 5, stride=2, padding=2, bias=k == 0))
            if k:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous, 2)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(frames).mean(dim=(2, 3)))

    def abnormal_probability(self, frames: torch.Tensor) -> torch.Tensor:
        """P(pseudo-anomaly) per frame, (N,)."""
        return self(frames).float().softmax(dim=1)[:, ABNORMAL]
