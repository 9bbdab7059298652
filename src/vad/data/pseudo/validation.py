"""A labelled validation set without test labels: pseudo-anomalies injected into held-out NORMAL training videos.

Video anomaly benchmarks ship no validation set with anomalies, so checkpoints, presets and sweep winners have
usually been chosen on the test labels. With ``dataset.val_videos=k`` the datamodule holds k training videos out;
this module turns each into a labelled video by injecting ``events`` pseudo-anomalies into known frame ranges (the
frames of a range are labelled 1, every other frame 0), deterministic by seed. Every validation epoch then scores
these videos with the test's protocol (per-video min-max, the method's fusion) and logs ``val/auc_micro`` and
``val/auc_macro``.

Kinds (``dataset.val_pseudo.kinds``; each video's events take them in turn, so every kind appears):

- ``patch``: a window of another held-out video's frame crossing the scene (a foreign object), soft-edged;
- ``local_speed``: a region of the frame shows its own content ``factor`` x faster (a cyclist among walkers: local,
  where a whole-frame speed-up is global);
- ``skip_frame``: the whole video plays ``factor`` x faster for the range (frames dropped; the video gets shorter);
- ``reverse``: the range plays backwards.

    dataset.val_videos=2 dataset.val_pseudo.events=3 test_checkpoint=best_val

Sizes: a patch or fast region is ``size`` (a [low, high] share of the frame's shorter side, square) by default; with
``object_scale=[low, high]`` it is instead the scene's own moving-object size times a factor drawn from that range,
aspect kept: the typical box of the moving objects of the held-out videos (:func:`vad.data.pseudo.kinds.moving_objects`,
background subtraction on their original frames, area-weighted medians), so an injected object is about as large as
the people of the scene whatever the camera's distance and the working size. A ``patch`` is then cut around one of
those moving objects (at least half the typical height and width) of another held-out video, so what crosses the
scene is an object of the scene (a person moving several times faster than anyone walks), not a piece of
background; a ``local_speed`` region is centred on a moving object of the video itself, so something moves in it.

The plan (videos, ranges in the injected videos' frame numbers, kinds and their parameters, the measured object
size) is saved with the run (``val_pseudo.json``). Local kinds are the default: the r-GAN family's results showed
that a whole-frame speed-up ranks detectors differently from the local anomalies of the benchmarks
(``experiments/results/rgan_family_pilots.md``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vad.data.cache import FrameCache
from vad.data.clips import TestClipDataset
from vad.data.flows import compute_flows
from vad.data.index import Video
from vad.data.pseudo import kinds as ops
from vad.errors import ConfigError

VALIDATION_KINDS = ("patch", "local_speed", "skip_frame", "reverse")
DEFAULTS: Mapping[str, Any] = {
    "kinds": ["patch", "local_speed"],
    "events": 2,
    "length": [12, 30],
    "size": [0.2, 0.35],
    "object_scale": None,
    "speed": [0.03, 0.08],
    "factor": [2, 4],
    "seed": None,
}


@dataclass
class Event:
    """One injected pseudo-anomaly: frames ``start`` .. ``stop - 1`` of the injected video, of ``kind``."""

    kind: str
    start: int
    stop: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class VideoPlan:
    """How one held-out video is turned into a labelled one: ``source`` maps each output frame to a frame of the
    original video (skip_frame and reverse re-time it), then the local events are drawn over it."""

    name: str
    original_frames: int
    source: list[int]
    events: list[Event]

    @property
    def num_frames(self) -> int:
        return len(self.source)

    def labels(self) -> np.ndarray:
        labels = np.zeros(self.num_frames, dtype=np.int64)
        for event in self.events:
            labels[event.start : event.stop] = 1
        return labels

    def to_json(self) -> dict[str, Any]:
        return {
            "video": self.name,
            "original_frames": self.original_frames,
            "frames": self.num_frames,
            "anomalous_frames": int(self.labels().sum()),
            "events": [asdict(e) for e in self.events],
        }


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``dataset.val_pseudo`` merged over :data:`DEFAULTS`, checked."""
    merged = dict(DEFAULTS) | dict(options or {})
    unknown = sorted(set(merged) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"dataset.val_pseudo has unknown key(s) {unknown}; valid: {list(DEFAULTS)}")
    bad = sorted(set(merged["kinds"]) - set(VALIDATION_KINDS))
    if bad or not merged["kinds"]:
        raise ConfigError(f"dataset.val_pseudo.kinds={list(merged['kinds'])}: choose from {list(VALIDATION_KINDS)}")
    if int(merged["events"]) < 1:
        raise ConfigError(f"dataset.val_pseudo.events must be >= 1, got {merged['events']}")
    lo, hi = (int(v) for v in merged["length"])
    if not 1 <= lo <= hi:
        raise ConfigError(f"dataset.val_pseudo.length must be [low, high] frames with 1 <= low <= high, got {[lo, hi]}")
    scale = merged["object_scale"]
    if scale is not None:
        try:
            slo, shi = (float(v) for v in scale)
        except (TypeError, ValueError):
            slo, shi = 0.0, -1.0
        if not 0 < slo <= shi:
            raise ConfigError(
                f"dataset.val_pseudo.object_scale must be null or [low, high] multiples of the scene's moving-object "
                f"size with 0 < low <= high, got {scale}"
            )
    flo, fhi = (int(v) for v in merged["factor"])
    if not 2 <= flo <= fhi:
        raise ConfigError(f"dataset.val_pseudo.factor must be [low, high] integers >= 2, got {[flo, fhi]}")
    return merged


