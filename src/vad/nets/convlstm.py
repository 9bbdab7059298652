"""Convolutional LSTM (Shi et al., NeurIPS 2015): a cell and a multi-layer stack whose state persists across steps.

    lstm = ConvLSTM(in_channels=3, hidden=(64, 64))        # two layers, 3x3 gates
    state = None                                           # zeros at the first step
    for x in frames.unbind(1):                             # (N, T, C, H, W) -> T steps of (N, C, H, W)
        h, state = lstm(x, state)                          # h: the last layer's hidden state (N, 64, H, W)
    outputs, state = lstm.sequence(frames)                 # the same loop: (N, T, 64, H, W) and the final state

The state is explicit: ``state`` goes in and comes out of every call as one ``(h, c)`` pair per layer, so a caller
carries it from step to step. (The released r-GAN code builds a fresh zero state inside its time loop, so its
"recurrent" generator sees only the last frame; tests/test_rgan.py shows what that does to the prediction.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: one (h, c) pair, each (N, hidden, H, W)
State = tuple[torch.Tensor, torch.Tensor]


class ConvLSTMCell(nn.Module):
    """One ConvLSTM layer: a single convolution over cat[x, h] gives the four gates.

    [i, f, o, g] = conv_k(cat[x_t, h_{t-1}]) split on channels;  i, f, o = sigmoid(.), g = tanh(.)
    c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)

    Input x (N, in_channels, H, W), state (h, c) each (N, hidden, H, W) (zeros when None); returns the new (h, c).
    Parameters: (in_channels + hidden) * 4 hidden * k^2 + 4 hidden (bias). The forget gate's bias starts at
    ``forget_bias`` (1, Jozefowicz et al. 2015) so the cell carries its memory from the start of training; the
    convolution weights are Xavier-uniform, the other biases 0.
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3, forget_bias: float = 1.0) -> None:
        super().__init__()
        if in_channels < 1 or hidden < 1:
            raise ValueError(f"ConvLSTMCell needs in_channels and hidden >= 1, got {in_channels} and {hidden}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-size output), got {kernel_size}")
        self.in_channels = in_channels
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)
        nn.init.xavier_uniform_(self.gates.weight)
        nn.init.zeros_(self.gates.bias)
        with torch.no_grad():
            self.gates.bias[hidden : 2 * hidden] = forget_bias

    def zero_state(self, x: torch.Tensor) -> State:
        """The zero (h, c) for an input batch like ``x``."""
        zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])
        return zeros, zeros.clone()

    def forward(self, x: torch.Tensor, state: State | None = None) -> State:
        """x (N, in_channels, H, W), (h, c) or None -> the next (h, c), each (N, hidden, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ConvLSTMCell expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        h, c = self.zero_state(x) if state is None else state
        if h.shape[0] != x.shape[0] or h.shape[2:] != x.shape[2:]:
            raise ValueError(f"state (N, C, H, W) {tuple(h.shape)} does not fit the input {tuple(x.shape)}")
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """A stack of ConvLSTM layers: layer l reads layer l-1's new hidden state (layer 0 reads the input).

    Args:
        in_channels: channels of each step's input.
        hidden: hidden channels of each layer, bottom first (one layer per entry).
        kernel_size: the gates' convolution size (odd).
        forget_bias: initial bias of the forget gates.

    ``forward(x, state)`` runs ONE time step: x (N, in_channels, H, W) and the per-layer ``[(h, c), ...]`` (None:
    zeros) -> (the top layer's h, the new per-layer state). ``sequence(xs, state)`` runs them all in order.
    Parameters: sum over layers of (c_in + h_l) * 4 h_l * k^2 + 4 h_l, c_in = in_channels for layer 0, h_{l-1} after.
    """

    def __init__(self, in_channels: int, hidden: Sequence[int], kernel_size: int = 3, forget_bias: float = 1.0) -> None:
        super().__init__()
        hidden = list(hidden)
        if not hidden:
            raise ValueError("ConvLSTM needs at least one layer: give hidden=[channels, ...]")
        self.in_channels = in_channels
        self.hidden = hidden
        self.out_channels = hidden[-1]
        self.layers = nn.ModuleList(
            ConvLSTMCell(c_in, h, kernel_size, forget_bias)
            for c_in, h in zip([in_channels, *hidden[:-1]], hidden, strict=True)
        )

    def forward(self, x: torch.Tensor, state: Sequence[State] | None = None) -> tuple[torch.Tensor, list[State]]:
        """One step: x (N, in_channels, H, W), per-layer (h, c) or None -> (top h (N, hidden[-1], H, W), state)."""
        if state is not None and len(state) != len(self.layers):
            raise ValueError(f"state holds {len(state)} (h, c) pairs for {len(self.layers)} layers")
        new_state: list[State] = []
        for index, layer in enumerate(self.layers):
            h, c = layer(x, None if state is None else state[index])
            new_state.append((h, c))
            x = h
        return x, new_state

    def sequence(self, xs: torch.Tensor, state: Sequence[State] | None = None) -> tuple[torch.Tensor, list[State]]:
        """All steps in order: xs (N, T, in_channels, H, W) -> top h of every step (N, T, hidden[-1], H, W) and
        the state after the last step; the state of each step is the next step's input state."""
        if xs.ndim != 5:
            raise ValueError(f"ConvLSTM.sequence expects (N, T, C, H, W), got {tuple(xs.shape)}")
        outputs = []
        for x in xs.unbind(dim=1):
            h, state = self(x, state)
            outputs.append(h)
        return torch.stack(outputs, dim=1), list(state or [])
