"""Tiny in-memory clips for method tests: a smooth blob moving right by 1 px per frame (shared by FFP and MNAD)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


def moving_blobs(n: int = 2, t: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, t, 1, size, size) in [-1, 1]: in each clip a Gaussian blob at a random place moves right 1 px per frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    frames = np.zeros((n, t, 1, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(10, size - 10, 2)
        for k in range(t):
            frames[i, k, 0] = np.exp(-((yy - cy) ** 2 + (xx - cx - k) ** 2) / 20.0) * 1.6 - 0.8
    return torch.from_numpy(frames)


class BlobClips(Dataset):
    """``n`` moving-blob clips as datamodule-shaped items (one video "01", target index = position + t - 1)."""

    def __init__(self, n: int, t: int = 3, size: int = 32) -> None:
        self.frames = moving_blobs(n, t, size)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict:
        target = i + self.frames.shape[1] - 1
        return {"frames": self.frames[i], "video": "01", "video_id": 0, "index": target, "label": 0}
