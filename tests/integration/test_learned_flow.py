"""flow=learned: a small flow net trained on the dataset's own training frames, cached by key, differentiable."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra_runs import TINY_FFP, hydra_job, tiny_synthetic

from vad.app.train import train
from vad.flow import build_flow
from vad.flow.learned import LearnedFlow

#: a few steps: enough for the cache and wiring tests, not to learn (the quality test trains 400)
QUICK = ["flow=learned", "flow.steps=40", "flow.batch_size=8", "flow.features=8", "flow.progress=false"]


def learned(tmp_path: Path, *extra: str) -> LearnedFlow:
    cfg = hydra_job("train", [*tiny_synthetic(tmp_path / "synthetic"), *QUICK, *extra], tmp_path / "job", tmp_path)
    flow = build_flow(cfg.flow)
    assert isinstance(flow, LearnedFlow)
    return flow


def weight_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "weights" / "learned_flow").glob("*.pt"))


def test_is_differentiable_so_ffps_flow_term_reaches_the_generator(tmp_path: Path) -> None:
    flow = learned(tmp_path)
    assert not any(p.requires_grad for p in flow.parameters())
    a = torch.rand(2, 1, 32, 32) * 2 - 1
    prediction = (torch.rand(2, 1, 32, 32) * 2 - 1).requires_grad_(True)
    flow(a, prediction).abs().mean().backward()
    assert prediction.grad is not None
    assert prediction.grad.abs().sum() > 0


@pytest.mark.slow  # a quality check of a 400-step training (about 20 s under the suite's load); the fast tests
# train the same way for 40 steps (test_cached_by_key_retrained_when_a_frame_or_a_setting_changes); the gradient is
# test_is_differentiable_so_ffps_flow_term_reaches_the_generator's
def test_learns_the_held_out_flow_better_than_zero(tmp_path: Path) -> None:
    flow = learned(tmp_path, "flow.steps=400")  # about 10 s on 2 cores
    report = flow.report
    assert report["pairs"] > 0
    assert report["held_out_pairs"] > 0
    # the stated bounds, on held-out pairs never trained on (walkers move about 0.5 px per frame at 32x32, most of
    # the scene is still; measured 0.031 px against 0.081 for a zero flow): the end-point error against DIS is below
    # half a zero flow's, and the second frame warped back by the flow matches the first better than unwarped
    assert report["epe"] < 0.5 * report["epe_zero"], report
    assert report["photometric"] < report["photometric_zero"], report
    (path,) = weight_files(tmp_path)
    assert path.name.startswith("synthetic-32x32-c1-")


def test_cached_by_key_retrained_when_a_frame_or_a_setting_changes(tmp_path: Path, monkeypatch) -> None:
    first = learned(tmp_path)
    calls: list[int] = []
    original = LearnedFlow._train

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LearnedFlow, "_train", counting)
    again = learned(tmp_path)  # same frames and settings: loaded, not trained
    assert calls == []
    assert again.report == first.report
    for key, value in first.net.state_dict().items():
        assert torch.equal(value, again.net.state_dict()[key])
    learned(tmp_path, "flow.smooth=0.1")  # another setting: another file
    assert len(calls) == 1
    assert len(weight_files(tmp_path)) == 2
    frame = tmp_path / "synthetic" / "training" / "frames" / "01" / "003.png"
    import cv2

    cv2.imwrite(str(frame), np.full((32, 32), 128, np.uint8))  # a changed training frame: trained again
    learned(tmp_path)
    assert len(calls) == 2
    assert len(weight_files(tmp_path)) == 3


def test_a_corrupt_weight_file_is_reported_and_trained_again(tmp_path: Path, caplog) -> None:
    first = learned(tmp_path)
    (path,) = weight_files(tmp_path)
    path.write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="vad.flow.learned"):
        again = learned(tmp_path)
    assert f"{path}: unreadable learned-flow weights" in caplog.text
    assert again.report["epe"] == first.report["epe"]  # the same seed trains the same net
    assert torch.load(path, weights_only=True)["report"] == again.report


def test_ffp_trains_with_the_learned_flow_term(tmp_path: Path) -> None:
    data = tiny_synthetic(tmp_path / "synthetic")
    result = train(hydra_job("train", [*data, *TINY_FFP, *QUICK, "model.loss.flow=0.1"], tmp_path / "run", tmp_path))
    assert "auc_micro" in result
    assert weight_files(tmp_path)


def test_training_crops_take_one_place_for_frames_and_targets() -> None:
    flow = LearnedFlow.__new__(LearnedFlow)  # only the crop settings are needed
    flow.crop = 16
    a = torch.arange(40 * 30, dtype=torch.float32).view(1, 1, 40, 30)
    b, target = a + 0.5, torch.cat((a, -a), dim=1)
    ca, cb, ct = flow._cropped((a, b, target), torch.Generator().manual_seed(0))
    assert ca.shape == (1, 1, 16, 16)
    assert ct.shape == (1, 2, 16, 16)
    assert torch.equal(cb, ca + 0.5)
    assert torch.equal(ct[:, 0], ca[:, 0])
    flow.crop = None
    assert flow._cropped((a,), torch.Generator())[0] is a
