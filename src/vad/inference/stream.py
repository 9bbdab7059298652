"""Score a video file, a frame folder, a camera or a stream with a trained detector, frame by frame.

    sources = open_inputs("clip.mp4")                         # or a folder, "0" (camera 0), "rtsp://...", ...
    scorer = StreamScorer(model, clip_len=5, batch_size=32, threshold=2.3)
    summary = scorer.run(sources[0], out_dir, overlay=True)   # scores.csv, events.json, score.png, overlay.avi

A reader thread decodes each frame, converts it to the model's channels and resizes it to the working size exactly
as the frame cache does (``vad.data.frames``), so a file scored here gives the raw signals ``vad.evaluate`` gives for
the same video; the main thread keeps a rolling window of the method's ``clip_len`` frames (``frame_stride`` apart),
batches the clips and runs the method's test signals through the shared base (no per-method code): a method with
test-time state (MNAD's memory) starts from the trained state for every input (``begin_test_state``), a method
that asks for flow targets (AMC) gets them from its estimator, rounded to float16 as the flow cache stores them.

The score of a frame is its calibrated score (``vad.evaluation.calibration``: each signal against its distribution on held-out
normal frames, no per-video min/max, which a stream cannot have), smoothed over the current and past frames by the
calibration's causal Gaussian (its ``smoothing``: the run's ``model.smoothing`` unless ``vad.calibrate`` set
another; the thresholds are computed on scores smoothed the same way), and an alert is a score above the
threshold.
``scores.csv`` is written as frames are scored (a stream that stops, an interrupt or a failure keeps every row
scored so far), ``events.json`` / ``score.png`` when the input ends.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import math
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from vad import precision as precisions
from vad.data.clips import clips_to_tensor, frames_to_float, stack_clips
from vad.data.frames import _to_channels, count_video_frames, resize
from vad.data.index import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, list_dirs, list_images, list_videos
from vad.errors import ConfigError, DataError
from vad.evaluation import calibration as calibration_module
from vad.evaluation.protocol import check_smoothing
from vad.methods.base import VADModule

if TYPE_CHECKING:
    from vad.inference.exported import ExportedDetector

#: frames/s given to a frame folder (it has no clock of its own) unless ``fps`` is set
DEFAULT_FPS = 25.0
#: seconds between two console reports of a live input
REPORT_EVERY = 2.0
#: an input of at least this many scored frames, more than this fraction of them alerting, is reported as unlike the
#: calibration footage (a detector trained on another scene or camera alerts on almost every frame). 0.9, not 0.5,
#: was set after scoring Ped2's test videos with the FFP preset: at 0.5, 9 of the 12 (83% anomalous frames) warned,
#: at 0.9 only video 08, anomalous throughout (a threshold of a message, not of a detector or a result)
UNLIKE_MIN_FRAMES = 50
UNLIKE_ALERT_FRACTION = 0.9


@dataclass
class Source:
    """One input: ``name`` (run sub-folder and report), ``frames()`` the decoded OpenCV frames (BGR / grey) in
    order, ``fps``, ``total`` frames when known (files; None for live input), ``live`` (times are wall-clock)."""

    name: str
    frames: Callable[[], Iterator[np.ndarray]]
    fps: float
    total: int | None
    live: bool
    origin: str


def _capture_frames(cap: cv2.VideoCapture) -> Iterator[np.ndarray]:
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
    finally:
        cap.release()


def _video_file(path: Path) -> Source:
    total = count_video_frames(path)  # raises DataError for an unreadable file
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
    cap.release()

    def frames() -> Iterator[np.ndarray]:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise DataError(f"{path}: OpenCV cannot open this video (corrupt or unsupported codec); re-encode it")
        return _capture_frames(cap)

    return Source(path.stem, frames, float(fps), total, live=False, origin=str(path))


def _image_folder(folder: Path, fps: float) -> Source:
    files = list_images(folder)

    def frames() -> Iterator[np.ndarray]:
        for file in files:
            data = np.fromfile(str(file), dtype=np.uint8)
            frame = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
            if frame is None:
                raise DataError(f"{file}: cannot decode this frame (corrupt or not an image); replace or delete it")
            yield frame

    return Source(folder.name, frames, fps, len(files), live=False, origin=str(folder))


def _live(target: int | str) -> Source:
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        what = f"camera {target}" if isinstance(target, int) else f"stream {target}"
        raise DataError(f"{what}: OpenCV cannot open it; check the device index / URL and that nothing else uses it")
    fps = cap.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
    opened = [cap]

    def frames() -> Iterator[np.ndarray]:
        return _capture_frames(opened.pop() if opened else cv2.VideoCapture(target))

    name = f"camera{target}" if isinstance(target, int) else "stream"
    return Source(name, frames, float(fps), None, live=True, origin=str(target))


def iterable_source(name: str, frames: Iterable[np.ndarray], fps: float = DEFAULT_FPS, live: bool = True) -> Source:
    """A source over frames a program produces (a generator, a pipe reader): OpenCV-style BGR / grey uint8."""
    return Source(name, lambda: iter(frames), fps, None, live=live, origin=name)


def open_inputs(spec: str | int, fps: float | None = None) -> list[Source]:
    """The sources of ``input=``: a video file; a folder of frames; a folder of videos and / or frame folders (each
    one source, natural order); a camera index (``0``); a stream URL (``rtsp://``, ``http://``, ...)."""
    text = str(spec)
    if isinstance(spec, int) or text.isdigit():
        return [_live(int(text))]
    if "://" in text:
        return [_live(text)]
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"input={text}: no such file or folder (give a video, a frame folder, a folder of videos, a "
                        "camera index or a stream URL)")  # fmt: skip
    rate = DEFAULT_FPS if fps is None else float(fps)
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise DataError(f"input={path}: not a video file ({', '.join(VIDEO_EXTENSIONS)}) nor a folder")
        return [_video_file(path)]
    if list_images(path):
        return [_image_folder(path, rate)]
    sources = [_video_file(p) for p in list_videos(path)]
    sources += [_image_folder(d, rate) for d in list_dirs(path) if list_images(d)]
    if not sources:
        raise DataError(
            f"input={path}: holds no video ({', '.join(VIDEO_EXTENSIONS)}), no frames "
            f"({', '.join(IMAGE_EXTENSIONS)}) and no folder of frames"
        )
    names = [s.name for s in sources]
    if len(set(names)) < len(names):
        raise DataError(f"input={path}: two inputs share a name ({names}); rename one")
    return sources


