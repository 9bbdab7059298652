"""Per-frame signals grouped by video: what a test loop records, as the protocol reads it.

A method emits named per-frame signals (``psnr``, ``feature_distance``, ...); a test loop accumulates them as flat
columns in any order, and these helpers group them per video, frames sorted, labels checked:

    videos = group_records(records, video_order=[v.name for v in index.test])
    videos = videos_from_records(test_loop_columns, datamodule.test_videos)   # labels from the videos

Pure numpy; knows nothing about models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from vad.data.index import natural_key


def as_labels(labels: np.ndarray | Sequence[int], what: str) -> np.ndarray:
    """Validate 0/1 labels and return them as a 1-D uint8 array (integer or bool input; uint8 overflow impossible)."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{what}: labels must be 1-D, got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))][0]
        raise ValueError(f"{what}: labels must be 0 (normal) or 1 (anomalous), found {bad!r}")
    return arr.astype(np.uint8)


@dataclass
class VideoSignals:
    """The per-frame signals a method emitted for one video.

    ``frames``: (F,) int64 frame positions (0-based) that were scored, strictly increasing. ``labels``: (F,) uint8
    0/1 for those frames, or None when the test loop did not know them (:func:`evaluate` then reads them from its
    ``full_labels``). ``signals``: name -> (F,) float64 raw values; a non-finite value marks a frame that could not
    be scored. ``num_frames``: the video's length when known, so frames absent from the records count as dropped;
    ``skipped``: the video has no predictions by design (shorter than one clip) and is left out of the evaluation.
    """

    name: str
    frames: np.ndarray
    labels: np.ndarray | None
    signals: dict[str, np.ndarray]
    num_frames: int | None = None
    skipped: bool = False

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.int64)
        if self.frames.ndim != 1:
            raise ValueError(f"video {self.name!r}: frames must be 1-D, got shape {self.frames.shape}")
        steps = np.diff(self.frames)
        if (steps == 0).any():
            frame = int(self.frames[1:][steps == 0][0])
            raise ValueError(f"video {self.name!r} frame {frame} appears twice in the records; score each frame once")
        if (steps < 0).any():
            raise ValueError(f"video {self.name!r}: frames must be increasing; build it with group_records")
        if self.labels is not None:
            self.labels = as_labels(self.labels, f"video {self.name!r}")
            if len(self.labels) != len(self.frames):
                raise ValueError(f"video {self.name!r}: {len(self.labels)} labels for {len(self.frames)} frames")
        self.signals = {str(k): np.asarray(v, dtype=np.float64) for k, v in self.signals.items()}
        for key, values in self.signals.items():
            if values.shape != self.frames.shape:
                raise ValueError(
                    f"video {self.name!r}: signal {key!r} has shape {values.shape}, frames {self.frames.shape}"
                )
        if (
            self.num_frames is not None
            and self.frames.size
            and not 0 <= self.frames[0] <= self.frames[-1] < self.num_frames
        ):
            raise ValueError(
                f"video {self.name!r}: scored frames span {self.frames[0]}..{self.frames[-1]} but the video has "
                f"{self.num_frames} frames; the records and the dataset describe different videos"
            )


@dataclass(frozen=True)
class FrameRecord:
    """One scored frame as a test loop produces it: ``signals`` maps signal name -> raw value."""

    video: str
    frame: int
    signals: Mapping[str, float]
    label: int | None = None


def _video_ranks(names: Sequence[str], video_order: Sequence[str] | None) -> tuple[list[str], np.ndarray]:
    """The videos in order (``video_order``, or natural order of the names) and each row's rank in it."""
    present = set(names)
    if video_order is None:
        order = sorted(present, key=natural_key)
    else:
        order = [v for v in video_order if v in present]
        unknown = present.difference(video_order)
        if unknown:
            raise ValueError(f"records name videos missing from video_order: {sorted(unknown, key=natural_key)}")
    rank = {name: i for i, name in enumerate(order)}
    return order, np.fromiter((rank[n] for n in names), dtype=np.int64, count=len(names))


