"""Pixel-level metrics in vad.evaluate and the test stage of vad.train (vad.evaluation.pixel.evaluation): the
error-map hook, metrics.json's "pixel" block checked against maps computed here from the fixture's frames, the null
block of datasets without masks, and the merge of several processes' statistics."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from hydra_runs import TINY_FFP, hydra_job, tiny_dataset
from raw_fixtures import RawFixture, write_ucsd
from sklearn.metrics import roc_auc_score

from vad.app.evaluate import evaluate
from vad.app.train import train
from vad.data.index import MaskSource
from vad.errors import ConfigError
from vad.evaluation.pixel.evaluation import PixelEvaluation
from vad.evaluation.pixel.masks import resize_maps
from vad.evaluation.pixel.regions import region_track_criteria
from vad.evaluation.pixel.settings import PixelSettings, settings_from_config
from vad.methods import losses
from vad.methods.base import VADModule
from vad.methods.copy_last import CopyLast
from vad.methods.ffp import FFP

WORKING = (20, 30)  # the working size (H, W); the fixture's frames and masks are 16x24
CLIP_LEN = 2  # copy-last predicts frame t by frame t - 1: every frame but the first of each video is scored


def ucsd_eval(tmp_path: Path, masked: tuple[int, ...], *extra: str) -> tuple[RawFixture, list[str]]:
    """The raw UCSD Ped2 fixture (``TestNNN_gt`` bmp masks for the videos in ``masked``) and the overrides that
    evaluate copy-last on it at :data:`WORKING`."""
    fixture = write_ucsd(tmp_path / "download", masked=masked)
    return fixture, [
        "dataset=ped2",
        f"dataset.root={fixture.source}",
        f"dataset.image_size=[{WORKING[0]},{WORKING[1]}]",
        "dataset.num_workers=0",
        "dataset.persistent_workers=false",
        "model=copy_last",
        f"model.clip_len={CLIP_LEN}",
        *extra,
    ]


def working_frames(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 1) uint8 fixture frames -> (N, h, w) float32 in [-1, 1] at the working size, as the frame cache
    (cv2 INTER_LINEAR) and the clip reader (u / 127.5 - 1 in float32) give them."""
    resized = np.stack([cv2.resize(f[:, :, 0], WORKING[::-1], interpolation=cv2.INTER_LINEAR) for f in frames])
    return (resized.astype(np.float32) - np.float32(127.5)) * np.float32(1 / 127.5)


def expected_maps(fixture: RawFixture) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per test video, copy-last's squared-error maps of the scored frames at the masks' size and those frames'
    masks: frame t against frame t - 1, ((a - b) / 2)^2 on one channel, resized bilinearly."""
    maps, masks = [], []
    for name in sorted(fixture.test):
        x = working_frames(fixture.test[name])
        error = ((x[1:] - x[:-1]) / np.float32(2)) ** 2
        maps.append(resize_maps(error, fixture.masks[name].shape[1:]))
        masks.append(fixture.masks[name][CLIP_LEN - 1 :])
    return maps, masks


def ucsd_auc(maps: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """The UCSD 40 % criterion written out: an anomalous frame's score is the ceil(0.4 n)-th largest value over its
    n anomalous pixels, a normal frame's its maximum; the frame ROC of those."""
    scores, labels = [], []
    for video_maps, video_masks in zip(maps, masks, strict=True):
        for frame, mask in zip(video_maps, video_masks, strict=True):
            inside = np.sort(frame[mask])[::-1]
            labels.append(int(mask.any()))
            scores.append(inside[math.ceil(0.4 * inside.size) - 1] if inside.size else frame.max())
    return float(roc_auc_score(labels, scores))