@dataclass
class _Frame:
    index: int
    time: float
    data: np.ndarray  # (C, H, W) uint8 at the working size
    captured: float  # perf_counter when decoded


_END = object()


def _reader(
    source: Source,
    channels: int,
    size: tuple[int, int],
    interpolation: str,
    out: queue.Queue,
    stop: threading.Event,
) -> None:
    """Decode, convert and resize every frame of ``source`` into ``out``; then _END (or the exception)."""
    try:
        start = time.perf_counter()
        for index, raw in enumerate(source.frames()):
            if stop.is_set():
                break
            now = time.perf_counter()
            frame = resize(_to_channels(raw, channels, Path(source.origin)), size, interpolation).transpose(2, 0, 1)
            stamp = now - start if source.live else index / source.fps
            while not stop.is_set():
                try:
                    out.put(_Frame(index, stamp, np.ascontiguousarray(frame), now), timeout=0.1)
                    break
                except queue.Full:
                    continue
        out.put(_END)
    except BaseException as error:  # handed to the main thread, which raises it after flushing
        out.put(error)


@dataclass
class ScoreSummary:
    """What one input gave: frames read and scored, alerts, events, the output files and the speed."""

    name: str
    frames: int = 0
    scored: int = 0
    alerts: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    stopped: str = "end of input"
    #: set when most frames alert: the footage is unlike the calibration footage (see :meth:`StreamScorer.unlike`)
    warning: str | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else math.nan