def group_columns(
    videos: Sequence[str],
    frames: np.ndarray | Sequence[int],
    signals: Mapping[str, np.ndarray | Sequence[float]],
    labels: np.ndarray | Sequence[int] | None = None,
    video_order: Sequence[str] | None = None,
) -> list[VideoSignals]:
    """Group flat per-frame columns (as a test loop accumulates them, in any order) into per-video signals.

    ``videos``: (N,) video name of each row; ``frames``: (N,) frame positions; ``signals``: name -> (N,) values;
    ``labels``: (N,) 0/1 or None. Videos come out in ``video_order`` (default: natural order of the names), frames
    sorted; a (video, frame) pair given twice raises ValueError naming it.
    """
    names = [str(v) for v in videos]
    frame_col = np.asarray(frames, dtype=np.int64)
    columns = {str(k): np.asarray(v, dtype=np.float64) for k, v in signals.items()}
    label_col = None if labels is None else as_labels(labels, "records")
    for what, col in [("frames", frame_col), *columns.items(), ("labels", label_col)]:
        if col is not None and col.shape != (len(names),):
            raise ValueError(f"records: column {what!r} has shape {col.shape}, expected ({len(names)},)")
    order, ranks = _video_ranks(names, video_order)
    rows = np.lexsort((frame_col, ranks))
    starts = np.searchsorted(ranks[rows], np.arange(len(order) + 1))
    grouped = []
    for i, name in enumerate(order):
        sel = rows[starts[i] : starts[i + 1]]
        grouped.append(
            VideoSignals(
                name=name,
                frames=frame_col[sel],
                labels=None if label_col is None else label_col[sel],
                signals={k: col[sel] for k, col in columns.items()},
            )
        )
    return grouped


def group_records(records: Iterable[FrameRecord], video_order: Sequence[str] | None = None) -> list[VideoSignals]:
    """Group :class:`FrameRecord` rows (any order) into per-video signals; see :func:`group_columns`.

    Every record must carry the same signal names, and either all records carry a label or none does.
    """
    records = list(records)
    keys = list(records[0].signals) if records else []
    has_label = bool(records) and records[0].label is not None
    for r in records:
        if set(r.signals) != set(keys):
            raise ValueError(f"record ({r.video!r}, {r.frame}) has signals {sorted(r.signals)}, expected {keys}")
        if (r.label is not None) != has_label:
            raise ValueError(f"record ({r.video!r}, {r.frame}): either every record carries a label or none does")
    return group_columns(
        videos=[r.video for r in records],
        frames=[r.frame for r in records],
        signals={k: [r.signals[k] for r in records] for k in keys},
        labels=[r.label for r in records] if has_label else None,
        video_order=video_order,
    )


class EvalVideo(Protocol):
    """What :func:`videos_from_records` needs to know about a test video (e.g. the datamodule's ``VideoInfo``):
    ``labels`` (num_frames,) 0/1 or None; ``skipped`` when it has no predictions by design."""

    @property
    def name(self) -> str: ...
    @property
    def num_frames(self) -> int: ...
    @property
    def labels(self) -> np.ndarray | None: ...
    @property
    def skipped(self) -> bool: ...


def videos_from_records(
    records: Mapping[str, np.ndarray], videos: Sequence[EvalVideo], signals: Sequence[str] | None = None
) -> list[VideoSignals]:
    """Per-video signals of every test video from a test loop's columns, labels taken from the videos.

    ``records``: ``video_id`` (N,) positions in ``videos``, ``index`` (N,) frame positions, and one (N,) column per
    signal (``signals``; default every other column), rows in any order. Every video of ``videos`` comes out, in
    that order, with its ``num_frames`` and ``skipped`` flag; a video without records has no frames.
    """
    ids = np.asarray(records["video_id"], dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= len(videos)):
        raise ValueError(f"records: video_id {ids.min()}..{ids.max()} outside the {len(videos)} test videos")
    names = [v.name for v in videos]
    keys = list(signals) if signals is not None else [k for k in records if k not in ("video_id", "index")]
    grouped = {
        g.name: g
        for g in group_columns(
            [names[i] for i in ids], records["index"], {k: records[k] for k in keys}, video_order=names
        )
    }
    out = []
    for v in videos:
        g = grouped.get(v.name) or VideoSignals(v.name, np.empty(0, np.int64), None, {k: np.empty(0) for k in keys})
        labels = None
        if v.labels is not None:
            if g.frames.size and g.frames[-1] >= len(v.labels):
                raise ValueError(f"video {v.name!r}: frame {g.frames[-1]} scored but only {len(v.labels)} labels")
            labels = np.asarray(v.labels)[g.frames]
        out.append(VideoSignals(v.name, g.frames, labels, g.signals, num_frames=v.num_frames, skipped=v.skipped))
    return out