def test_copy_last_on_ucsd_masks_gives_the_pixel_metrics_of_its_maps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixture, data = ucsd_eval(tmp_path, (1, 2, 3), "pixel_bins=null")
    run = tmp_path / "run"
    evaluate(hydra_job("eval", data, run, tmp_path))
    pixel = json.loads((run / "metrics.json").read_text())["pixel"]
    maps, masks = expected_maps(fixture)
    frames = sum(len(m) for m in masks)
    assert frames == 6 + 5 + 4
    assert (pixel["frames"], pixel["videos"], pixel["anomalous_frames"]) == (frames, 3, 8)
    assert (pixel["mask_size"], pixel["map_size"], pixel["thresholds"]) == ([16, 24], list(WORKING), 100)
    assert pixel["anomalous_pixels"] == int(sum(m.sum() for m in masks))
    every = np.concatenate([m.ravel() for m in maps])
    labels = np.concatenate([m.ravel() for m in masks])
    assert pixel["auc"] == pytest.approx(roc_auc_score(labels, every), abs=1e-12)
    assert pixel["auc_bin_error_bound"] == 0.0  # exact: pixel_bins=null
    anomalous = [(m[g.any(axis=(1, 2))], g[g.any(axis=(1, 2))]) for m, g in zip(maps, masks, strict=True)]
    kept = np.concatenate([m.ravel() for m, _ in anomalous])
    kept_labels = np.concatenate([g.ravel() for _, g in anomalous])
    assert pixel["auc_anomalous_frames"] == pytest.approx(roc_auc_score(kept_labels, kept), abs=1e-12)
    assert pixel["ucsd_auc"] == pytest.approx(ucsd_auc(maps, masks), abs=1e-12)
    whole = region_track_criteria(maps, masks, thresholds=100)  # all maps at once, thresholds over their range
    assert (pixel["rbdc"], pixel["tbdc"]) == (pytest.approx(whole.rbdc), pytest.approx(whole.tbdc))
    assert (pixel["regions"], pixel["tracks"]) == (whole.n_regions, whole.n_tracks)
    assert pixel["threshold_range"] == pytest.approx([float(every.min()), float(every.max())])
    out = capsys.readouterr().out
    assert f"pixel AUC (all / anomalous frames)  {pixel['auc']:.4f} / {pixel['auc_anomalous_frames']:.4f}" in out
    assert f"pixel frames                        {frames} at 16x24, 8 with an anomaly" in out
    assert not list(run.glob(".pixel-maps-*"))  # the spooled maps are removed

    # the default histogram of the pixel AUC: within the bound it records of the exact value
    _, data = ucsd_eval(tmp_path / "binned", (1, 2, 3))
    evaluate(hydra_job("eval", data, tmp_path / "binned" / "run", tmp_path))
    binned = json.loads((tmp_path / "binned" / "run" / "metrics.json").read_text())["pixel"]
    assert binned["auc_bins"] == 1 << 20
    assert abs(binned["auc"] - pixel["auc"]) <= binned["auc_bin_error_bound"]


def test_without_masks_for_every_video_the_block_is_null_and_says_why(tmp_path: Path) -> None:
    _, data = ucsd_eval(tmp_path, (1, 3))  # Test002 has no _gt folder
    evaluate(hydra_job("eval", data, tmp_path / "some", tmp_path))
    metrics = json.loads((tmp_path / "some" / "metrics.json").read_text())
    assert metrics["pixel"] is None
    assert metrics["pixel_reason"] == (
        "1 of the 3 scored test videos have no pixel masks (02); the pixel metrics need every scored video's masks"
    )
    assert metrics["auc_micro"] is not None  # the frame-level report is there as ever

    tiny = tiny_dataset(tmp_path / "tiny")  # frame labels only
    evaluate(hydra_job("eval", [*tiny, "model=copy_last"], tmp_path / "none", tmp_path))
    metrics = json.loads((tmp_path / "none" / "metrics.json").read_text())
    assert metrics["pixel"] is None
    assert metrics["pixel_reason"] == "the test videos have no pixel masks"

    _, data = ucsd_eval(tmp_path / "off", (1, 2, 3), "pixel_metrics=false")
    evaluate(hydra_job("eval", data, tmp_path / "off" / "run", tmp_path))
    metrics = json.loads((tmp_path / "off" / "run" / "metrics.json").read_text())
    assert (metrics["pixel"], metrics["pixel_reason"]) == (None, "pixel_metrics=false")


def test_the_test_stage_of_a_training_run_records_the_pixel_block(tmp_path: Path) -> None:
    fixture = write_ucsd(tmp_path / "download", masked=(1, 2, 3))
    data = [
        "dataset=ped2",
        f"dataset.root={fixture.source}",
        "dataset.image_size=[32,32]",
        "dataset.num_workers=0",
        "dataset.persistent_workers=false",
        "dataset.batch_size=2",
        "model.clip_len=3",
        "model.loss.flow=0",
        "pixel_thresholds=7",
    ]
    train(hydra_job("train", [*data, *TINY_FFP], tmp_path / "run", tmp_path))
    pixel = json.loads((tmp_path / "run" / "metrics.json").read_text())["pixel"]
    assert (pixel["frames"], pixel["mask_size"], pixel["map_size"], pixel["thresholds"]) == (
        5 + 4 + 3,
        [16, 24],
        [32, 32],
        7,
    )
    assert 0.0 <= pixel["auc"] <= 1.0


