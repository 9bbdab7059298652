"""The memory module: the update rule on a hand-made example, the read, and the buffer's life (checkpoint, .to())."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from vad.nets import Memory

E1, E2, E3 = (1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0)
# Five unit queries (C = 4) and their cosine scores with E1, E2, E3; the nearest item of each is marked.
Q1 = (1.0, 0.0, 0.0, 0.0)  # S = (1, 0, 0)        -> E1
Q2 = (0.6, 0.8, 0.0, 0.0)  # S = (0.6, 0.8, 0)    -> E2
Q3 = (0.0, 0.8, 0.6, 0.0)  # S = (0, 0.8, 0.6)    -> E2
Q4 = (0.8, 0.0, 0.6, 0.0)  # S = (0.8, 0, 0.6)    -> E1
Q5 = (0.0, 0.0, 0.28, 0.96)  # S = (0, 0, 0.28)   -> E3 (Q3 and Q4 score higher with E3 but belong elsewhere)


def hand_memory(update_max: str = "assigned") -> Memory:
    memory = Memory(num_items=3, features=4, update_max=update_max)
    memory.items.copy_(torch.tensor([E1, E2, E3]))
    return memory


def hand_features() -> torch.Tensor:
    """The five queries as a (1, 4, 1, 5) feature map, each scaled by a different factor (reading normalises)."""
    queries = torch.tensor([Q1, Q2, Q3, Q4, Q5]) * torch.tensor([[2.0], [0.5], [3.0], [1.0], [7.0]])
    return queries.t().reshape(1, 4, 1, 5)


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def test_one_update_gives_the_hand_computed_items() -> None:
    # v = softmax over queries, so v[k, m] / max_k' v[k', m] = exp(S[k, m] - max_k' S[k', m]).
    # E1 <- E1 + 1 * Q1 + exp(0.8 - 1) Q4;  E2 <- E2 + Q2 + Q3 (both score 0.8, the max);  E3 <- E3 + w Q5 with w = 1
    # over the assigned queries (paper) or exp(0.28 - 0.6) over all queries (the reference code: Q3, Q4 score 0.6).
    a = math.exp(-0.2)
    expected_e1 = unit(2 + 0.8 * a, 0, 0.6 * a, 0)
    expected_e2 = unit(0.6, 2.6, 0.6, 0)
    memory = hand_memory("assigned")
    out = memory(hand_features())
    assert out.nearest.tolist() == [0, 1, 1, 0, 2]
    memory.update_(out)
    expected = torch.tensor([expected_e1, expected_e2, [0, 0, 0.8, 0.6]])  # (1.28, 0.96) / 1.6
    torch.testing.assert_close(memory.items, expected, rtol=0, atol=1e-6)

    memory = hand_memory("all")
    memory.update_(memory(hand_features()))
    b = math.exp(0.28 - 0.6)
    expected = torch.tensor([expected_e1, expected_e2, unit(0, 0, 1 + 0.28 * b, 0.96 * b)])
    torch.testing.assert_close(memory.items, expected, rtol=0, atol=1e-6)


def test_an_item_no_query_chose_keeps_its_value() -> None:
    memory = hand_memory()
    features = torch.tensor([Q4, Q2]).t().reshape(1, 4, 1, 2)
    memory.update_(memory(features))
    torch.testing.assert_close(memory.items[2], torch.tensor(E3))
    assert not torch.equal(memory.items[0], torch.tensor(E1))


def test_read_is_softmax_over_items_of_the_cosine_scores() -> None:
    memory = hand_memory()
    features = hand_features()
    out = memory(features)
    assert out.queries.shape == (5, 4)
    assert out.scores.shape == (5, 3)
    torch.testing.assert_close(out.queries, torch.tensor([Q1, Q2, Q3, Q4, Q5]))
    torch.testing.assert_close(out.read_weights.sum(dim=1), torch.ones(5))
    torch.testing.assert_close(out.read_weights[0], torch.softmax(torch.tensor([1.0, 0.0, 0.0]), dim=0))
    # p_hat_k = sum_m w[k, m] M_m, laid out like the input; the queries are the normalised input
    expected_read = (out.read_weights @ memory.items).t().reshape(1, 4, 1, 5)
    torch.testing.assert_close(out.read, expected_read)
    torch.testing.assert_close(out.query_map, torch.nn.functional.normalize(features, dim=1))
    assert out.decoder_input().shape == (1, 8, 1, 5)
    assert out.second.tolist() == [1, 0, 2, 2, 0]  # Q1's scores (1, 0, 0) tie; topk keeps the lower index
    torch.testing.assert_close(out.positive, memory.items[[0, 1, 1, 0, 2]])
    # D per sample: mean over its queries and channels of (q - nearest item)^2
    expected_d = (out.queries - out.positive).square().mean()
    torch.testing.assert_close(out.nearest_distance(), expected_d.reshape(1))


def test_queries_are_rows_in_sample_major_order() -> None:
    torch.manual_seed(0)
    memory = Memory(num_items=4, features=3)
    features = torch.randn(2, 3, 2, 5)
    out = memory(features)
    assert out.queries.shape == (20, 3)
    torch.testing.assert_close(out.queries[10 + 7], torch.nn.functional.normalize(features[1, :, 1, 2], dim=0))
    assert out.nearest_distance().shape == (2,)


def test_the_update_leaves_no_gradient_and_keeps_the_buffer_in_place() -> None:
    memory = hand_memory()
    features = hand_features().requires_grad_(True)
    out = memory(features)
    buffer = memory.items
    memory.update_(out)
    assert memory.items is buffer
    assert not memory.items.requires_grad
    assert memory.updated(out).grad_fn is None
    assert [name for name, _ in memory.named_parameters()] == []


def test_read_weights_pass_gradient_only_when_asked() -> None:
    features = hand_features().requires_grad_(True)
    out = hand_memory()(features)
    assert not out.read.requires_grad  # the reference detaches the read weights: the read is a constant
    memory = Memory(num_items=3, features=4, read_grad=True)
    memory.items.copy_(torch.tensor([E1, E2, E3]))
    memory(features).read.sum().backward()
    assert features.grad is not None
    assert features.grad.abs().sum() > 0


def test_memory_survives_a_checkpoint_and_moves_with_the_module(tmp_path: Path) -> None:
    memory = hand_memory()
    memory.update_(memory(hand_features()))
    assert set(memory.state_dict()) == {"items"}
    torch.save(memory.state_dict(), tmp_path / "memory.pt")
    torch.manual_seed(123)
    restored = Memory(num_items=3, features=4)
    assert not torch.equal(restored.items, memory.items)
    restored.load_state_dict(torch.load(tmp_path / "memory.pt", weights_only=True))
    assert torch.equal(restored.items, memory.items)

    module = torch.nn.Sequential(restored).to(torch.float64)
    assert restored.items.dtype == torch.float64
    torch.testing.assert_close(restored.items, memory.items.double())
    module.to("meta")
    assert restored.items.device.type == "meta"


def test_reads_in_float32_under_autocast() -> None:
    memory = hand_memory()
    features = hand_features().to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = memory(features)
    assert out.scores.dtype == torch.float32
    assert out.queries.dtype == torch.float32
    assert out.read.dtype == out.query_map.dtype == torch.bfloat16


def test_initial_items_are_unit_vectors_and_bad_arguments_fail() -> None:
    memory = Memory(num_items=10, features=512)
    torch.testing.assert_close(memory.items.norm(dim=1), torch.ones(10))
    assert (memory.items >= 0).all()
    with pytest.raises(ValueError, match="num_items must be >= 2"):
        Memory(num_items=1, features=4)
    with pytest.raises(ValueError, match="update_max must be one of"):
        Memory(num_items=3, features=4, update_max="max")
    with pytest.raises(ValueError, match=r"expects \(N, 4, \.\.\.\) features"):
        hand_memory()(torch.zeros(1, 5, 2, 2))
