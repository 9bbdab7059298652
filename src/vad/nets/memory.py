"""A memory of M prototype items read and updated by L2-normalised feature queries (Park et al., MNAD, CVPR 2020).

    memory = Memory(num_items=10, features=512)
    out = memory(features)                      # features (N, 512, 32, 32) -> out.read (N, 512, 32, 32)
    memory.update_(out)                         # after the optimiser step: M <- update(M, out.queries)

Every spatial position of a feature map is one query q_k (K = N * H * W queries of C features), L2-normalised along
the channels. With the items M (M, C), also L2-normalised, the scores are cosine similarities S = Q M^T (K, M):

- read: w = softmax over items of S (each row sums to 1), p_hat_k = sum_m w[k, m] M_m; the decoder of a method
  typically takes concat[q_k, p_hat_k];
- update: v = softmax over queries of S (each column sums to 1); U_m = queries whose nearest item is m;
  M_m <- L2norm(M_m + sum_{k in U_m} (v[k, m] / max_{k' in U_m} v[k', m]) q_k). The paper takes the max over U_m
  (``update_max="assigned"``); the reference code takes it over all queries (``update_max="all"``). An item no query
  chose keeps its value.

The items are a buffer, not a parameter: saved in checkpoints, moved by ``.to()`` / ``.cuda()``, never seen by an
optimiser; only the update rule changes them, always without gradient. The memory knows nothing about the method
using it: any (N, C, *spatial) feature map with C = ``features`` works, and a method may run several memories.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

UPDATE_MAX = ("assigned", "all")


@dataclass
class MemoryRead:
    """What one read returns: the read features, and what the losses and the update need.

    Queries are rows in sample-major order (sample n holds rows n * P .. (n + 1) * P - 1, P positions per sample).

    - ``query_map``: (N, C, *spatial) the L2-normalised queries in the input layout and dtype;
    - ``read``: (N, C, *spatial) the read features p_hat in the input layout and dtype;
    - ``queries``: (K, C) the same normalised queries as rows, K = N * P, in at least float32;
    - ``items``: (M, C) the memory that was read (the update starts from it);
    - ``scores``: (K, M) cosine similarities S = Q M^T in [-1, 1];
    - ``read_weights``: (K, M) softmax of S over the items (rows sum to 1);
    - ``nearest``, ``second``: (K,) indices of each query's nearest and second-nearest item;
    - ``positive``, ``negative``: (K, C) those items (no gradient), for the compactness / separateness losses.
    """

    query_map: torch.Tensor
    read: torch.Tensor
    queries: torch.Tensor
    items: torch.Tensor
    scores: torch.Tensor
    read_weights: torch.Tensor
    nearest: torch.Tensor
    second: torch.Tensor

    @property
    def positive(self) -> torch.Tensor:
        return self.items[self.nearest]

    @property
    def negative(self) -> torch.Tensor:
        return self.items[self.second]

    @property
    def samples(self) -> int:
        return self.query_map.shape[0]

    def decoder_input(self) -> torch.Tensor:
        """concat[queries, read] along the channels: (N, 2C, *spatial)."""
        return torch.cat([self.query_map, self.read], dim=1)

    def nearest_distance(self) -> torch.Tensor:
        """Per sample, the mean over its queries and channels of (q - nearest item)^2: (N,), MNAD's feature distance."""
        error = (self.queries - self.positive).square()
        return error.reshape(self.samples, -1).mean(dim=1)