# two ranks of a fresh `python -m vad.evaluate` (about 30 s): slow; the fast suite gathers the same block from
# simulated ranks in test_several_processes_give_the_block_of_one, and tests/e2e/test_ddp.py runs DDP itself
@pytest.mark.slow
def test_ddp_sim_gives_the_block_of_one_process(tmp_path: Path) -> None:
    _, data = ucsd_eval(tmp_path, (1, 2, 3), "dataset.eval_batch_size=4")
    evaluate(hydra_job("eval", data, tmp_path / "one", tmp_path))
    # the real CLI: Lightning starts the second rank by re-running this command; each rank tests whole videos
    proc = subprocess.run(
        [sys.executable, "-m", "vad.evaluate", *data, "trainer=ddp_sim", f"hydra.run.dir={tmp_path / 'ddp'}"],
        capture_output=True,
        text=True,
        env=dict(os.environ, VAD_HOME=str(tmp_path)),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, ddp = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "ddp"))
    assert (one["world_size"], ddp["world_size"]) == (1, 2)
    assert ddp["pixel"]["frames"] == 15
    assert {k: v for k, v in ddp["pixel"].items() if k != "seconds"} == {
        k: v for k, v in one["pixel"].items() if k != "seconds"
    }
    assert not list((tmp_path / "ddp").glob(".pixel-maps-*"))


def test_the_pixel_settings_are_checked() -> None:
    assert settings_from_config({}) == PixelSettings(True, 100, 1 << 20)
    assert settings_from_config({"pixel_bins": None, "pixel_thresholds": 5}) == PixelSettings(True, 5, None)
    with pytest.raises(ConfigError, match=r"pixel_thresholds=0 must be a positive integer"):
        settings_from_config({"pixel_thresholds": 0})
    with pytest.raises(ConfigError, match=r"pixel_bins=2\.5 must be a positive integer, or null"):
        settings_from_config({"pixel_bins": 2.5})
    with pytest.raises(ConfigError, match=r"pixel_metrics='yes' must be true or false"):
        settings_from_config({"pixel_metrics": "yes"})


# ----------------------------------------------------------------------------------------------------------------
# The hook and the evaluation object without a trainer
# ----------------------------------------------------------------------------------------------------------------


def test_the_default_error_map_is_the_squared_error_of_the_output_against_its_target() -> None:
    model = CopyLast(channels=3, clip_len=3)
    frames = torch.rand(2, 3, 3, 8, 10) * 2 - 1
    maps = model.error_maps({"frames": frames})
    assert maps is not None
    assert maps.shape == (2, 8, 10)
    torch.testing.assert_close(maps, ((frames[:, 1] - frames[:, 2]) / 2).square().mean(dim=1))
    # its pixel mean is the MSE of the PSNR signal
    psnr = model.frame_signals({"frames": frames})["psnr"]
    torch.testing.assert_close(losses.psnr_from_mse(maps.flatten(1).mean(dim=1)), psnr)

    class NoOutput(VADModule):
        signals = ("psnr",)

    assert NoOutput(channels=1, clip_len=2).error_maps({"frames": frames[:, :, :1]}) is None


def test_ffp_gives_signals_and_maps_from_one_prediction() -> None:
    torch.manual_seed(0)
    model = FFP(channels=1, clip_len=3, generator={"features": 4, "depth": 2}, loss={"intensity": 1.0}).eval()
    batch = {"frames": torch.rand(2, 3, 1, 16, 16) * 2 - 1}
    calls = []
    model.generator.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        signals, maps = model.test_signals_and_maps(batch)
        assert len(calls) == 1  # one forward pass for both
        expected_maps = model.error_maps(batch)  # the default map: the squared error of predict()
        expected = model.test_signals(batch)
    torch.testing.assert_close(maps, expected_maps)
    assert signals.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(signals[name], value)
    # the base's default (two passes, the map first) gives the same
    default_signals, default_maps = VADModule.test_signals_and_maps(model, batch)
    torch.testing.assert_close(default_maps, maps)
    torch.testing.assert_close(default_signals["psnr"], signals["psnr"])


