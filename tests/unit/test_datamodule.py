"""VideoDataModule: real DataLoaders (with workers), the validation split, test order, argument checks, real Ped2."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vad.data.batches import frames_to_float
from vad.data.datamodule import VideoDataModule
from vad.errors import ConfigError, DataError

TRAIN_LENGTHS = {"01": 6, "02": 7, "03": 5, "04": 6, "05": 8}
TEST_LENGTHS = {"01": 6, "02": 2, "03": 7}
TEST_LABELS = {"01": [0, 0, 0, 1, 1, 0], "02": [1, 1], "03": [0, 1, 1, 1, 0, 0, 1]}


def frame_value(split: str, video: str, frame: int) -> int:
    return (100 if split == "testing" else 0) + 10 * int(video) + frame


@pytest.fixture
def ffp_root(tmp_path: Path) -> Path:
    """A tiny FFP-layout dataset of uniform grey 8x8 PNG frames whose value identifies (split, video, frame)."""
    root = tmp_path / "toy"
    for split, lengths in (("training", TRAIN_LENGTHS), ("testing", TEST_LENGTHS)):
        for video, n in lengths.items():
            folder = root / split / "frames" / video
            folder.mkdir(parents=True)
            for i in range(n):
                cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((8, 8), frame_value(split, video, i), np.uint8))
    (root / "testing" / "labels").mkdir()
    for video, labels in TEST_LABELS.items():
        np.save(root / "testing" / "labels" / f"{video}.npy", np.array(labels, dtype=np.uint8))
    return root


def module(root: Path, tmp_path: Path, **overrides) -> VideoDataModule:
    args = {"image_size": (8, 8), "channels": 1, "clip_len": 3, "batch_size": 4, "cache_dir": tmp_path / "cache"}
    return VideoDataModule("folder", root, **(args | overrides))


def batches_to_pairs(loader) -> list[tuple[str, int]]:
    pairs = []
    for batch in loader:
        assert batch["frames"].dtype == torch.uint8  # shipped uint8: the method converts on its device
        assert batch["frames"].shape[1:] == (3, 1, 8, 8)
        converted = frames_to_float(batch["frames"])
        for name, target, frames, floats in zip(
            batch["video"], batch["index"].tolist(), batch["frames"], converted, strict=True
        ):
            # The clip's last frame is the target frame of that video.
            assert frames[-1, 0, 0, 0].item() == frame_value("training", name, target)
            assert floats[-1, 0, 0, 0].item() == pytest.approx(frame_value("training", name, target) / 127.5 - 1)
            pairs.append((name, target))
    return pairs


@pytest.mark.parametrize(("workers", "persistent"), [(0, False), (2, True)])
def test_train_loader_gives_every_clip_once_per_epoch(
    ffp_root: Path, tmp_path: Path, workers: int, persistent: bool
) -> None:
    dm = module(ffp_root, tmp_path, num_workers=workers, persistent_workers=persistent, seed=3)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    expected = sorted((v, t) for v, n in TRAIN_LENGTHS.items() for t in range(2, n))
    first = batches_to_pairs(loader)
    second = batches_to_pairs(loader)
    assert sorted(first) == sorted(second) == expected
    assert first != second  # reshuffled every epoch
    assert first != expected  # shuffled at all

    again = module(ffp_root, tmp_path, num_workers=0, seed=3)
    again.setup("fit")
    assert batches_to_pairs(again.train_dataloader()) == first  # same seed, same order


def test_test_loader_in_order_with_labels_and_video_info(ffp_root: Path, tmp_path: Path) -> None:
    dm = module(ffp_root, tmp_path, num_workers=2, eval_batch_size=3)
    dm.prepare_data()
    with pytest.warns(UserWarning, match="video '02' is shorter than one clip"):
        dm.setup("test")
    batches = list(dm.test_dataloader())
    rows = [
        (name, target, label)
        for batch in batches
        for name, target, label in zip(batch["video"], batch["index"].tolist(), batch["label"].tolist(), strict=True)
    ]
    for batch in batches:
        assert batch["frames"].dtype == torch.uint8
        assert batch["frames"].shape[1:] == (3, 1, 8, 8)
        targets = zip(batch["video"], batch["index"].tolist(), strict=True)
        last = [frame_value("testing", name, target) for name, target in targets]
        assert batch["frames"][:, -1, 0, 0, 0].tolist() == last
    assert rows == [("01", t, TEST_LABELS["01"][t]) for t in range(2, 6)] + [
        ("03", t, TEST_LABELS["03"][t]) for t in range(2, 7)
    ]
    info = dm.test_videos
    assert [(v.name, v.num_frames, v.skipped) for v in info] == [("01", 6, False), ("02", 2, True), ("03", 7, False)]
    assert [v.labels.tolist() for v in info] == [TEST_LABELS[v] for v in ("01", "02", "03")]
    assert dm.label_source is not None
    assert "labels" in dm.label_source


# the toy videos are 5-8 frames long: one pseudo-anomalous frame each (vad.data.pseudo.validation)
TINY_VAL = {"events": 1, "length": [1, 1]}


def test_validation_split_is_deterministic_and_disjoint(ffp_root: Path, tmp_path: Path) -> None:
    def split(seed: int, val_videos: int | float) -> tuple[list[str], list[str]]:
        dm = module(ffp_root, tmp_path, val_videos=val_videos, seed=seed, val_pseudo=TINY_VAL)
        dm.setup("fit")
        return [v.name for v in dm.train_videos], [v.name for v in dm.val_split]

    train, val = split(0, 2)
    assert len(val) == 2
    assert sorted(train + val) == sorted(TRAIN_LENGTHS)
    assert not set(train) & set(val)
    assert split(0, 2) == (train, val)
    assert split(0, 0.4) == (train, val)  # 40% of 5 videos
    assert {tuple(split(seed, 2)[1]) for seed in range(6)} != {tuple(val)}  # the seed picks them

    dm = module(ffp_root, tmp_path, val_videos=2, seed=0, val_pseudo=TINY_VAL)
    dm.setup("fit")
    val_batches = list(dm.val_dataloader())
    assert all(batch["frames"].dtype == torch.uint8 for batch in val_batches)  # injected videos too
    pairs = [
        (name, target)
        for batch in val_batches
        for name, target in zip(batch["video"], batch["index"].tolist(), strict=True)
    ]
    assert pairs == [(v, t) for v in val for t in range(2, TRAIN_LENGTHS[v])]
    assert len(dm.train_dataset) == sum(TRAIN_LENGTHS[v] - 2 for v in train)
    no_val = module(ffp_root, tmp_path)
    no_val.setup("fit")
    assert no_val.val_dataloader() == []


def test_missing_root_is_generated_when_a_generator_is_given(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    generator = {"seed": 1, "num_train": 2, "num_test": 1, "frames_per_video": 36, "size": (32, 32)}
    dm = VideoDataModule("synthetic", root, image_size=(16, 16), channels=1, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="not found"):
        dm.prepare_data()
    dm = VideoDataModule(
        "synthetic",
        root,
        image_size=(16, 16),
        channels=1,
        clip_len=5,
        cache_dir=tmp_path / "cache",
        generator=generator,
    )
    dm.prepare_data()
    cache = tmp_path / "cache" / "synthetic"
    # Training and test video "01" share a name, not a cache entry.
    assert sorted(p.name[:2] for p in (cache / "training" / "16x16-c1-linear").glob("*.npy")) == ["01", "02"]
    assert sorted(p.name[:2] for p in (cache / "testing" / "16x16-c1-linear").glob("*.npy")) == ["01"]
    dm.setup("test")
    assert len(dm.test_dataset) == 36 - 4
    assert dm.test_videos[0].labels is not None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"channels": 2}, "dataset.channels must be 1 or 3, got 2"),
        ({"image_size": (64,)}, "dataset.image_size must be two positive integers"),
        ({"interpolation": "bilinear"}, "dataset.interpolation must be"),
        ({"clip_len": 0}, "dataset.clip_len must be an integer >= 1, got 0"),
        ({"frame_stride": 1.5}, "dataset.frame_stride must be an integer >= 1"),
        ({"batch_size": 0}, "dataset.batch_size must be"),
        ({"num_workers": -1}, "dataset.num_workers must be an integer >= 0"),
        ({"val_videos": -1}, "dataset.val_videos must be"),
        ({"val_videos": 1.0}, "dataset.val_videos must be"),
        ({"generator": 3}, "dataset.generator must be a mapping"),
    ],
)
def test_invalid_arguments_name_the_key(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        module(tmp_path / "toy", tmp_path, **overrides)


def test_too_many_validation_videos(ffp_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.val_videos=5 holds out 5 of the 5 training videos"):
        module(ffp_root, tmp_path, val_videos=5).setup("fit")


def test_a_test_only_set_can_be_tested_not_fitted(ffp_root: Path, tmp_path: Path) -> None:
    shutil.rmtree(ffp_root / "training")
    dm = module(ffp_root, tmp_path, clip_len=1)
    dm.setup("test")
    assert len(dm.test_dataset) == sum(TEST_LENGTHS.values())
    with pytest.raises(DataError, match="no training videos to fit on"):
        dm.setup("fit")


def test_real_ped2_test_set(ped2_root: Path, tmp_path: Path) -> None:
    dm = VideoDataModule(
        "ped2", ped2_root, image_size=(64, 64), channels=3, clip_len=5, cache_dir=tmp_path, eval_batch_size=64
    )
    dm.setup("test")
    info = dm.test_videos
    assert len(info) == 12
    assert sum(v.num_frames for v in info) == 2010
    assert len(dm.test_dataset) == 2010 - 12 * 4
    assert not any(v.skipped for v in info)
    assert sum(int(v.labels.sum()) for v in info) == 1648
    batch = next(iter(dm.test_dataloader()))
    assert batch["frames"].shape == (64, 5, 3, 64, 64)
    assert batch["frames"].dtype == torch.uint8
    assert batch["index"].tolist() == list(range(4, 68))
    assert batch["label"].tolist() == [0] * 56 + [1] * 8  # video 01 is anomalous from frame 61 (1-indexed)
    frames = frames_to_float(batch["frames"])
    assert -1.0 <= frames.min() < frames.max() <= 1.0