def plan_video(
    rng: np.random.Generator,
    name: str,
    num_frames: int,
    frame_size: tuple[int, int],
    event_kinds: Sequence[str],
    options: Mapping[str, Any],
    guard: int,
    sources: Sequence[int],
    object_size: Sequence[float] | None = None,
    objects: Sequence[Sequence[ops.MovingObject]] | None = None,
    own: int | None = None,
) -> VideoPlan:
    """The plan of one video of ``num_frames`` original frames: ``options["events"]`` events, one per equal segment
    of the video, each starting at least ``guard`` frames into its segment (the first frames of a video are not
    scored); a patch comes from one of the videos ``sources`` (positions among the held-out videos). Patches and
    regions are ``object_size`` (height, width) times ``options["object_scale"]`` when given, else
    ``options["size"]`` of the frame; a patch is then cut around one of ``objects[source]`` (the moving objects of
    each held-out video) when that video has any, and a fast region is centred on one of ``objects[own]`` (this
    video's) seen nearest the event's first frame."""
    count = int(options["events"])
    lo, hi = (int(v) for v in options["length"])
    segment = num_frames // count
    source: list[int] = []
    events: list[Event] = []
    for k in range(count):
        begin, end = k * segment, (k + 1) * segment if k < count - 1 else num_frames
        kind = event_kinds[k % len(event_kinds)]
        factor = int(rng.integers(int(options["factor"][0]), int(options["factor"][1]) + 1))
        consumed = factor if kind == "skip_frame" else 1  # original frames per output frame
        room = (end - begin - guard) // consumed
        length = min(int(rng.integers(lo, hi + 1)), room)
        if length < 1:
            raise ConfigError(
                f"held-out video '{name}' ({num_frames} frames) is too short for {count} pseudo-anomalies after "
                f"{guard} unscored frames each; lower dataset.val_pseudo.events or .length"
            )
        first = begin + guard + int(rng.integers(0, room - length + 1)) if room > length else begin + guard
        source.extend(range(begin, first))
        out = len(source)
        params: dict[str, Any] = {}
        if kind == "skip_frame":
            source.extend(range(first, first + factor * length, factor))
            params["factor"] = factor
            rest = first + factor * length
        elif kind == "reverse":
            source.extend(range(first + length - 1, first - 1, -1))
            rest = first + length
        else:
            source.extend(range(first, first + length))
            rest = first + length
            scene = None if objects is None else (object_size, objects, own, first)
            params = _local_params(rng, kind, frame_size, length, factor, options, sources, scene)
        source.extend(range(rest, end))
        events.append(Event(kind, out, out + length, params))
    return VideoPlan(name, num_frames, source, events)


