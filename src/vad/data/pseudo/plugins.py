"""Training plug-ins: with probability ``probability`` a training clip is replaced by a pseudo-anomalous one.

    python -m vad.train model=ffp pseudo=skip_frame                       (conf/pseudo/skip_frame.yaml)
    python -m vad.train model=mnad pseudo=patch pseudo.probability=0.3 pseudo.objective=negative

The plug-in sits in the data pipeline (``dataset.pseudo``), so every method takes it through config only. Kinds:

- :class:`SkipFrame` — the clip sampled every ``s`` frames, ``s`` drawn from ``strides`` (LNTRA, STEAL);
- :class:`Patch` — a window cut from another training frame crosses the clip in a straight line, blended with a
  soft-edged mask (SmoothMix);
- :class:`Speed` — the clip slowed down (frames repeated, factor < 1) or played backwards (``reverse``).

Each pseudo clip also has its *normal target*: the target of the unperturbed clip at the same place (the frame without
the patch, the stride-1 target of the same start). The objective decides what the method learns from it:

- ``not_reconstruct`` (LNTRA): the method is trained to output the normal target from the perturbed inputs, with its
  usual loss; nothing in the method changes.
- ``negative`` (STEAL): the method's own target is kept and the item gets the bounded negative loss
  ``-weight * min(mse(output, target), bound)`` instead of the usual terms (:meth:`vad.methods.base.VADModule.
  pseudo_negative_term`): pushing the error up is rewarded only until it reaches ``bound``, so the loss cannot run
  away. STEAL used this with probability 0.01.

Items gain ``target`` (the frame to learn towards, uint8 (C, H, W) like the clip's ``frames``: every kind works on
the cached uint8 frames, so items stay uint8 and the method converts both on its device, see
:data:`vad.data.batches.FRAME_KEYS`), ``pseudo`` (1 for a pseudo-anomaly),
``pseudo_negative`` (the negative weight, 0 unless the objective is ``negative`` and the item is a pseudo-anomaly) and
``pseudo_bound``. Each item's draw depends on (seed, epoch, clip) only: runs are repeatable and resume exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vad.data.batches import stack_clips
from vad.data.clips import ClipDataset
from vad.data.flows import compute_flows
from vad.data.pseudo import kinds
from vad.errors import ConfigError

OBJECTIVES = ("not_reconstruct", "negative")

#: a pseudo clip: uint8 (T, C, H, W) frames and the uint8 (C, H, W) normal target
Made = tuple[np.ndarray, np.ndarray]


class Plugin:
    """A kind of pseudo-anomaly for training clips."""

    name = ""

    def make(self, dataset: ClipDataset, video_id: int, start: int, rng: np.random.Generator) -> Made | None:
        """The pseudo clip replacing the clip of ``video_id`` starting at frame ``start``, or None where this kind
        cannot be made (a skip-frame clip longer than the video)."""
        raise NotImplementedError


def _normal_target(dataset: ClipDataset, video_id: int, start: int) -> np.ndarray:
    return dataset.frames(video_id)[start + dataset.span - 1]


class SkipFrame(Plugin):
    """Frames ``start, start + s, ...`` (s x the dataset's frame stride), ``s`` drawn from ``strides``; the start moves
    back where the skipped clip would run past the video's end."""

    name = "skip_frame"

    def __init__(self, strides: Sequence[int] = (2, 3, 4, 5)) -> None:
        strides = [int(s) for s in strides]
        if not strides or min(strides) < 2:
            raise ConfigError(f"pseudo skip_frame.strides must be integers >= 2, got {strides}")
        self.strides = strides

    def make(self, dataset: ClipDataset, video_id: int, start: int, rng: np.random.Generator) -> Made | None:
        frames = dataset.frames(video_id)
        stride = int(rng.choice(self.strides)) * dataset.frame_stride
        span = (dataset.clip_len - 1) * stride + 1
        if dataset.clip_len < 2 or span > len(frames):
            return None
        start = min(start, len(frames) - span)
        clip = frames[kinds.skipped_frames(start, dataset.clip_len, stride)]
        return clip, _normal_target(dataset, video_id, start)


class Speed(Plugin):
    """The clip played at one of ``factors`` x speed (< 1: slow motion, frames repeated) or, with ``reverse``,
    backwards; each available choice equally likely."""

    name = "speed"

    def __init__(self, factors: Sequence[float] = (0.5,), reverse: bool = True) -> None:
        factors = [float(f) for f in factors]
        if any(not 0 < f < 1 for f in factors):
            raise ConfigError(f"pseudo speed.factors must lie in (0, 1) (faster: pseudo=skip_frame), got {factors}")
        if not factors and not reverse:
            raise ConfigError("pseudo speed: give factors or reverse=true")
        self.choices: list[float | None] = [*factors, *([None] if reverse else [])]

    def make(self, dataset: ClipDataset, video_id: int, start: int, rng: np.random.Generator) -> Made | None:
        if dataset.clip_len < 2:
            return None
        frames = dataset.frames(video_id)
        choice = self.choices[int(rng.integers(len(self.choices)))]
        if choice is None:
            index = list(range(start, start + dataset.span, dataset.frame_stride))[::-1]
        else:
            index = kinds.speed_frames(start, dataset.clip_len, choice * dataset.frame_stride)
        return frames[index], _normal_target(dataset, video_id, start)


class Patch(Plugin):
    """A square window (side a ``size`` share of the frame's shorter side) cut from a random training frame moves
    across the clip at ``speed`` (share of the shorter side per frame), blended with a mask whose border ramps over
    ``edge`` of the side."""

    name = "patch"

    def __init__(
        self, size: Sequence[float] = (0.15, 0.35), speed: Sequence[float] = (0.02, 0.08), edge: float = 0.2
    ) -> None:
        if len(size) != 2 or not 0 < size[0] <= size[1] <= 1:
            raise ConfigError(f"pseudo patch.size must be [low, high] shares of the frame in (0, 1], got {list(size)}")
        if len(speed) != 2 or not 0 <= speed[0] <= speed[1]:
            raise ConfigError(f"pseudo patch.speed must be [low, high] >= 0, got {list(speed)}")
        self.size = (float(size[0]), float(size[1]))
        self.speed = (float(speed[0]), float(speed[1]))
        self.edge = float(edge)

    def make(self, dataset: ClipDataset, video_id: int, start: int, rng: np.random.Generator) -> Made | None:
        frames = dataset.frames(video_id)
        clip = frames[start : start + dataset.span : dataset.frame_stride].copy()
        source_video = int(rng.integers(len(dataset.videos)))
        source_frames = dataset.frames(source_video)
        source = source_frames[int(rng.integers(len(source_frames)))]
        shape = clip.shape[2:]
        size = kinds.patch_size(rng, shape, self.size)
        patch, _ = kinds.random_patch(rng, source, size)
        side = min(shape)
        track = kinds.patch_track(rng, shape, size, len(clip), (self.speed[0] * side, self.speed[1] * side))
        mask = kinds.smooth_mask(size, round(self.edge * size[0]))
        for frame, corner in zip(clip, track, strict=True):
            kinds.paste_patch(frame, patch, corner, mask)
        return clip, _normal_target(dataset, video_id, start)


PLUGINS: Mapping[str, type[Plugin]] = {"skip_frame": SkipFrame, "speed": Speed, "patch": Patch}


def build_plugins(kinds_config: Mapping[str, Mapping[str, Any] | None]) -> list[Plugin]:
    """``{kind: options}`` -> plug-ins, in the given order."""
    unknown = sorted(set(kinds_config) - set(PLUGINS))
    if unknown:
        raise ConfigError(f"pseudo.kinds has unknown kind(s) {unknown}; the kinds are {list(PLUGINS)}")
    if not kinds_config:
        raise ConfigError(f"pseudo.kinds is empty; name at least one of {list(PLUGINS)}")
    plugins = []
    for name, options in kinds_config.items():
        try:
            plugins.append(PLUGINS[name](**dict(options or {})))
        except TypeError as error:
            raise ConfigError(f"pseudo.kinds.{name}: {error}") from None
    return plugins


class PseudoClips:
    """A training clip dataset whose items are pseudo-anomalies with probability ``probability`` (see the module
    docstring). Indices are ``(epoch, i)`` pairs (:class:`vad.data.datamodule.loaders.EpochShuffle` hands them over
    because ``epoch_keyed`` is set) or plain ``i`` (epoch 0)."""

    epoch_keyed = True

    def __init__(
        self,
        base: ClipDataset,
        kinds: Mapping[str, Mapping[str, Any] | None],
        probability: float = 0.5,
        objective: str = "not_reconstruct",
        negative_weight: float = 1.0,
        bound: float = 0.05,
        seed: int = 0,
    ) -> None:
        if not 0 <= probability <= 1:
            raise ConfigError(f"pseudo.probability must lie in [0, 1], got {probability}")
        if objective not in OBJECTIVES:
            raise ConfigError(f"pseudo.objective must be one of {list(OBJECTIVES)}, got {objective!r}")
        if negative_weight < 0 or bound <= 0:
            raise ConfigError(
                f"pseudo.negative_weight must be >= 0 and pseudo.bound > 0, got {negative_weight} and {bound}"
            )
        self.base = base
        self.plugins = build_plugins(kinds)
        self.probability = float(probability)
        self.objective = objective
        self.negative_weight = float(negative_weight)
        self.bound = float(bound)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.base)

    @property
    def clips_per_video(self) -> np.ndarray:
        return self.base.clips_per_video

    def draw(self, key: int | tuple[int, int]) -> tuple[int, int, Made | None, str | None]:
        """(video_id, start, pseudo clip or None, kind) of item ``key``."""
        epoch, i = key if isinstance(key, tuple) else (0, key)
        video_id, start = self.base.locate(int(i))
        rng = np.random.default_rng([self.seed, int(epoch), int(i)])
        if rng.random() >= self.probability:
            return video_id, start, None, None
        plugin = self.plugins[int(rng.integers(len(self.plugins)))]
        return video_id, start, plugin.make(self.base, video_id, start, rng), plugin.name

    def __getitems__(self, keys: list[Any]) -> list[dict[str, Any]]:
        base = self.base
        drawn = [self.draw(k) for k in keys]
        clips = [base.clip(v, start) if made is None else made[0] for v, start, made, _ in drawn]
        frames = stack_clips(clips).unbind(0)
        # the target is the clip's own last frame (a view of its row), except for a pseudo clip trained towards its
        # normal target: only those frames are copied a second time
        separate = [i for i, (*_, made, _) in enumerate(drawn) if made is not None and self.objective != "negative"]
        normal = stack_clips([drawn[i][2][1][None] for i in separate])[:, 0] if separate else None
        targets = [row[-1] for row in frames]
        for j, i in enumerate(separate):
            targets[i] = normal[j]
        items = []
        for (video_id, start, made, _), row, target in zip(drawn, frames, targets, strict=True):
            item = base._item(video_id, start, row)
            pseudo = made is not None
            item["target"] = target
            item["pseudo"] = int(pseudo)
            item["pseudo_negative"] = self.negative_weight if pseudo and self.objective == "negative" else 0.0
            item["pseudo_bound"] = self.bound
            items.append(item)
        if base.flow_cache is not None:
            # a pseudo clip's flows are those of its altered frames, computed now; the others come from the cache
            flows = [
                base.clip_flows(v, start) if made is None else compute_flows(base.flow_cache.estimator, made[0])
                for v, start, made, _ in drawn
            ]
            for item, flow in zip(items, base.flows_tensor(flows).unbind(0), strict=True):
                item["flows"] = flow
        return items

    def __getitem__(self, key: Any) -> dict[str, Any]:
        return self.__getitems__([key])[0]

    def sample(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """One item with its kind (``pseudo_kind``), for inspection."""
        item = self[key]
        item["pseudo_kind"] = self.draw(key)[3] if item["pseudo"] else None
        return item
