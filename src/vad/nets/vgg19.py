"""VGG19's convolutional features for a perceptual loss, loaded from a torchvision-format state dict WITHOUT
torchvision (whose PyPI build does not load beside the CPU torch this suite pins).

    net = VGG19Features("vgg19-dcbb9e9d.pth")           # torchvision's ImageNet weights, downloaded by the user
    maps = net(frames)                                  # (N, C, H, W) in [-1, 1] -> relu1_2 .. relu4_4 maps
    loss = perceptual_loss(net, prediction, target)     # mean over the LAYERS of the feature MSE

The layers are built exactly as torchvision's ``vgg19().features`` (so its keys ``features.<i>.weight`` load as they
are); only the layers up to the deepest one used are kept. Grey frames are repeated to three channels and every frame
is mapped from [-1, 1] to ImageNet's normalisation. The thesis's perceptual loss indexed the batch instead of the
layers (``features[i]`` for i in range(batch)); here the loss is the mean over the chosen layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vad.errors import ConfigError

#: torchvision's VGG19 configuration "E": channel widths, "M" = max-pool
CONFIG_E = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
#: index in ``features`` of the ReLU after the named convolution
RELU = {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26, "relu5_4": 35}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def vgg19_layers() -> nn.Sequential:
    """torchvision's ``vgg19().features`` (same module indices, so the same state-dict keys)."""
    layers: list[nn.Module] = []
    channels = 3
    for width in CONFIG_E:
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(width), 3, padding=1), nn.ReLU(inplace=True)]
            channels = int(width)
    return nn.Sequential(*layers)


class VGG19Features(nn.Module):
    """Frozen VGG19 features at ``layers`` (names of :data:`RELU`) from the state dict in ``weights``.

    The file is a torchvision VGG19 state dict (``features.*`` and ``classifier.*`` keys; the classifier is ignored),
    or a dict holding one under ``state_dict``. A missing file, or one of another architecture, is refused with one
    line naming the file and what was expected.
    """

    differentiable = True

    def __init__(
        self, weights: str | Path | None, layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_4", "relu4_4")
    ) -> None:
        super().__init__()
        unknown = sorted(set(layers) - set(RELU))
        if unknown or not layers:
            raise ConfigError(f"perceptual.layers: {list(layers)}; choose from {list(RELU)}")
        self.layers = tuple(layers)
        deepest = max(RELU[name] for name in self.layers)
        self.features = vgg19_layers()[: deepest + 1]
        self._load(weights)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def _load(self, weights: str | Path | None) -> None:
        fix = (
            "give perceptual.weights the path of torchvision's VGG19 ImageNet state dict (vgg19-dcbb9e9d.pth), "
            "or set model.loss.perceptual=0"
        )
        if weights is None:
            raise ConfigError(f"perceptual.weights is not set; {fix}")
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"perceptual.weights: {path} not found; {fix}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # any unreadable file: the same one-line answer
            raise ConfigError(
                f"perceptual.weights: {path} is not a readable torch state dict ({error}); {fix}"
            ) from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        wanted = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        missing = sorted(k for k in wanted if k not in state)
        wrong = sorted(k for k in wanted if k in state and tuple(state[k].shape) != tuple(wanted[k].shape))
        if missing or wrong:
            detail = f"missing {missing[:3]}" if missing else f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}"
            raise ConfigError(
                f"perceptual.weights: {path} is not a torchvision VGG19 state dict ({detail}; expected "
                f"{tuple(wanted[(missing or wrong)[0]].shape)}); {fix}"
            )
        self.features.load_state_dict({k.removeprefix("features."): state[k] for k in wanted})

    def forward(self, frames: torch.Tensor) -> list[torch.Tensor]:
        x = frames.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = ((x + 1) / 2 - self.mean) / self.std
        taps = {RELU[name] for name in self.layers}
        maps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in taps:
                maps.append(x)
        return maps


def no_perceptual() -> None:
    """The value of ``perceptual=none``: no feature extractor (a perceptual term then cannot be weighted)."""
    return None


def perceptual_loss(net: VGG19Features, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the net's layers of the MSE between the feature maps of ``prediction`` and ``target``."""
    with torch.no_grad():
        wanted = net(target)
    got = net(prediction)
    return torch.stack([torch.mean((a - b) ** 2) for a, b in zip(got, wanted, strict=True)]).mean()
