"""ConvLSTM cell and stack: the gate equations, explicit state in and out, persistence across a sequence, sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vad.nets.convlstm import ConvLSTM, ConvLSTMCell


def test_cell_computes_the_lstm_gates_from_one_convolution() -> None:
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 3, kernel_size=3)
    x, h, c = torch.randn(2, 2, 5, 6), torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    gates = F.conv2d(torch.cat([x, h], 1), cell.gates.weight, cell.gates.bias, padding=1)
    i, f, o, g = gates[:, 0:3], gates[:, 3:6], gates[:, 6:9], gates[:, 9:12]
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next = torch.sigmoid(o) * torch.tanh(c_next)
    got_h, got_c = cell(x, (h, c))
    torch.testing.assert_close(got_c, c_next)
    torch.testing.assert_close(got_h, h_next)
    # no state: zeros
    zero_h, zero_c = cell(x, None)
    torch.testing.assert_close((zero_h, zero_c), cell(x, (torch.zeros_like(h), torch.zeros_like(c))))


def test_initialisation_and_parameter_count() -> None:
    cell = ConvLSTMCell(4, 8, kernel_size=5, forget_bias=1.0)
    assert torch.equal(cell.gates.bias[8:16], torch.ones(8))
    assert torch.equal(cell.gates.bias[:8], torch.zeros(8))
    assert sum(p.numel() for p in cell.parameters()) == (4 + 8) * 4 * 8 * 25 + 4 * 8
    stack = ConvLSTM(3, [16, 8], kernel_size=3)
    expected = (3 + 16) * 64 * 9 + 64 + (16 + 8) * 32 * 9 + 32
    assert sum(p.numel() for p in stack.parameters()) == expected
    assert stack.out_channels == 8


def test_the_state_persists_across_a_sequence() -> None:
    torch.manual_seed(0)
    stack = ConvLSTM(1, [4, 3])
    xs = torch.randn(2, 4, 1, 8, 8)
    outputs, state = stack.sequence(xs)
    assert outputs.shape == (2, 4, 3, 8, 8)
    assert len(state) == 2
    assert [tuple(h.shape) for h, _ in state] == [(2, 4, 8, 8), (2, 3, 8, 8)]
    carried = None
    for step in range(4):
        h, carried = stack(xs[:, step], carried)
        torch.testing.assert_close(h, outputs[:, step])
    # the first frame reaches the last output through the carried state
    changed = xs.clone()
    changed[:, 0] += 1.0
    assert not torch.allclose(stack.sequence(changed)[0][:, -1], outputs[:, -1])
    # a state restarted at every step forgets it
    restarted = [stack(x, None)[0] for x in xs.unbind(1)]
    torch.testing.assert_close(restarted[-1], stack(changed[:, -1], None)[0])


def test_bad_shapes_are_refused() -> None:
    stack = ConvLSTM(2, [4])
    with pytest.raises(ValueError, match=r"ConvLSTMCell expects \(N, 2, H, W\), got \(1, 3, 8, 8\)"):
        stack(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"state holds 2 \(h, c\) pairs for 1 layers"):
        stack(torch.zeros(1, 2, 8, 8), [(torch.zeros(1, 4, 8, 8),) * 2] * 2)
    with pytest.raises(ValueError, match="does not fit the input"):
        stack(torch.zeros(1, 2, 8, 8), [(torch.zeros(1, 4, 4, 4),) * 2])
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConvLSTMCell(1, 1, kernel_size=2)
    with pytest.raises(ValueError, match="at least one layer"):
        ConvLSTM(1, [])