class Memory(nn.Module):
    """M items of C features, read by softmax attention and updated by the max-normalised rule of MNAD.

    Args:
        num_items: M >= 2 (the separateness loss needs a second-nearest item).
        features: C, the channels of the feature maps it reads.
        update_max: ``"assigned"`` (paper: normalise by the max over the queries assigned to the item) or ``"all"``
            (reference code: the max over all queries).
        read_grad: let the loss gradient reach the queries through the read weights. The reference code detaches
            the read weights (the paper does not say), so by default the read features carry no gradient and the
            queries learn through the concatenated queries and the compactness / separateness losses.

    The initial items are L2-normalised U[0, 1)^C vectors drawn from torch's global generator (seed it for
    reproducible runs).
    """

    items: torch.Tensor

    def __init__(self, num_items: int, features: int, update_max: str = "assigned", read_grad: bool = False) -> None:
        super().__init__()
        if num_items < 2:
            raise ValueError(f"num_items must be >= 2 (nearest and second-nearest item), got {num_items}")
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        if update_max not in UPDATE_MAX:
            raise ValueError(f"update_max must be one of {UPDATE_MAX}, got {update_max!r}")
        self.num_items = num_items
        self.features = features
        self.update_max = update_max
        self.read_grad = read_grad
        self.register_buffer("items", F.normalize(torch.rand(num_items, features), dim=1))

    def extra_repr(self) -> str:
        return f"num_items={self.num_items}, features={self.features}, update_max={self.update_max!r}"

    def forward(self, features: torch.Tensor, items: torch.Tensor | None = None) -> MemoryRead:
        """Read ``items`` (default: this memory's buffer) with the queries of ``features`` (N, C, *spatial).

        Computes in at least float32, also under autocast: the scores feed a softmax and the update, where bf16
        loses the small differences between queries. ``query_map`` and ``read`` come back in the input's dtype.
        """
        if features.ndim < 2 or features.shape[1] != self.features:
            raise ValueError(f"Memory expects (N, {self.features}, ...) features, got {tuple(features.shape)}")
        items = self.items if items is None else items
        if items.shape != (self.num_items, self.features):
            raise ValueError(f"items must be ({self.num_items}, {self.features}), got {tuple(items.shape)}")
        dtype = torch.promote_types(features.dtype, torch.float32)
        with torch.autocast(features.device.type, enabled=False):
            query_map = F.normalize(features.to(dtype), dim=1)
            channels_last = query_map.movedim(1, -1)
            queries = channels_last.reshape(-1, self.features)
            items = items.to(dtype)
            scores = queries @ items.t()
            read_weights = scores.softmax(dim=1)
            weights = read_weights if self.read_grad else read_weights.detach()
            read = (weights @ items).reshape(channels_last.shape).movedim(-1, 1)
            top2 = scores.detach().topk(2, dim=1).indices
        return MemoryRead(
            query_map=query_map.to(features.dtype),
            read=read.to(features.dtype),
            queries=queries,
            items=items,
            scores=scores,
            read_weights=read_weights,
            nearest=top2[:, 0],
            second=top2[:, 1],
        )

    @torch.no_grad()
    def updated(self, out: MemoryRead) -> torch.Tensor:
        """The items after one update with the queries of ``out`` (M, C); neither ``out`` nor the buffer change.

        v = softmax over queries of S; for item m the weight of query k in U_m is v[k, m] / max v[., m] (the max over
        U_m or over all queries, see ``update_max``), every other query weighs 0; M_m <- L2norm(M_m + sum_k w q_k).
        """
        queries, scores = out.queries.detach(), out.scores.detach()
        assigned = F.one_hot(out.nearest, self.num_items).bool()
        v = scores.softmax(dim=0)
        pool = v.masked_fill(~assigned, 0.0) if self.update_max == "assigned" else v
        # An item nobody chose has a zero max; its weights are all masked to 0 below, the clamp only avoids 0/0.
        peak = pool.amax(dim=0).clamp_min(torch.finfo(v.dtype).tiny)
        weights = torch.where(assigned, v / peak, torch.zeros_like(v))
        return F.normalize(out.items.detach() + weights.t() @ queries, dim=1)

    @torch.no_grad()
    def update_(self, out: MemoryRead) -> None:
        """Replace this memory's items by :meth:`updated` (in place, so the buffer stays registered and placed)."""
        self.items.copy_(self.updated(out))