def _local_params(
    rng: np.random.Generator,
    kind: str,
    frame_size: tuple[int, int],
    length: int,
    factor: int,
    options: Mapping[str, Any],
    sources: Sequence[int],
    scene: tuple[Sequence[float], Sequence[Sequence[ops.MovingObject]], int | None, int] | None = None,
) -> dict[str, Any]:
    """The parameters of a patch or local_speed event; ``scene`` = (typical object size, the moving objects of each
    held-out video, this video's position among them, the event's first original frame) when
    ``options["object_scale"]`` sizes the event by the scene."""
    objects: Sequence[Sequence[ops.MovingObject]] | None = None
    if options.get("object_scale") is not None:
        if scene is None:
            raise ValueError("val_pseudo.object_scale needs the scene's moving objects")
        object_size, objects, own, first = scene
        size = ops.scene_patch_size(rng, frame_size, object_size, options["object_scale"])
    else:
        size = ops.patch_size(rng, frame_size, options["size"])
    if kind == "local_speed":
        y = int(rng.integers(0, frame_size[0] - size[0] + 1))
        x = int(rng.integers(0, frame_size[1] - size[1] + 1))
        mine = [] if objects is None or own is None else objects[own]
        if mine:  # centred on an object seen nearest the event's start, so something moves in the region
            nearest = min(abs(o.frame - first) for o in mine)
            candidates = [o for o in mine if abs(o.frame - first) == nearest]
            chosen = candidates[int(rng.integers(len(candidates)))]
            y = min(max(0, chosen.y + chosen.height // 2 - size[0] // 2), frame_size[0] - size[0])
            x = min(max(0, chosen.x + chosen.width // 2 - size[1] // 2), frame_size[1] - size[1])
        return {"factor": factor, "region": [y, x, size[0], size[1]]}
    side = min(frame_size)
    speed = (float(options["speed"][0]) * side, float(options["speed"][1]) * side)
    track = ops.patch_track(rng, frame_size, size, length, speed)
    source_video = int(sources[int(rng.integers(len(sources)))])
    if options.get("object_scale") is not None and objects is not None and objects[source_video]:
        chosen = objects[source_video][int(rng.integers(len(objects[source_video])))]
        return {
            "source_video": source_video,
            "source_frame": chosen.frame,
            "source_centre": [chosen.y + chosen.height // 2, chosen.x + chosen.width // 2],
            "size": list(size),
            "track": [list(c) for c in track],
        }
    return {
        "source_video": source_video,
        "source_fraction": float(rng.uniform(0, 1)),
        "source_corner": [float(rng.uniform(0, 1)), float(rng.uniform(0, 1))],
        "size": list(size),
        "track": [list(c) for c in track],
    }


def inject(frames: np.ndarray, plan: VideoPlan, sources: Sequence[np.ndarray]) -> np.ndarray:
    """The injected uint8 (N', C, H, W) video of ``plan`` from the original ``frames``; ``sources`` are the
    videos a patch may come from (indexed by ``source_video``)."""
    out = frames[plan.source].copy()
    last = len(frames) - 1
    for event in plan.events:
        p = event.params
        if event.kind == "local_speed":
            y, x, h, w = p["region"]
            mask = ops.smooth_mask((h, w), max(1, min(h, w) // 6))
            origin = plan.source[event.start]
            for k, frame in enumerate(out[event.start : event.stop]):
                fast = frames[min(origin + p["factor"] * k, last), :, y : y + h, x : x + w]
                ops.paste_patch(frame, fast, (y, x), mask)
        elif event.kind == "patch":
            video = sources[p["source_video"]]
            h, w = p["size"]
            if "source_frame" in p:  # around a moving object of the source video, kept inside the frame
                src = video[p["source_frame"]]
                cy = min(max(0, p["source_centre"][0] - h // 2), src.shape[1] - h)
                cx = min(max(0, p["source_centre"][1] - w // 2), src.shape[2] - w)
            else:
                src = video[min(int(p["source_fraction"] * len(video)), len(video) - 1)]
                cy = int(p["source_corner"][0] * (src.shape[1] - h))
                cx = int(p["source_corner"][1] * (src.shape[2] - w))
            patch = src[:, cy : cy + h, cx : cx + w]
            mask = ops.smooth_mask((h, w), max(1, min(h, w) // 5))
            for frame, corner in zip(out[event.start : event.stop], p["track"], strict=True):
                ops.paste_patch(frame, patch, tuple(corner), mask)
    return out


class PseudoValidationClips(TestClipDataset):
    """The clips of the injected held-out videos, labelled by the plan; items as :class:`TestClipDataset`.

    Each video is injected when first read and kept until another is read (the validation loader reads them in
    order), so at most one injected video is held in memory.
    """

    def __init__(
        self,
        videos: Sequence[Video],
        cache: FrameCache,
        dataset_name: str,
        clip_len: int = 5,
        frame_stride: int = 1,
        options: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(videos, cache, dataset_name, clip_len=clip_len, frame_stride=frame_stride)
        self.options = check_options(options)
        guard = self.span - 1 + 2
        # the held-out videos are drawn by the dataset seed; the injection by val_pseudo.seed when given, so several
        # injections of the same held-out videos can be compared
        injection = int(seed if self.options["seed"] is None else self.options["seed"])
        self.object_size: tuple[float, float] | None = None
        objects: list[list[ops.MovingObject]] | None = None
        if self.options["object_scale"] is not None:
            self.object_size, objects = self._scene_objects()
        self.plans = []
        for i, video in enumerate(self.videos):
            original = self._original(i)
            rng = np.random.default_rng([injection, i])
            size = (int(original.shape[2]), int(original.shape[3]))
            names = self.options["kinds"]
            event_kinds = [names[(i + k) % len(names)] for k in range(len(names))]  # video i starts with kind i
            others = [j for j in range(len(self.videos)) if j != i] or [i]
            self.plans.append(
                plan_video(
                    rng,
                    video.name,
                    len(original),
                    size,
                    event_kinds,
                    self.options,
                    guard,
                    others,
                    self.object_size,
                    objects,
                    own=i,
                )
            )
        self.num_frames = [p.num_frames for p in self.plans]
        self.labels = [p.labels() for p in self.plans]
        self._index_clips()
        self._injected: OrderedDict[int, np.ndarray] = OrderedDict()
        self._injected_flows: dict[int, np.ndarray] = {}

    def _scene_objects(self) -> tuple[tuple[float, float], list[list[ops.MovingObject]]]:
        """The typical (height, width) of the moving objects of the held-out videos' original frames, and, per video,
        its objects at least half the typical height and width (where patches are cut)."""
        found = [ops.moving_objects(self._original(i)) for i in range(len(self.videos))]
        if not any(found):
            names = ", ".join(v.name for v in self.videos)
            raise ConfigError(
                f"dataset.val_pseudo.object_scale: nothing moves in the held-out videos ({names}) to take an object "
                "size from; set dataset.val_pseudo.object_scale=null to size pseudo-anomalies by "
                "dataset.val_pseudo.size"
            )
        size = ops.typical_object_size([o for video in found for o in video])
        return size, [ops.large_enough(video, size) for video in found]

    def video_flows(self, video_id: int) -> np.ndarray:
        """The flow targets of the injected video: computed with the flow cache's estimator from the injected frames
        (the cached flows are those of the original video), once per injection."""
        flows = self._injected_flows.get(video_id)
        if flows is None:
            assert self.flow_cache is not None  # attach_flows() was called
            flows = compute_flows(self.flow_cache.estimator, self.frames(video_id), self.frame_stride)
            self._injected_flows = {video_id: flows}
        return flows

    def _original(self, video_id: int) -> np.ndarray:
        return super().frames(video_id)

    def frames(self, video_id: int) -> np.ndarray:
        array = self._injected.get(video_id)
        if array is None:
            sources = _LazyVideos(self)
            array = inject(self._original(video_id), self.plans[video_id], sources)
            self._injected.clear()
            self._injected[video_id] = array
        return array

    def describe(self) -> dict[str, Any]:
        """The plan as JSON: options and, per video, its events (frame ranges of the injected video)."""
        described: dict[str, Any] = {"options": dict(self.options), "videos": [p.to_json() for p in self.plans]}
        if self.object_size is not None:
            described["object_size"] = list(self.object_size)  # (height, width) pixels at the working size
        return described

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_injected"] = OrderedDict()
        state["_injected_flows"] = {}
        return state


class _LazyVideos(Sequence):
    """The original held-out videos, mapped only when a patch is taken from them."""

    def __init__(self, dataset: PseudoValidationClips) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.videos)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return self.dataset._original(i)
