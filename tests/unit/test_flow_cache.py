"""The flow-target cache: computed once from the frame cache, keyed by frames / step / estimator, written atomically;
clips carry the flows when a method asks for them."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vad.data.batches import clips_to_tensor
from vad.data.cache import FrameCache
from vad.data.clips import ClipDataset
from vad.data.datamodule import VideoDataModule
from vad.data.flows import FlowCache, compute_flows
from vad.data.index import FrameSource, Video
from vad.errors import DataError
from vad.flow import DISFlow, FlowEstimator


def moving_square(n: int, size: int = 32, step: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Grey frames: textured background, a textured square moving ``step`` px right per frame."""
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(0, 256, (size, size), dtype=np.uint8), (5, 5), 1.5)
    square = cv2.GaussianBlur(rng.integers(0, 256, (10, 10), dtype=np.uint8), (3, 3), 1.0)
    frames = []
    for i in range(n):
        frame = background.copy()
        x = 4 + (step * i) % (size - 14)  # wraps around: any number of frames
        frame[10:20, x : x + 10] = square
        frames.append(frame)
    return frames


def write_video(folder: Path, frames: list[np.ndarray]) -> Video:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    return Video(folder.name, FrameSource.from_folder(folder))


@pytest.fixture
def videos(tmp_path: Path) -> list[Video]:
    return [
        write_video(tmp_path / "src" / "a", moving_square(7, seed=1)),
        write_video(tmp_path / "src" / "b", moving_square(5, step=1, seed=2)),
    ]


def frame_cache(tmp_path: Path) -> FrameCache:
    return FrameCache(tmp_path / "cache", (32, 32), channels=1)


def direct(frames: np.ndarray, step: int = 1) -> torch.Tensor:
    """What a method would get from calling DIS on the frame pairs itself."""
    x = torch.from_numpy(frames.astype(np.float32)) / 127.5 - 1
    return DISFlow()(x[:-step], x[step:])


def entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").rglob("flows-*/*.npy"))


def test_flows_round_trip_to_a_direct_dis_call(tmp_path: Path, videos: list[Video]) -> None:
    flows = FlowCache(frame_cache(tmp_path), DISFlow())
    assert flows.build(videos, "toy", progress=False) == ["a", "b"]
    assert flows.build(videos, "toy", progress=False) == []  # up to date: nothing computed again
    for video in videos:
        stored = flows.load(video, "toy")
        assert stored.dtype == np.float16
        assert stored.shape == (video.num_frames - 1, 2, 32, 32)
        expected = direct(np.asarray(frame_cache(tmp_path).load(video, "toy")))
        np.testing.assert_array_equal(stored, expected.numpy().astype(np.float16))
    # the moving square: its right edge moves 2 px right per frame in video a, DIS sees it
    assert flows.load(videos[0], "toy")[0, 0, 12:18, 12:14].astype(np.float32).mean() == pytest.approx(2.0, abs=0.5)


def test_a_changed_frame_rebuilds_only_that_video_and_removes_the_stale_entry(
    tmp_path: Path, videos: list[Video]
) -> None:
    flows = FlowCache(frame_cache(tmp_path), DISFlow())
    flows.build(videos, "toy", progress=False)
    before = {p.name: np.load(p) for p in entries(tmp_path)}
    frame = tmp_path / "src" / "a" / "003.png"
    cv2.imwrite(str(frame), np.full((32, 32), 200, np.uint8))  # a new file: new size/mtime, new frame-cache key
    changed = [Video("a", FrameSource.from_folder(frame.parent)), videos[1]]
    rebuilt = FlowCache(frame_cache(tmp_path), DISFlow())
    assert rebuilt.build(changed, "toy", progress=False) == ["a"]
    after = {p.name: np.load(p) for p in entries(tmp_path)}
    assert len(after) == 2  # the stale entry of a is gone
    (old_a,) = [k for k in before if k.startswith("a-")]
    (new_a,) = [k for k in after if k.startswith("a-")]
    assert old_a != new_a
    assert not np.array_equal(before[old_a], after[new_a])
    expected = direct(np.asarray(frame_cache(tmp_path).load(changed[0], "toy"))).numpy().astype(np.float16)
    np.testing.assert_array_equal(after[new_a], expected)
    b = [k for k in before if k.startswith("b-")]
    assert b == [k for k in after if k.startswith("b-")]  # b untouched


def test_another_estimator_setting_or_size_is_never_reused(tmp_path: Path, videos: list[Video]) -> None:
    medium = FlowCache(frame_cache(tmp_path), DISFlow("medium"))
    fast = FlowCache(frame_cache(tmp_path), DISFlow("fast"))
    small = FlowCache(FrameCache(tmp_path / "cache", (16, 16), channels=1), DISFlow("medium"))
    stride2 = FlowCache(frame_cache(tmp_path), DISFlow("medium"), step=2)
    paths = {c.path(videos[0], "toy") for c in (medium, fast, small, stride2)}
    assert len(paths) == 4
    medium.build(videos, "toy", progress=False)
    assert fast.build(videos, "toy", progress=False) == ["a", "b"]  # computed, not taken from the medium preset
    assert len(entries(tmp_path)) == 4  # both presets' entries coexist
    with pytest.raises(DataError, match="flow-target cache entry of video 'a' is missing"):
        small.load(videos[0], "toy")
    stride2.build(videos, "toy", progress=False)
    frames = np.asarray(frame_cache(tmp_path).load(videos[0], "toy"))
    np.testing.assert_array_equal(stride2.load(videos[0], "toy"), direct(frames, step=2).numpy().astype(np.float16))


def test_flows_estimated_at_the_input_size_are_keyed_by_it_and_scaled_back(tmp_path: Path, videos: list[Video]) -> None:
    # Working size 32x32, DIS at 64x64 on the resized working frames; the flows come back at 32x32, halved.
    flows = FlowCache(frame_cache(tmp_path), DISFlow(input_size=(64, 64)))
    plain = FlowCache(frame_cache(tmp_path), DISFlow())
    assert flows.folder_name != plain.folder_name  # its own key and folder: never mixed up with DIS at 32x32
    assert flows.build(videos, "toy", progress=False) == ["a", "b"]
    assert plain.build(videos, "toy", progress=False) == ["a", "b"]
    stored = flows.load(videos[0], "toy")
    assert stored.shape == (videos[0].num_frames - 1, 2, 32, 32)
    x = clips_to_tensor([np.asarray(frame_cache(tmp_path).load(videos[0], "toy"))])[0]  # as the cache feeds them
    expected = DISFlow(input_size=(64, 64))(x[:-1], x[1:])  # what a pseudo-anomalous clip's flows are computed by
    np.testing.assert_array_equal(stored, expected.numpy().astype(np.float16))
    assert not np.array_equal(stored, plain.load(videos[0], "toy"))
    # the square's 2 px per frame at 32 columns is still 2 px here: the units are the working size's
    assert stored[0, 0, 12:18, 12:14].astype(np.float32).mean() == pytest.approx(2.0, abs=0.5)


class _Failing(FlowEstimator):
    """DIS that fails on its second call, as an interrupted build would."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.freeze()

    def compute(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise KeyboardInterrupt
        return DISFlow()(a, b)


def test_an_interrupted_build_leaves_nothing_a_later_run_reads(
    tmp_path: Path, videos: list[Video], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vad.data import flows as flows_module

    monkeypatch.setattr(flows_module, "CHUNK", 2)  # several estimator calls per video
    broken = FlowCache(frame_cache(tmp_path), _Failing(), workers=1)
    with pytest.raises(KeyboardInterrupt):
        broken.build(videos[:1], "toy", progress=False)
    left = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and "flows-" in str(p)]
    assert left == []  # no entry, no temporary file
    with pytest.raises(DataError, match="missing or outdated"):
        broken.load(videos[0], "toy")


def _build_in_process(cache_dir: str, folder: str, start: mp.synchronize.Barrier, out: mp.Queue) -> None:
    video = Video(Path(folder).name, FrameSource.from_folder(Path(folder)))
    flows = FlowCache(FrameCache(cache_dir, (32, 32), channels=1), DISFlow())
    start.wait()
    out.put(flows.build([video], "toy", progress=False))


def test_two_processes_building_at_once_produce_one_valid_cache(tmp_path: Path) -> None:
    video = write_video(tmp_path / "src" / "v", moving_square(60, seed=3))
    FrameCache(tmp_path / "cache", (32, 32), channels=1).build([video], "toy", progress=False)
    ctx = mp.get_context("fork")
    start, out = ctx.Barrier(2), ctx.Queue()
    args = (str(tmp_path / "cache"), str(tmp_path / "src" / "v"), start, out)
    procs = [ctx.Process(target=_build_in_process, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert ["v"] in [out.get(timeout=5) for _ in procs]
    flows = FlowCache(frame_cache(tmp_path), DISFlow())
    assert entries(tmp_path) == [flows.path(video, "toy")]
    assert not [p for p in (tmp_path / "cache").rglob("*.tmp")]
    np.testing.assert_array_equal(
        flows.load(video, "toy"),
        direct(np.asarray(frame_cache(tmp_path).load(video, "toy"))).numpy().astype(np.float16),
    )


def test_clips_carry_the_flows_between_their_consecutive_frames(tmp_path: Path, videos: list[Video]) -> None:
    cache = frame_cache(tmp_path)
    for stride in (1, 2):
        flows = FlowCache(cache, DISFlow(), step=stride)
        flows.build(videos, "toy", progress=False)
        clips = ClipDataset(videos, cache, "toy", clip_len=3, frame_stride=stride)
        assert "flows" not in clips[0]  # only on request
        clips.attach_flows(flows, "toy")
        for i in range(len(clips)):
            video_id, start = clips.locate(i)
            item = clips[i]
            frames = np.asarray(cache.load(videos[video_id], "toy"))[start : start + clips.span : stride]
            assert item["flows"].shape == (2, 2, 32, 32)
            assert item["flows"].dtype == torch.float32
            expected = torch.stack([direct(frames[k : k + 2])[0] for k in range(2)]).half().float()
            torch.testing.assert_close(item["flows"], expected, rtol=0, atol=0)
        clone = pickle.loads(pickle.dumps(clips))  # loader workers: no open maps pickled
        torch.testing.assert_close(clone[1]["flows"], clips[1]["flows"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="pairs frames 1 apart, the clips 2 apart"):
        ClipDataset(videos, cache, "toy", clip_len=3, frame_stride=2).attach_flows(FlowCache(cache, DISFlow()), "toy")


def test_datamodule_flows_on_request_and_injected_validation_videos_get_their_own(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    for split in ("training", "testing"):
        for k, name in enumerate(("01", "02", "03")):
            write_video(root / split / "frames" / name, moving_square(30, step=1 + k % 2, seed=k))
    (root / "testing" / "labels").mkdir()
    for name in ("01", "02", "03"):
        np.save(root / "testing" / "labels" / f"{name}.npy", np.zeros(30, np.uint8))
    options = {"image_size": (32, 32), "channels": 1, "clip_len": 3, "batch_size": 4, "cache_dir": tmp_path / "c"}
    plain = VideoDataModule("toy", root, **options)
    plain.prepare_data()
    plain.setup("fit")
    assert "flows" not in next(iter(plain.train_dataloader()))
    assert not list((tmp_path / "c").rglob("flows-*"))  # nothing computed for a method that does not ask
    dm = VideoDataModule("toy", root, val_videos=1, val_pseudo={"kinds": ["patch"], "events": 1}, **options)
    dm.request({"flows": DISFlow()})
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    for loader in (dm.train_dataloader(), dm.test_dataloader()):
        assert next(iter(loader))["flows"].shape == (4, 2, 2, 32, 32)
    val = dm.val_dataset
    injected = val.frames(0)
    event = val.plans[0].events[0]
    np.testing.assert_array_equal(val.video_flows(0), compute_flows(DISFlow(), injected))
    cached = dm.flow_cache.load(val.videos[0], "toy/training")
    inside = slice(event.start, event.stop - 1)
    assert not np.allclose(val.video_flows(0)[inside], cached[inside], atol=0.05)  # the patch moves: other flows
    batch = next(iter(dm.val_dataloader()))
    np.testing.assert_array_equal(batch["flows"][0].numpy(), val.video_flows(0)[0:2])
