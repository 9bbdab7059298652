"""Pseudo-anomalies: the operations, the training plug-ins (indices, placement, flags, determinism, objectives) and
the labelled validation set injected into held-out normal videos."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vad.data.batches import frames_to_float
from vad.data.cache import FrameCache
from vad.data.clips import ClipDataset
from vad.data.datamodule import VideoDataModule
from vad.data.layout import open_dataset
from vad.data.pseudo import kinds
from vad.data.pseudo.plugins import PseudoClips
from vad.data.pseudo.validation import PseudoValidationClips
from vad.errors import ConfigError
from vad.methods.base import VADModule
from vad.selection import choose_training_then_score, keep_unless_beaten, paired_t, paired_wins

LENGTHS = {"01": 40, "02": 36, "03": 44}
SIZE = 32


def value(video: str, frame: int) -> int:
    """The grey level of every pixel of a frame: it identifies (video, frame)."""
    return (int(video) * 60 + frame * 1) % 256


@pytest.fixture
def toy_root(tmp_path: Path) -> Path:
    root = tmp_path / "toy"
    for video, n in LENGTHS.items():
        folder = root / "training" / "frames" / video
        folder.mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((SIZE, SIZE), value(video, i), np.uint8))
    (root / "testing" / "frames" / "01").mkdir(parents=True)
    cv2.imwrite(str(root / "testing" / "frames" / "01" / "000.png"), np.zeros((SIZE, SIZE), np.uint8))
    return root


def clips(root: Path, tmp_path: Path, clip_len: int = 5, kind: type = ClipDataset, **kwargs) -> ClipDataset:
    index = open_dataset("toy", root, layout="ffp")
    cache = FrameCache(tmp_path / "cache", (SIZE, SIZE), 1, "area")
    cache.build(index.train, "toy/training", progress=False)
    return kind(index.train, cache, "toy/training", clip_len=clip_len, **kwargs)


def frame_numbers(frames: torch.Tensor, video: str) -> list[int]:
    """Which frames of ``video`` a (T, 1, H, W) uint8 clip holds, read off the centre pixel's grey level after the
    conversion to [-1, 1] the method applies on its device."""
    assert frames.dtype == torch.uint8  # items stay uint8, pseudo-anomalies included
    levels = ((frames_to_float(frames)[:, 0, 0, 0] + 1) * 127.5).round().int().tolist()
    return [(level - int(video) * 60) % 256 for level in levels]


# ---------------------------------------------------------------------------------------------------------- kinds
def test_frame_orders() -> None:
    assert kinds.skipped_frames(10, 5, 3) == [10, 13, 16, 19, 22]
    assert kinds.speed_frames(4, 5, 0.5) == [4, 4, 5, 6, 6]  # round half to even: 0, 0.5, 1, 1.5, 2
    assert kinds.speed_frames(0, 3, 2.0) == [0, 2, 4]


@pytest.mark.parametrize("seed", range(20))
def test_a_patch_track_keeps_the_whole_patch_inside_the_frame(seed: int) -> None:
    rng = np.random.default_rng(seed)
    track = kinds.patch_track(rng, (24, 40), (10, 6), length=30, speed=(5, 50))  # steps longer than the frame
    assert len(track) == 30
    for y, x in track:
        assert 0 <= y <= 24 - 10
        assert 0 <= x <= 40 - 6
    moves = {(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(track)}
    assert moves != {(0, 0)}


def test_smooth_mask_and_exact_blending() -> None:
    mask = kinds.smooth_mask((9, 9), edge=3)
    assert mask[4, 4] == 1.0
    assert mask[0, 0] == pytest.approx(0.25)
    assert mask.min() > 0
    assert np.all(np.diff(mask[4, :5]) >= 0)  # rising towards the centre
    frame = np.full((1, 12, 12), 100, np.uint8)
    patch = np.full((1, 9, 9), 200, np.uint8)
    kinds.paste_patch(frame, patch, (2, 3), mask)
    assert frame[0, 6, 7] == 200  # the centre of the patch: mask 1
    assert frame[0, 2, 3] == 125  # its corner: 0.25 * 200 + 0.75 * 100
    assert frame[0, 0, 0] == 100
    assert frame[0, 11, 11] == 100
    with pytest.raises(ValueError, match="leaves"):
        kinds.paste_patch(frame, patch, (5, 5), mask)


# ------------------------------------------------------------------------------------------------ training plug-ins
def test_skip_frame_clips_sample_every_s_frames_and_keep_the_normal_target(toy_root: Path, tmp_path: Path) -> None:
    base = clips(toy_root, tmp_path)
    plug = PseudoClips(base, {"skip_frame": {"strides": [3]}}, probability=1.0)
    for i in (0, 7, len(base) - 1):
        item = plug[(0, i)]
        video_id, start = base.locate(i)
        name = base.videos[video_id].name
        numbers = frame_numbers(item["frames"], name)
        first = numbers[0]
        assert numbers == [first + 3 * k for k in range(5)]
        assert first == min(start, LENGTHS[name] - 13)  # moved back at the end of the video
        assert item["pseudo"] == 1
        assert item["pseudo_negative"] == 0.0
        # not_reconstruct: trained towards the target of the stride-1 clip from the same start
        assert frame_numbers(item["target"][None], name) == [first + 4]

    negative = PseudoClips(base, {"skip_frame": {"strides": [2]}}, probability=1.0, objective="negative", bound=0.1)
    item = negative[(0, 3)]
    assert torch.equal(item["target"], item["frames"][-1])  # its own (skipped) target
    assert item["pseudo_negative"] == 1.0
    assert item["pseudo_bound"] == 0.1


def test_speed_plugin_reverses_or_slows_the_clip(toy_root: Path, tmp_path: Path) -> None:
    base = clips(toy_root, tmp_path)
    reverse = PseudoClips(base, {"speed": {"factors": [], "reverse": True}}, probability=1.0)
    _, start = base.locate(5)
    assert frame_numbers(reverse[(0, 5)]["frames"], "01") == list(range(start + 4, start - 1, -1))
    slow = PseudoClips(base, {"speed": {"factors": [0.5], "reverse": False}}, probability=1.0)
    assert frame_numbers(slow[(0, 5)]["frames"], "01") == [start + n for n in (0, 0, 1, 2, 2)]


def test_patch_plugin_changes_only_pixels_under_the_moving_patch(toy_root: Path, tmp_path: Path) -> None:
    base = clips(toy_root, tmp_path)
    plug = PseudoClips(base, {"patch": {"size": [0.25, 0.25], "speed": [0.1, 0.1], "edge": 0.0}}, probability=1.0)
    changed_somewhere = False
    for i in range(0, len(base), 9):
        item = plug[(2, i)]
        assert item["frames"].dtype == item["target"].dtype == torch.uint8
        video_id, start = base.locate(i)
        normal = torch.from_numpy(base.clip(video_id, start).astype(np.float32) / 127.5 - 1)
        diff = (frames_to_float(item["frames"]) - normal).abs()[:, 0] > 1e-6
        for t in range(5):
            ys, xs = np.nonzero(diff[t].numpy())
            if ys.size:  # a uniform frame differs from the patch's source frame
                changed_somewhere = True
                assert ys.max() - ys.min() < 8
                assert xs.max() - xs.min() < 8
        # trained towards the frame without the patch
        assert torch.allclose(frames_to_float(item["target"]), normal[-1])
    assert changed_somewhere


def test_draws_are_deterministic_per_epoch_and_follow_the_probability(toy_root: Path, tmp_path: Path) -> None:
    base = clips(toy_root, tmp_path)
    options = {"skip_frame": {}, "patch": {}, "speed": {}}
    plug = PseudoClips(base, options, probability=0.3, seed=4)
    again = PseudoClips(base, options, probability=0.3, seed=4)
    flags = {e: [plug[(e, i)]["pseudo"] for i in range(len(base))] for e in range(3)}
    assert flags[0] == [again[(0, i)]["pseudo"] for i in range(len(base))]
    assert torch.equal(plug[(1, 17)]["frames"], again[(1, 17)]["frames"])
    assert flags[0] != flags[1]  # each epoch draws anew
    rate = np.mean([f for e in flags for f in flags[e]])
    assert 0.18 < rate < 0.42
    seen = {plug.sample((e, i))["pseudo_kind"] for e in range(3) for i in range(len(base))}
    assert seen == {None, "skip_frame", "patch", "speed"}
    none = PseudoClips(base, options, probability=0.0)
    item = none[(0, 3)]
    assert item["pseudo"] == 0
    assert torch.equal(item["frames"], base[3]["frames"])


def test_the_datamodule_hands_pseudo_items_to_the_training_loader(toy_root: Path, tmp_path: Path) -> None:
    pseudo = {"kinds": {"skip_frame": {"strides": [2]}}, "probability": 0.5, "objective": "negative"}
    dm = VideoDataModule(
        "toy", toy_root, image_size=(SIZE, SIZE), channels=1, clip_len=5, batch_size=8, pseudo=pseudo,
        cache_dir=tmp_path / "cache", layout="ffp",
    )  # fmt: skip
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert all(b["frames"].dtype == b["target"].dtype == torch.uint8 for b in batches)
    flags = torch.cat([b["pseudo"] for b in batches])
    assert len(flags) == len(dm.train_dataset)
    assert 0 < flags.sum() < len(flags)
    negative = torch.cat([b["pseudo_negative"] for b in batches])
    assert torch.equal(negative > 0, flags > 0)
    with pytest.raises(ConfigError, match=r"pseudo.kinds has unknown kind\(s\) \['blur'\]"):
        PseudoClips(dm.train_dataset.base, {"blur": {}})
    typo = VideoDataModule(
        "toy", toy_root, image_size=(SIZE, SIZE), channels=1, clip_len=5, layout="ffp", cache_dir=tmp_path / "cache",
        pseudo={"kinds": {"patch": {}}, "probabilty": 0.3},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"dataset.pseudo: .*'probabilty'.*its keys are kinds, probability"):
        typo.setup("fit")
    with pytest.raises(ConfigError, match=r"pseudo\.objective"):
        PseudoClips(dm.train_dataset.base, {"patch": {}}, objective="invert")


# ------------------------------------------------------------------------------------------ the negative objective
class _Probe(VADModule):
    signals = ("psnr",)

    def __init__(self) -> None:
        super().__init__(channels=1, clip_len=2)


# the module's training_step is called here without a Trainer, so Lightning's self.log has nowhere to log
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)` but the `self.trainer` reference:UserWarning")
def test_split_pseudo_and_the_bounded_negative_term() -> None:
    probe = _Probe()
    batch = {
        "frames": torch.zeros(3, 2, 1, 4, 4),
        "video": ["a", "b", "c"],
        "pseudo_negative": torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64),
        "pseudo_bound": torch.full((3,), 0.5, dtype=torch.float64),
    }
    usual, negative = probe.split_pseudo(batch)
    assert usual is not None
    assert negative is not None
    assert usual["video"] == ["a", "c"]
    assert negative["video"] == ["b"]
    assert negative["frames"].shape[0] == 1
    plain = {"frames": torch.zeros(2, 2, 1, 4, 4)}
    assert probe.split_pseudo(plain)[1] is None

    # error below the bound: the gradient raises the error; above it: no gradient (the loss cannot run away)
    for offset, grows in ((0.3, True), (2.0, False)):
        output = torch.full((1, 1, 4, 4), offset, requires_grad=True)  # mse = offset^2 against a zero target
        term = probe.pseudo_negative_term(output, negative)
        assert term.item() == pytest.approx(-2.0 * min(offset**2, 0.5))
        term.backward()
        if grows:
            assert (output.grad < 0).all()  # gradient descent moves the output away from the target
        else:
            assert (output.grad == 0).all()


# ------------------------------------------------------------------------------------------- validation injection
OPTIONS = {"kinds": ["patch", "local_speed", "skip_frame", "reverse"], "events": 4, "length": [4, 6]}


def test_the_validation_plan_labels_exactly_the_injected_frames(toy_root: Path, tmp_path: Path) -> None:
    val = clips(toy_root, tmp_path, kind=PseudoValidationClips, options=OPTIONS, seed=1)
    again = clips(toy_root, tmp_path, kind=PseudoValidationClips, options=OPTIONS, seed=1)
    other = clips(toy_root, tmp_path, kind=PseudoValidationClips, options=OPTIONS, seed=2)
    assert val.describe()["videos"] == again.describe()["videos"] != other.describe()["videos"]
    # val_pseudo.seed draws the injection alone: seed 2's injection into the videos held out by seed 1
    reseeded = clips(toy_root, tmp_path, kind=PseudoValidationClips, options=OPTIONS | {"seed": 2}, seed=1)
    assert reseeded.describe()["videos"] == other.describe()["videos"]
    json.dumps(val.describe())
    for video_id, plan in enumerate(val.plans):
        name = plan.name
        frames = val.frames(video_id)
        assert len(frames) == plan.num_frames == val.num_frames[video_id]
        labels = np.zeros(plan.num_frames, np.int64)
        kinds_seen = []
        for event in plan.events:
            labels[event.start : event.stop] = 1
            kinds_seen.append(event.kind)
            assert event.start >= val.span - 1  # every injected frame is scored
            seg = plan.source[event.start : event.stop]
            if event.kind == "skip_frame":
                assert np.all(np.diff(seg) == event.params["factor"])
            elif event.kind == "reverse":
                assert np.all(np.diff(seg) == -1)
            elif event.kind == "local_speed":
                y, x, h, w = event.params["region"]
                inside = frames[event.stop - 1, 0, y + h // 2, x + w // 2]
                fast = min(seg[0] + event.params["factor"] * (len(seg) - 1), LENGTHS[name] - 1)
                assert inside == value(name, fast)
        assert sorted(kinds_seen) == sorted(OPTIONS["kinds"])
        assert np.array_equal(val.labels[video_id], labels)
        # outside the events every frame is the original frame the plan maps it to
        outside = np.nonzero(labels == 0)[0]
        assert [int(frames[t, 0, 0, 0]) for t in outside] == [value(name, plan.source[t]) for t in outside]
        shortened = sum((e.params["factor"] - 1) * (e.stop - e.start) for e in plan.events if e.kind == "skip_frame")
        assert plan.num_frames == LENGTHS[name] - shortened
        assert plan.original_frames == LENGTHS[name]


def test_validation_items_carry_the_pseudo_labels(toy_root: Path, tmp_path: Path) -> None:
    val = clips(toy_root, tmp_path, kind=PseudoValidationClips, options=OPTIONS, seed=1)
    items = [val[i] for i in range(len(val))]
    for item in items:
        assert item["label"] == val.labels[item["video_id"]][item["index"]]
    assert 0 < sum(item["label"] for item in items) < len(items)


def test_a_video_too_short_for_the_events_is_refused_with_the_fix(toy_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"too short for 9 pseudo-anomalies.*lower dataset.val_pseudo.events"):
        clips(toy_root, tmp_path, kind=PseudoValidationClips, options={"events": 9})
    with pytest.raises(ConfigError, match=r"val_pseudo.kinds=\['fog'\]"):
        clips(toy_root, tmp_path, kind=PseudoValidationClips, options={"kinds": ["fog"]})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['event'\]"):
        clips(toy_root, tmp_path, kind=PseudoValidationClips, options={"event": 1})


def test_the_validation_auc_has_the_test_polarity(toy_root: Path, tmp_path: Path) -> None:
    """Copy-last on the injected videos: a pasted patch or a region replayed faster makes the last frame a worse
    prediction, so a correct protocol gives an AUC well above 0.5 (a flipped polarity would give one below)."""
    import lightning as L

    from vad.methods.copy_last import CopyLast

    dm = VideoDataModule(
        "toy", toy_root, image_size=(SIZE, SIZE), channels=1, clip_len=2, layout="ffp", cache_dir=tmp_path / "cache",
        val_videos=2, val_pseudo={"kinds": ["patch", "local_speed"], "events": 2, "length": [4, 6]},
    )  # fmt: skip
    model = CopyLast(channels=1, clip_len=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(model, datamodule=dm, verbose=False)
    assert model.val_result is not None
    assert model.val_result.auc_micro > 0.8
    assert model.val_result.label_source.startswith("pseudo-anomalies injected")


# --------------------------------------------------------------------------------- scene-sized validation injection
def person_video(frames: int, start_x: int, size: int = SIZE, walker: bool = True) -> np.ndarray:
    """uint8 (N, 1, size, size): a dark 8x3 'person' walking right 1 px per frame over a bright textured background
    (without ``walker``, the background alone: nothing moves)."""
    yy, xx = np.mgrid[:size, :size]
    background = (170 + 10 * ((yy // 4 + xx // 4) % 2)).astype(np.uint8)  # a fixed checker: texture, not motion
    video = np.repeat(background[None, None], frames, axis=0)
    for t in range(frames):
        x = 3 + (start_x + t) % (size - 9)  # away from the borders (a closing there may grow a box by a column)
        video[t, 0, 12:20, x : x + 3] = 40 if walker else video[t, 0, 12:20, x : x + 3]
    return video


def write_people(root: Path, walker: bool = True) -> Path:
    for video, n in LENGTHS.items():
        folder = root / "training" / "frames" / video
        folder.mkdir(parents=True)
        for i, frame in enumerate(person_video(n, start_x=int(video) * 5, walker=walker)):
            cv2.imwrite(str(folder / f"{i:03d}.png"), frame[0])
    (root / "testing" / "frames" / "01").mkdir(parents=True)
    cv2.imwrite(str(root / "testing" / "frames" / "01" / "000.png"), np.zeros((SIZE, SIZE), np.uint8))
    return root


@pytest.fixture
def people_root(tmp_path: Path) -> Path:
    return write_people(tmp_path / "people")


def test_moving_objects_finds_the_walker_and_nothing_in_a_still_video() -> None:
    objects = kinds.moving_objects(person_video(40, start_x=0), samples=10)
    assert len(objects) == 10  # one per sampled frame
    assert {(o.height, o.width, o.area) for o in objects} == {(8, 3, 24)}
    assert all(o.y == 12 and o.x == 3 + o.frame % (SIZE - 9) for o in objects)  # where the walker is in that frame
    still = np.full((20, 1, SIZE, SIZE), 128, np.uint8)
    assert kinds.moving_objects(still) == []


def test_the_typical_object_size_is_weighted_by_area_so_fragments_do_not_outvote_people() -> None:
    person = kinds.MovingObject(height=20, width=7, area=100, frame=0, y=0, x=0)
    fragment = kinds.MovingObject(height=3, width=2, area=6, frame=0, y=0, x=0)
    # five fragments are the plain median; 100 of 130 foreground pixels belong to the person
    assert kinds.typical_object_size([person] + [fragment] * 5) == (20.0, 7.0)
    assert kinds.typical_object_size([person] * 2 + [fragment] * 40) == (3.0, 2.0)  # 200 of 440: fragments now
    with pytest.raises(ValueError, match="no moving object"):
        kinds.typical_object_size([])


def test_scene_patch_size_scales_the_object_keeps_its_aspect_and_stays_in_the_frame() -> None:
    rng = np.random.default_rng(0)
    assert kinds.scene_patch_size(rng, (64, 64), (17.0, 6.0), (1.0, 1.0)) == (17, 6)
    assert kinds.scene_patch_size(rng, (64, 64), (17.0, 6.0), (2.0, 2.0)) == (34, 12)
    assert kinds.scene_patch_size(rng, (20, 64), (17.0, 6.0), (2.0, 2.0)) == (20, 12)  # clipped to the frame
    assert kinds.scene_patch_size(rng, (64, 64), (1.0, 1.0), (0.5, 0.5)) == (2, 2)  # at least 2 px
    for _ in range(20):
        h, w = kinds.scene_patch_size(rng, (64, 64), (10.0, 4.0), (0.5, 2.0))
        assert 5 <= h <= 20
        assert 2 <= w <= 8


SCENE = {"kinds": ["patch", "local_speed"], "events": 2, "length": [4, 6], "object_scale": [1.0, 1.0]}


def test_scene_sized_injection_moves_an_object_of_the_scene(people_root: Path, tmp_path: Path) -> None:
    val = clips(people_root, tmp_path, kind=PseudoValidationClips, options=SCENE, seed=1)
    again = clips(people_root, tmp_path, kind=PseudoValidationClips, options=SCENE, seed=1)
    assert val.describe() == again.describe()
    described = val.describe()
    assert described["object_size"] == [8.0, 3.0]  # the walker, measured on the held-out videos
    json.dumps(described)
    kinds_seen = set()
    for video_id, plan in enumerate(val.plans):
        frames = val.frames(video_id)
        original = val._original(video_id)
        for event in plan.events:
            kinds_seen.add(event.kind)
            p = event.params
            if event.kind == "patch":
                assert p["size"] == [8, 3]  # object_scale [1, 1]: exactly the typical object
                source = val._original(p["source_video"])[p["source_frame"]]
                cy, cx = p["source_centre"]
                assert source[0, cy, cx] == 40  # cut around the source video's walker
                crop = source[0, cy - 4 : cy + 4, cx - 1 : cx + 2]  # the 8x3 window around that centre
                y, x = p["track"][0]
                pasted = frames[event.start, 0, y : y + 8, x : x + 3]
                # inside its 1-px soft edge the patch is the crop: the walker, carried to the track's position
                assert np.array_equal(pasted[1:-1, 1:-1], crop[1:-1, 1:-1])
                assert (crop[1:-1, 1:-1] == 40).all()
            else:
                y, x, h, w = p["region"]
                assert (h, w) == (8, 3)
                # centred on the video's walker as seen near the event's start: its rows, and a whole dark column of it
                # inside the region in one of the frames around that start (sampled frames are up to 2 apart)
                assert y == 12
                first = plan.source[event.start]
                near = original[max(0, first - 2) : first + 3, 0, y : y + h, x : x + w]
                assert (near == 40).all(axis=1).any()
    assert kinds_seen == {"patch", "local_speed"}
    assert len(val.plans) == len(LENGTHS)


def test_scene_sizes_are_refused_with_the_fix_when_nothing_moves_or_the_scale_is_wrong(
    people_root: Path, tmp_path: Path
) -> None:
    still = write_people(tmp_path / "still", walker=False)
    with pytest.raises(ConfigError, match=r"nothing moves in the held-out videos \(01, 02, 03\).*object_scale=null"):
        clips(still, tmp_path / "a", kind=PseudoValidationClips, options=SCENE)
    for bad in ([0, 1], [2, 1], "big", [1]):
        with pytest.raises(ConfigError, match=r"dataset.val_pseudo.object_scale must be null or \[low, high\]"):
            clips(people_root, tmp_path / "b", kind=PseudoValidationClips, options=SCENE | {"object_scale": bad})


def test_scene_sized_validation_runs_under_a_trainer_and_a_fast_walker_is_found(people_root: Path, tmp_path: Path):
    """The datamodule's validation with ``object_scale``: the walker pasted at 3-5 px per frame (it walks 1) makes
    copy-last's last frame a bad prediction exactly in the injected frames."""
    import lightning as L

    from vad.methods.copy_last import CopyLast

    dm = VideoDataModule(
        "people", people_root, image_size=(SIZE, SIZE), channels=1, clip_len=2, layout="ffp",
        cache_dir=tmp_path / "cache", val_videos=2,
        val_pseudo={"kinds": ["patch"], "events": 2, "length": [4, 6], "object_scale": [1.0, 1.5],
                    "speed": [0.1, 0.15]},
    )  # fmt: skip
    model = CopyLast(channels=1, clip_len=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(model, datamodule=dm, verbose=False)
    assert dm.validation_plan["object_size"] == [8.0, 3.0]
    assert model.val_result is not None
    assert model.val_result.auc_micro > 0.8


def test_large_enough_keeps_whole_objects_not_fragments() -> None:
    person = kinds.MovingObject(height=20, width=6, area=80, frame=0, y=0, x=0)
    thin = kinds.MovingObject(height=20, width=2, area=30, frame=0, y=0, x=0)  # tall but too narrow: a leg
    short = kinds.MovingObject(height=9, width=6, area=40, frame=0, y=0, x=0)  # under half the height
    half = kinds.MovingObject(height=10, width=3, area=20, frame=0, y=0, x=0)  # exactly half in both sides
    assert kinds.large_enough([person, thin, short, half], (20.0, 6.0)) == [person, half]


def test_keep_unless_beaten_needs_a_higher_mean_and_enough_paired_wins() -> None:
    incumbent = [0.80, 0.80, 0.80, 0.80, 0.80]
    # ahead on the mean by one large injection, behind on the others: a tie, the incumbent stays
    lucky = [0.99, 0.79, 0.79, 0.79, 0.79]
    assert keep_unless_beaten(incumbent, {"lucky": lucky}, wins=4) is None
    # ahead on 4 of 5 and on the mean: it wins; with 5 wins required it does not
    steady = [0.82, 0.82, 0.82, 0.82, 0.79]
    assert keep_unless_beaten(incumbent, {"steady": steady}, wins=4) == "steady"
    assert keep_unless_beaten(incumbent, {"steady": steady}, wins=5) is None
    # ahead on every injection but not on the mean is impossible; ahead on wins but behind on the mean: stays
    sinker = [0.81, 0.81, 0.81, 0.81, 0.50]
    assert keep_unless_beaten(incumbent, {"sinker": sinker}, wins=4) is None
    # equal values are not wins
    assert keep_unless_beaten(incumbent, {"same": list(incumbent)}, wins=1) is None
    # among qualified challengers, the highest mean; an unqualified higher mean does not count
    better = [0.90, 0.90, 0.90, 0.90, 0.79]
    lucky_mean = [3.0, 0.7, 0.7, 0.7, 0.7]
    challengers = {"steady": steady, "better": better, "lucky_mean": lucky_mean}
    assert keep_unless_beaten(incumbent, challengers, wins=4) == "better"


def test_paired_t_is_the_mean_paired_difference_over_its_standard_error() -> None:
    # differences 0.01, 0.03, -0.01, 0.05: mean 0.02, sample sd sqrt(0.002 / 3), se = sd / 2
    t = paired_t([0.81, 0.83, 0.79, 0.85], [0.80, 0.80, 0.80, 0.80])
    assert t == pytest.approx(0.02 / (np.sqrt(0.002 / 3) / 2), rel=1e-9)
    assert paired_t([0.75, 0.5], [1.0, 0.75]) == -np.inf  # behind by the same amount on every injection
    assert paired_t([1.0, 0.75], [0.75, 0.5]) == np.inf
    assert paired_t([0.5, 0.6], [0.5, 0.6]) == 0.0
    with pytest.raises(ConfigError, match="at least 2"):
        paired_t([0.9], [0.8])
    with pytest.raises(ConfigError, match="3 validation AUCs against 2; they must be paired"):
        paired_t([0.9, 0.9, 0.9], [0.5, 0.5])


def test_keep_unless_beaten_with_t_needs_the_lead_to_be_large_against_its_noise() -> None:
    incumbent = [0.80] * 10
    # ahead on 7 of 10 by a thousandth, behind on 3 by two: the mean is ahead, 7 wins, but t < 2
    small = [0.801] * 7 + [0.798] * 3
    assert paired_t(small, incumbent) < 2
    assert keep_unless_beaten(incumbent, {"small": small}, wins=7) == "small"
    assert keep_unless_beaten(incumbent, {"small": small}, wins=7, t=2.0) is None
    # a clear lead on 8 of 10 passes both
    clear = [0.83] * 8 + [0.79] * 2
    assert paired_t(clear, incumbent) > 2
    assert keep_unless_beaten(incumbent, {"small": small, "clear": clear}, wins=7, t=2.0) == "clear"
    # t only adds a condition: a challenger short of the wins is refused whatever its t
    assert keep_unless_beaten(incumbent, {"clear": clear}, wins=9, t=2.0) is None
    with pytest.raises(ConfigError, match="t=0 needs a positive value"):
        keep_unless_beaten(incumbent, {}, wins=7, t=0)
    with pytest.raises(ConfigError, match="at least 2 injections"):
        keep_unless_beaten([0.8], {}, wins=1, t=2.0)


def test_choose_training_then_score_compares_trainings_at_the_incumbents_score_then_scores_within() -> None:
    low, mid, high = [0.80, 0.81, 0.79, 0.80], [0.85, 0.86, 0.84, 0.85], [0.90, 0.91, 0.89, 0.90]
    aucs = {
        ("old", "s2"): low,
        ("old", "s4"): high,  # the incumbent training is better under another score: step 1 does not look at it
        ("new", "s2"): mid,
        ("new", "s4"): high,
        ("other", "s2"): [0.99, 0.5, 0.5, 0.5],  # ahead on the mean by one injection: a tie
        ("other", "s4"): [0.99] * 4,  # far ahead, but only under another score
    }
    assert choose_training_then_score(aucs, ("old", "s2"), wins=3) == ("new", "s4")
    # step 2 keeps the incumbent's score when no other score of the chosen training beats it by the margin
    assert choose_training_then_score({**aucs, ("new", "s4"): mid}, ("old", "s2"), wins=3) == ("new", "s2")
    # no challenger training beats the incumbent: it stays, and its scores are compared within it
    assert choose_training_then_score({k: v for k, v in aucs.items() if k[0] != "new"}, ("old", "s2"), wins=3) == (
        "old",
        "s4",
    )
    # with the size condition, a small steady lead is not enough in either step
    small = [0.801, 0.811, 0.791, 0.7995]  # ahead on 3 of 4 by a thousandth, t 1.67
    assert choose_training_then_score({("old", "s2"): low, ("new", "s2"): small}, ("old", "s2"), wins=3) == (
        "new",
        "s2",
    )
    assert choose_training_then_score({("old", "s2"): low, ("new", "s2"): small}, ("old", "s2"), wins=3, t=2.0) == (
        "old",
        "s2",
    )
    with pytest.raises(ConfigError, match="the incumbent \\('gone', 's2'\\) has no validation AUCs"):
        choose_training_then_score(aucs, ("gone", "s2"), wins=3)


def test_paired_wins_counts_strictly_higher_injections_and_refuses_unpaired_lists() -> None:
    assert paired_wins([0.9, 0.5, 0.7, 0.7], [0.8, 0.6, 0.7, 0.6]) == 2  # a tie (0.7 = 0.7) is not a win
    assert paired_wins([], []) == 0
    with pytest.raises(ConfigError, match="3 validation AUCs against 2; they must be paired"):
        paired_wins([0.9, 0.9, 0.9], [0.5, 0.5])


def test_keep_unless_beaten_refuses_unpaired_or_impossible_margins() -> None:
    with pytest.raises(ConfigError, match="'short' has 2 validation AUCs, the incumbent 3"):
        keep_unless_beaten([0.5, 0.5, 0.5], {"short": [0.9, 0.9]}, wins=2)
    with pytest.raises(ConfigError, match="wins=4 must be between 1 and the number of injections \\(3\\)"):
        keep_unless_beaten([0.5, 0.5, 0.5], {}, wins=4)
    with pytest.raises(ConfigError, match="no validation AUC"):
        keep_unless_beaten([], {}, wins=1)