def fake_datamodule(masks: list[np.ndarray | None], tmp_path: Path) -> SimpleNamespace:
    """What PixelEvaluation reads of a datamodule: ``test_videos`` and ``test_masks`` (ShanghaiTech-style npy)."""
    sources: list[MaskSource | None] = []
    for k, m in enumerate(masks):
        if m is None:
            sources.append(None)
            continue
        path = tmp_path / f"{k:02d}.npy"
        np.save(path, m.astype(np.uint8))
        sources.append(MaskSource(npy=path))
    videos = [
        SimpleNamespace(name=f"{k:02d}", num_frames=8 if m is None else len(m), skipped=False)
        for k, m in enumerate(masks)
    ]
    return SimpleNamespace(test_videos=videos, test_masks=sources)


def blob_masks(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, 12, 16), dtype=bool)
    for i in range(2, n):
        y, x = rng.integers(0, 8), rng.integers(0, 12)
        masks[i, y : y + 3, x : x + 4] = True
    return masks


def test_several_processes_give_the_block_of_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    masks = [blob_masks(8, 1), blob_masks(7, 2), blob_masks(9, 3)]
    maps = [rng.random((len(m) - 1, 6, 8)).astype(np.float32) for m in masks]  # frame 0 unscored
    datamodule = fake_datamodule(masks, tmp_path)
    settings = PixelSettings(thresholds=9, bins=1000)

    def feed(evaluation: PixelEvaluation, videos: list[int], rank: int) -> None:
        evaluation.start(datamodule, rank, "random")
        for v in videos:
            frames = np.arange(1, len(masks[v]))
            for a in range(0, len(frames), 3):  # in batches, in frame order
                evaluation.add(v, frames[a : a + 3], torch.from_numpy(maps[v][a : a + 3]))

    one = PixelEvaluation(settings, tmp_path / "one")
    feed(one, [0, 1, 2], 0)
    one.finish()
    assert one.block is not None

    # two ranks holding whole videos (as VideoShards deals them), gathering through a barrier like all_gather_object
    barrier, slots = threading.Barrier(2), [None, None]

    def gather_for(rank: int) -> Any:
        def gather(obj: Any) -> list[Any]:
            slots[rank] = obj
            barrier.wait()
            out = list(slots)
            barrier.wait()
            return out

        return gather

    ranks = [PixelEvaluation(settings, tmp_path / "ddp") for _ in range(2)]
    feed(ranks[0], [0], 0)
    feed(ranks[1], [1, 2], 1)
    threads = [threading.Thread(target=ranks[r].finish, args=(gather_for(r),)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for evaluation in ranks:
        assert evaluation.block is not None
        assert {k: v for k, v in evaluation.block.items() if k != "seconds"} == {
            k: v for k, v in one.block.items() if k != "seconds"
        }
    assert one.block["frames"] == 7 + 6 + 8
    assert not list((tmp_path / "ddp").iterdir())


def test_a_method_without_maps_or_with_non_finite_maps_gets_a_reason(tmp_path: Path) -> None:
    masks = [blob_masks(5, 1)]
    datamodule = fake_datamodule(masks, tmp_path)
    evaluation = PixelEvaluation(PixelSettings(), tmp_path)
    evaluation.start(datamodule)
    evaluation.add(0, np.arange(1, 5), None)
    assert not evaluation.collecting
    evaluation.finish()
    assert evaluation.block is None
    assert evaluation.reason == "the method gives no per-pixel error map (its error_maps returns None)"

    evaluation.start(datamodule)
    evaluation.add(0, np.arange(1, 5), torch.full((4, 6, 8), math.nan))
    evaluation.finish()
    assert evaluation.reason == "the error maps hold NaN or infinite values"

    broken = fake_datamodule([blob_masks(5, 1)], tmp_path)
    broken.test_videos[0].num_frames = 6  # the masks do not match the video
    evaluation.start(broken)
    evaluation.add(0, np.arange(1, 5), torch.zeros(4, 6, 8))
    evaluation.finish()
    assert evaluation.block is None
    assert evaluation.reason is not None
    assert evaluation.reason.startswith("the pixel masks could not be used: DataError: ")
    assert "5 pixel masks but the video has 6 frames" in evaluation.reason