class StreamScorer:
    """Scores sources with ``model``: a trained :class:`VADModule` in eval mode, or a model of ``vad.export``
    (:class:`~vad.inference.exported.ExportedDetector`, which offers the same signals, weights, calibration and hooks).

    Args:
        clip_len, frame_stride: the method's clip (from its checkpoint's config).
        size, channels, interpolation: the working format of its frames (the dataset config).
        batch_size: clips per forward pass (the checkpoint's ``eval_batch_size`` reproduces ``vad.evaluate``).
        threshold: alert when the score exceeds it; None: no alerts.
        weights: fusion weights (default the model's ``score_weights``).
        calibrated: score with the model's calibration (True) or the raw weighted fusion sum_s w_s s (False).
        smoothing: sigma (frames) of the causal Gaussian over the current and past scores of an input
            (:func:`vad.evaluation.calibration.causal_smooth`); None: the calibration's (its thresholds hold for it; another
            value is refused), 0 for raw scores.
        event_gap: quiet frames allowed inside one event.
        precision: ``32-true``, or ``bf16-mixed`` to run the model's forward passes under bfloat16 autocast (as a
            Lightning Trainer with ``precision=bf16-mixed`` does; a training checkpoint only).
    """

    def __init__(
        self,
        model: VADModule | ExportedDetector,
        *,
        clip_len: int,
        frame_stride: int = 1,
        size: tuple[int, int],
        channels: int,
        interpolation: str = "linear",
        batch_size: int = 32,
        threshold: float | None = None,
        weights: dict[str, float] | None = None,
        calibrated: bool = True,
        smoothing: float | None = None,
        event_gap: int = 0,
        queue_size: int = 256,
        precision: str = "32-true",
    ) -> None:
        if calibrated and model.calibration is None:
            raise DataError("the checkpoint holds no calibration; run python -m vad.calibrate ckpt_path=<it> first")
        calibrated_with = model.calibration.smoothing if calibrated else 0.0  # checked above when calibrated
        smoothing = calibrated_with if smoothing is None else check_smoothing(smoothing, "smoothing")
        if calibrated and smoothing != calibrated_with:
            raise ConfigError(
                f"smoothing={smoothing:g}: the detector's calibration holds its thresholds for scores smoothed with "
                f"sigma={calibrated_with:g}; recalibrate (python -m vad.calibrate ckpt_path=<its .ckpt> "
                f"smoothing={smoothing:g} overwrite=true), score with raw=true, or leave smoothing unset"
            )
        self.smoothing = smoothing
        if precision not in precisions.PRECISIONS:
            raise ValueError(f"precision must be one of {precisions.PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.model = model.eval()
        self.clip_len = clip_len
        self.frame_stride = frame_stride
        self.span = (clip_len - 1) * frame_stride + 1
        self.size = size
        self.channels = channels
        self.interpolation = interpolation
        self.batch_size = batch_size
        self.threshold = threshold
        self.weights = dict(model.score_weights if weights is None else weights)
        self.calibrated = calibrated
        self.event_gap = event_gap
        self.queue_size = queue_size
        self.flow_estimator = model.clip_requests().get("flows")
        self._flow_memo: dict[int, torch.Tensor] = {}

    def unlike(self, name: str, scores: np.ndarray) -> str | None:
        """One line when more than :data:`UNLIKE_ALERT_FRACTION` of at least :data:`UNLIKE_MIN_FRAMES` calibrated
        scores alert: the input is mostly anomalous, or (the common case of a new user's own video) unlike the normal
        footage the detector was calibrated on, as footage of another scene or camera is to it; None otherwise."""
        scores = np.asarray(scores, dtype=np.float64)
        if not self.calibrated or self.threshold is None or scores.size < UNLIKE_MIN_FRAMES:
            return None
        fraction = float(np.mean(scores > self.threshold))
        if fraction <= UNLIKE_ALERT_FRACTION:
            return None
        assert self.model.calibration is not None
        return (
            f"{name}: {100 * fraction:.0f}% of {scores.size} frames alert (median score {np.median(scores):.1f}, "
            f"threshold {self.threshold:.2f}): either most of it is anomalous, or it does not look like the normal "
            f"footage the detector was calibrated on ({self.model.calibration.source}): a detector learns one scene "
            "and camera; for another, train one on its normal footage (python -m vad.train dataset=folder "
            "dataset.root=<its videos>)"
        )

    def _warn_once(self, summary: ScoreSummary, scores: Iterable[float]) -> None:
        """Set and print :meth:`unlike`'s line for ``summary``'s input, unless it was said already."""
        if summary.warning is None:
            summary.warning = self.unlike(summary.name, np.fromiter(scores, dtype=np.float64))
            if summary.warning is not None:
                print(f"warning: {summary.warning}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ scores from raw signals
    def fuse(self, signals: dict[str, np.ndarray]) -> np.ndarray:
        if self.calibrated:
            assert self.model.calibration is not None
            return self.model.calibration.score(signals, self.weights)
        return sum(w * np.asarray(signals[k], dtype=np.float64) for k, w in self.weights.items())  # type: ignore[return-value]

    # ------------------------------------------------------------------ one batch
    def _flows(self, window: list[_Frame]) -> torch.Tensor:
        """Flows between the consecutive frames of a clip, (clip_len - 1, 2, H, W), each pair computed once."""
        assert self.flow_estimator is not None
        out = []
        for first, second in itertools.pairwise(window):
            flow = self._flow_memo.get(first.index)
            if flow is None:
                pair = clips_to_tensor([np.stack([first.data, second.data])])[0]
                with torch.no_grad():
                    flow = self.flow_estimator(pair[:1], pair[1:])[0].half().float()  # as the flow cache stores it
                self._flow_memo[first.index] = flow
            out.append(flow)
        for index in [i for i in self._flow_memo if i < window[0].index]:
            del self._flow_memo[index]
        return torch.stack(out)

    @torch.no_grad()
    def signals_of(self, windows: list[list[_Frame]], name: str, want_panels: bool) -> tuple[dict, Any]:
        clips = [np.stack([f.data for f in w]) for w in windows]
        batch: dict[str, Any] = {
            # shipped uint8 and converted on the model's device, as the loaders' batches are (vad.data.clips)
            "frames": frames_to_float(stack_clips(clips).to(self.model.device)),
            "video": [name] * len(windows),
            "video_id": torch.zeros(len(windows), dtype=torch.int64),
            "index": torch.tensor([w[-1].index for w in windows], dtype=torch.int64),
            "label": torch.zeros(len(windows), dtype=torch.int64),
        }
        if self.flow_estimator is not None:
            batch["flows"] = torch.stack([self._flows(w) for w in windows]).to(self.model.device)
        with precisions.autocast(self.precision, self.model.device.type):
            signals = {k: v.detach().double().cpu().numpy() for k, v in self.model.test_signals(batch).items()}
            panels = self.model.sample_panels(batch) if want_panels else {}
        heat = None
        if want_panels:
            heat = next((p.data for p in panels.values() if p.kind == "heatmap"), None)
            if heat is not None:
                heat = torch.as_tensor(heat).float().reshape(len(windows), *self.size).cpu().numpy()
        return signals, heat

    # ------------------------------------------------------------------ one source
    def run(self, source: Source, out_dir: Path, *, overlay: bool = False, progress: bool = True) -> ScoreSummary:
        """Score ``source`` into ``out_dir`` (created; must not hold a previous result)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        for existing in ("scores.csv", "events.json"):
            if (out_dir / existing).exists():
                raise DataError(f"{out_dir / existing} exists; score into a new folder (hydra.run.dir=...)")
        self.model.begin_test_state()
        self.model.on_test_video_start(0)
        self._flow_memo = {}
        summary = ScoreSummary(source.name)
        frames_in: queue.Queue = queue.Queue(maxsize=self.queue_size)
        stop = threading.Event()
        reader = threading.Thread(
            target=_reader,
            args=(source, self.channels, self.size, self.interpolation, frames_in, stop),
            name=f"vad-reader-{source.name}",
            daemon=True,
        )
        columns = ["frame", "time", *self.model.signals, "score", "alert"]
        rows: dict[str, list[float]] = {c: [] for c in columns}
        window: deque[_Frame] = deque(maxlen=self.span)
        pending: list[list[_Frame]] = []
        writer = _Overlay(out_dir / "overlay.avi", source.fps, self.size, self.threshold) if overlay else None
        smoother = calibration_module.CausalSmoother(self.smoothing)  # over this input's scores only
        bar = tqdm(total=source.total, desc=f"scoring {source.name}", unit="frame", disable=not progress or source.live)
        start = time.perf_counter()
        last_report = start
        latencies: list[float] = []
        failure: BaseException | None = None
        csv_file = (out_dir / "scores.csv").open("w", newline="")
        table = csv.writer(csv_file)
        table.writerow(columns)

        def flush() -> None:
            if not pending:
                return
            signals, heat = self.signals_of(pending, source.name, writer is not None)
            scores = [smoother.push(value) for value in self.fuse(signals)]  # in frame order
            now = time.perf_counter()
            for j, clip in enumerate(pending):
                target = clip[-1]
                alert = self.threshold is not None and bool(scores[j] > self.threshold)
                values = [target.index, round(target.time, 6), *[signals[k][j] for k in self.model.signals]]
                table.writerow([*values, scores[j], int(alert)])
                for key, value in zip(columns, [*values, scores[j], int(alert)], strict=True):
                    rows[key].append(float(value))
                summary.scored += 1
                summary.alerts += int(alert)
                latencies.append(now - target.captured)
                if writer is not None:
                    writer.add_score(target, float(scores[j]), alert, None if heat is None else heat[j])
            csv_file.flush()
            pending.clear()

        reader.start()
        try:
            while True:
                item = frames_in.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                summary.frames += 1
                bar.update(1)
                window.append(item)
                if writer is not None:
                    writer.add_frame(item)
                if len(window) == self.span:
                    pending.append(list(window)[:: self.frame_stride])
                # a file fills whole batches (the batches of vad.evaluate); live input also scores what it has when
                # no frame is waiting, so latency stays one batch at most
                if len(pending) >= self.batch_size or (source.live and pending and frames_in.empty()):
                    flush()
                now = time.perf_counter()
                if source.live and now - last_report >= REPORT_EVERY:
                    self._warn_once(summary, rows["score"])  # a live input says it as soon as it shows
                    recent = latencies[-50:] or [math.nan]
                    print(
                        f"{source.name}: {summary.frames / (now - start):.1f} frames/s, latency "
                        f"{1000 * float(np.median(recent)):.0f} ms, {summary.alerts} alerts",
                        file=sys.stderr,
                        flush=True,
                    )
                    last_report = now
            flush()
        except KeyboardInterrupt:
            summary.stopped = "interrupted"
            failure = None
        except BaseException as error:
            summary.stopped = f"failed: {error}"
            failure = error
        finally:
            stop.set()
            with contextlib.suppress(Exception):  # the rows scored before a failure are kept; it is reported below
                flush()
            csv_file.close()
            bar.close()
            summary.seconds = time.perf_counter() - start
            if writer is not None:
                writer.close()
                summary.files["overlay"] = str(out_dir / "overlay.avi")
            self._finish(rows, summary, out_dir, source)
        if failure is not None:
            raise failure
        return summary

    def _finish(self, rows: dict[str, list[float]], summary: ScoreSummary, out_dir: Path, source: Source) -> None:
        frames = np.asarray(rows["frame"], dtype=np.int64)
        times = np.asarray(rows["time"])
        scores = np.asarray(rows["score"])
        alerts = np.asarray(rows["alert"], dtype=bool)
        summary.events = calibration_module.events(times, frames, scores, alerts, gap=self.event_gap)
        summary.files["scores"] = str(out_dir / "scores.csv")
        self._warn_once(summary, scores)
        record = {
            "input": source.origin,
            "frames": summary.frames,
            "scored": summary.scored,
            "threshold": self.threshold,
            "score": "calibrated" if self.calibrated else "raw weighted fusion",
            "smoothing": self.smoothing,
            "weights": self.weights,
            "stopped": summary.stopped,
            "warning": summary.warning,
            "events": summary.events,
        }
        (out_dir / "events.json").write_text(json.dumps(record, indent=2) + "\n")
        summary.files["events"] = str(out_dir / "events.json")
        if len(scores):
            _plot(times, scores, alerts, self.threshold, out_dir / "score.png", source.name)
            summary.files["plot"] = str(out_dir / "score.png")


def _plot(times: np.ndarray, scores: np.ndarray, alerts: np.ndarray, threshold: float | None, path: Path,
          title: str) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3))
    ax.plot(times, scores, lw=1, color="tab:blue", label="score")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", lw=1, ls="--", label="threshold")
        ax.fill_between(times, scores.min(), scores.max(), where=alerts, color="tab:red", alpha=0.15, label="alert")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("calibrated score")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class _Overlay:
    """The overlay video: each input frame beside the error heat map of its clip, over a scrolling score bar; one
    frame per input frame (frames before the first full clip show no heat map and no score)."""

    BAR = 48
    HISTORY = 200

    def __init__(self, path: Path, fps: float, size: tuple[int, int], threshold: float | None) -> None:
        self.scale = max(1, math.ceil(240 / size[0]))
        self.h, self.w = size[0] * self.scale, size[1] * self.scale
        self.threshold = threshold
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (2 * self.w, self.h + self.BAR))
        if not self.writer.isOpened():
            raise DataError(f"{path}: OpenCV cannot write an MJPG .avi here")
        self.waiting: deque[_Frame] = deque()
        self.scores: deque[tuple[float, bool]] = deque(maxlen=self.HISTORY)
        self.heat_max = 1e-12

    def add_frame(self, frame: _Frame) -> None:
        self.waiting.append(frame)

    def add_score(self, target: _Frame, score: float, alert: bool, heat: np.ndarray | None) -> None:
        # frames up to the scored one are written now, in order; the earlier ones without a score
        while self.waiting and self.waiting[0].index < target.index:
            self._write(self.waiting.popleft(), None, None, False)
        if self.waiting and self.waiting[0].index == target.index:
            self.waiting.popleft()
        self.scores.append((score, alert))
        self._write(target, heat, score, alert)

    def _write(self, frame: _Frame, heat: np.ndarray | None, score: float | None, alert: bool) -> None:
        image = frame.data.transpose(1, 2, 0)
        conversion = cv2.COLOR_GRAY2BGR if image.shape[2] == 1 else cv2.COLOR_RGB2BGR
        image = cv2.cvtColor(image, conversion)
        image = cv2.resize(image, (self.w, self.h), interpolation=cv2.INTER_NEAREST)
        if heat is not None:
            self.heat_max = max(self.heat_max, float(np.nanmax(heat)))
            level = np.clip(heat / self.heat_max * 255, 0, 255).astype(np.uint8)
            coloured = cv2.applyColorMap(level, cv2.COLORMAP_JET)
            panel = cv2.resize(coloured, (self.w, self.h), interpolation=cv2.INTER_NEAREST)
        else:
            panel = np.zeros_like(image)
        canvas = np.zeros((self.h + self.BAR, 2 * self.w, 3), dtype=np.uint8)
        canvas[: self.h, : self.w] = image
        canvas[: self.h, self.w :] = panel
        if alert:
            cv2.rectangle(canvas, (0, 0), (2 * self.w - 1, self.h - 1), (0, 0, 255), 3)
        self._bar(canvas[self.h :], score)
        self.writer.write(canvas)

    def _bar(self, strip: np.ndarray, score: float | None) -> None:
        if not self.scores:
            return
        values = np.array([s for s, _ in self.scores])
        top = max(float(values.max()), self.threshold or 0.0) + 1e-9
        bottom = min(float(values.min()), self.threshold or 0.0)
        height, width = strip.shape[:2]
        step = width / self.HISTORY

        def y(v: float) -> int:
            return round((height - 4) * (1 - (v - bottom) / (top - bottom + 1e-12))) + 2

        points = np.array([(int(i * step), y(v)) for i, v in enumerate(values)], dtype=np.int32)
        for i, (_, alert) in enumerate(self.scores):
            if alert:
                cv2.line(strip, (int(i * step), 0), (int(i * step), height - 1), (0, 0, 120), max(1, int(step)))
        if self.threshold is not None:
            cv2.line(strip, (0, y(self.threshold)), (width - 1, y(self.threshold)), (0, 0, 255), 1)
        cv2.polylines(strip, [points], False, (255, 255, 255), 1)
        if score is not None:
            cv2.putText(strip, f"{score:.2f}", (4, height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)

    def close(self) -> None:
        while self.waiting:
            self._write(self.waiting.popleft(), None, None, False)
        self.writer.release()
