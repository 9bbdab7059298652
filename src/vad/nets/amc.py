"""The generators of AMC (Nguyen & Meunier, ICCV 2019) and of the two-branch appearance-motion co-memory network.

    net = AMCNet(in_channels=1)                    # one grey frame -> (its reconstruction, (dx, dy, magnitude))
    frame, flow = net(x)                           # (N, 1, H, W) in [-1, 1] -> (N, 1, H, W) in [-1, 1], (N, 3, H, W)

    net = CoMemoryNet(channels=1, inputs=4)        # t = 4 grey frames -> the next frame and the last pair's flow
    out = net(frames)                              # (N, 4, 1, H, W) -> out.frame (N, 1, H, W), out.flow (N, 2, H, W)

AMC: a shared encoder of ``depth`` levels (w, 2w, ..., 2^(depth-1) w channels; [3x3 conv -> BatchNorm -> ReLU] x 2
per level, 2x2 max-pool between levels), an appearance decoder WITHOUT skips that reconstructs the input frame
(the bottleneck alone must carry the appearance), and a motion decoder WITH U-Net skips that predicts the optical
flow from the frame to the next one as (dx, dy, magnitude), unbounded (pixels). Both decoders: 2x2 transposed conv
stride 2, then the double conv; dropout on the appearance path as in AMC's decoder.

Co-memory (the seed's design, on MNAD's nets): a motion branch (MNAD encoder on the last two input frames ->
queries -> its own memory -> concat[query, read] -> MNAD decoder with linear output) predicts the flow; an
appearance branch (MNAD encoder on the t input frames -> queries -> appearance memory -> concat[query, read]) feeds
an MNAD decoder with U-Net skips that also takes the motion branch's concat[query, read] and predicts the next frame.
Without the motion memory (``motion_memory=False``, the seed's ablation) the motion decoder and the appearance
decoder take the motion queries alone.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import nn

from vad.nets.memory import Memory, MemoryRead
from vad.nets.mnad import MNADDecoder, MNADEncoder
from vad.nets.unet import DoubleConv, check_frame_stack


class AMCNet(nn.Module):
    """Shared encoder -> appearance decoder (no skips, reconstructs the frame) and motion decoder (skips, predicts
    (dx, dy, magnitude)).

    Args:
        in_channels: image channels of the input frame (1 or 3); the reconstruction has as many.
        features: w, the width of the first level.
        depth: encoder levels (3 pooling steps at depth 4: H and W must be divisible by 2^(depth - 1)).
        dropout: dropout probability on the appearance decoder's levels.
    """

    def __init__(self, in_channels: int, features: int = 32, depth: int = 4, dropout: float = 0.3) -> None:
        super().__init__()
        if features < 1 or depth < 2:
            raise ValueError(f"features must be >= 1 and depth >= 2, got {features} and {depth}")
        self.in_channels = in_channels
        self.size_multiple = 2 ** (depth - 1)
        widths = [features * 2**i for i in range(depth)]
        self.encoder = nn.ModuleList(
            [DoubleConv(in_channels, widths[0], norm="batch")]
            + [DoubleConv(widths[i - 1], widths[i], norm="batch") for i in range(1, depth)]
        )
        self.pool = nn.MaxPool2d(2)
        ups = list(reversed(widths))
        self.appearance_up = nn.ModuleList([nn.ConvTranspose2d(a, b, 2, stride=2) for a, b in itertools.pairwise(ups)])
        self.appearance_blocks = nn.ModuleList(
            [nn.Sequential(DoubleConv(b, b, norm="batch"), nn.Dropout2d(dropout)) for b in ups[1:]]
        )
        self.appearance_head = nn.Sequential(nn.Conv2d(widths[0], in_channels, 3, padding=1), nn.Tanh())
        self.motion_up = nn.ModuleList([nn.ConvTranspose2d(a, b, 2, stride=2) for a, b in itertools.pairwise(ups)])
        self.motion_blocks = nn.ModuleList([DoubleConv(2 * b, b, norm="batch") for b in ups[1:]])
        self.motion_head = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) frame in [-1, 1] -> (reconstruction (N, C, H, W) in [-1, 1], flow (N, 3, H, W))."""
        check_frame_stack(x, "AMCNet", self.in_channels, self.size_multiple)
        skips = []
        for i, level in enumerate(self.encoder):
            x = level(x if i == 0 else self.pool(x))
            skips.append(x)
        bottleneck = skips.pop()
        frame = bottleneck
        for up, stage in zip(self.appearance_up, self.appearance_blocks, strict=True):
            frame = stage(up(frame))
        motion = bottleneck
        for up, stage, skip in zip(self.motion_up, self.motion_blocks, reversed(skips), strict=True):
            motion = stage(torch.cat([skip, up(motion)], dim=1))
        return self.appearance_head(frame), self.motion_head(motion)


class CoMemoryOutput(NamedTuple):
    """What :class:`CoMemoryNet` makes of a clip: the predicted next ``frame``, the predicted ``flow`` (N, 2, H, W)
    and the two memory reads (``motion_read`` None without the motion memory)."""

    frame: torch.Tensor
    flow: torch.Tensor
    appearance_read: MemoryRead
    motion_read: MemoryRead | None


class CoMemoryNet(nn.Module):
    """Two branches with a memory each; see the module docstring.

    Args:
        channels: image channels (1 or 3).
        inputs: t, the input frames of the appearance branch (the motion branch takes the last two; t >= 2).
        features: w of both MNAD encoders (queries and items of 8w features).
        appearance_items, motion_items: memory sizes (10 / 10 in the seed).
        motion_memory: False for the seed's ablation without the motion memory.
        motion_skips: U-Net skips in the motion decoder (off by default: the memory is then the only path from the
            encoder to the flow, so motion unlike the memorised normal motion cannot be rebuilt).
        memory: further keyword arguments of both :class:`vad.nets.Memory` (``update_max``, ``read_grad``).
    """

    def __init__(
        self,
        channels: int,
        inputs: int,
        features: int = 64,
        appearance_items: int = 10,
        motion_items: int = 10,
        motion_memory: bool = True,
        motion_skips: bool = False,
        memory: dict | None = None,
    ) -> None:
        super().__init__()
        if inputs < 2:
            raise ValueError(f"the motion branch needs two input frames: inputs must be >= 2, got {inputs}")
        self.channels = channels
        self.inputs = inputs
        self.appearance_encoder = MNADEncoder(inputs * channels, features)
        self.motion_encoder = MNADEncoder(2 * channels, features)
        width = self.appearance_encoder.out_channels
        options = dict(memory or {})
        self.appearance_memory = Memory(appearance_items, width, **options)
        self.motion_memory = Memory(motion_items, width, **options) if motion_memory else None
        motion_width = 2 * width if motion_memory else width
        self.motion_decoder = MNADDecoder(2, features, skips=motion_skips, in_channels=motion_width, output="linear")
        self.appearance_decoder = MNADDecoder(channels, features, skips=True, in_channels=2 * width + motion_width)

    @property
    def memories(self) -> dict[str, Memory]:
        """The memories by branch name."""
        out = {"appearance": self.appearance_memory}
        if self.motion_memory is not None:
            out["motion"] = self.motion_memory
        return out

    def forward(self, frames: torch.Tensor, items: dict[str, torch.Tensor] | None = None) -> CoMemoryOutput:
        """``frames`` (N, t, C, H, W) in [-1, 1]; ``items`` optional memories to read instead of the trained ones
        (by branch name)."""
        if frames.ndim != 5 or frames.shape[1] != self.inputs:
            raise ValueError(f"CoMemoryNet expects (N, {self.inputs}, C, H, W) frames, got {tuple(frames.shape)}")
        items = items or {}
        queries, skips = self.appearance_encoder(frames.flatten(1, 2))
        appearance = self.appearance_memory(queries, items.get("appearance"))
        motion_queries, motion_skips = self.motion_encoder(frames[:, -2:].flatten(1, 2))
        motion = None
        if self.motion_memory is not None:
            motion = self.motion_memory(motion_queries, items.get("motion"))
            motion_features = motion.decoder_input()
        else:
            motion_features = motion_queries
        flow = self.motion_decoder(motion_features, motion_skips if self.motion_decoder.uses_skips else None)
        frame = self.appearance_decoder(torch.cat([appearance.decoder_input(), motion_features], dim=1), skips)
        return CoMemoryOutput(frame, flow, appearance, motion)
