"""Score a video file, a frame folder, a camera or a stream with a trained detector, frame by frame.

    sources = open_inputs("clip.mp4")                         # vad.inference.sources
    scorer = StreamScorer(model, InputSpec.of_run(run_cfg), batch_size=32, threshold=2.3)
    summary = scorer.run(sources[0], out_dir, overlay=True)   # scores.csv, events.json, score.png, overlay.avi

A reader thread (:func:`vad.inference.sources.read_frames`) decodes each frame, converts it to the model's channels
and resizes it to the working size exactly as the frame cache does, so a file scored here gives the raw signals
``vad.evaluate`` gives for the same video; the main thread keeps a rolling window of the method's ``clip_len`` frames
(``frame_stride`` apart), batches the clips and runs the method's test signals through the shared base (no
per-method code): a method with test-time state (MNAD's memory) starts from the trained state for every input
(``begin_test_state``), a method that asks for flow targets (AMC) gets them from its estimator, rounded to float16 as
the flow cache stores them.

The score of a frame is its calibrated score (``vad.evaluation.calibration``: each signal against its distribution
on held-out normal frames, no per-video min/max, which a stream cannot have), smoothed over the current and past
frames by the calibration's causal Gaussian (``vad.evaluation.smoothing``; its ``smoothing``: the run's
``model.smoothing`` unless ``vad.calibrate`` set another; the thresholds are computed on scores smoothed the same
way), and an alert is a score above the threshold.
``scores.csv`` is written as frames are scored (a stream that stops, an interrupt or a failure keeps every row
scored so far), ``events.json`` / ``score.png`` (:mod:`vad.inference.overlay`) when the input ends.
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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vad import precision as precisions
from vad.data.batches import clips_to_tensor, frames_to_float, stack_clips
from vad.errors import ConfigError, DataError
from vad.evaluation.calibration import events
from vad.evaluation.fusion import fuse
from vad.evaluation.smoothing import CausalSmoother, smoothing_or
from vad.inference.overlay import ScoreOverlay, plot_scores
from vad.inference.sources import END, Frame, Source, read_frames
from vad.inference.spec import InputSpec
from vad.methods.base import VADModule

if TYPE_CHECKING:
    from vad.inference.exported import ExportedDetector

#: seconds between two console reports of a live input
REPORT_EVERY = 2.0
#: an input of at least this many scored frames, more than this fraction of them alerting, is reported as unlike the
#: calibration footage (a detector trained on another scene or camera alerts on almost every frame). 0.9, not 0.5,
#: was set after scoring Ped2's test videos with the FFP preset: at 0.5, 9 of the 12 (83% anomalous frames) warned,
#: at 0.9 only video 08, anomalous throughout (a threshold of a message, not of a detector or a result)
UNLIKE_MIN_FRAMES = 50
UNLIKE_ALERT_FRACTION = 0.9


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
        spec: the clips and frames the model takes (:class:`~vad.inference.spec.InputSpec`: from its checkpoint's
            run config, or from an export's metadata).
        batch_size: clips per forward pass (the checkpoint's ``eval_batch_size`` reproduces ``vad.evaluate``).
        threshold: alert when the score exceeds it; None: no alerts.
        weights: fusion weights (default the model's ``score_weights``).
        calibrated: score with the model's calibration (True) or the raw weighted fusion sum_s w_s s (False).
        smoothing: sigma (frames) of the causal Gaussian over the current and past scores of an input
            (:func:`vad.evaluation.smoothing.causal_smooth`); None: the calibration's (its thresholds hold for it;
            another value is refused), 0 for raw scores.
        event_gap: quiet frames allowed inside one event.
        precision: ``32-true``, or ``bf16-mixed`` to run the model's forward passes under bfloat16 autocast (as a
            Lightning Trainer with ``precision=bf16-mixed`` does; a training checkpoint only).
    """

    def __init__(
        self,
        model: VADModule | ExportedDetector,
        spec: InputSpec,
        *,
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
        smoothing = smoothing_or(smoothing, calibrated_with)
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
        self.spec = spec
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
        """The frame-by-frame scores (N,) of a batch's raw signals, before the causal smoothing: calibrated, or the
        raw weighted fusion ``sum_s w_s s`` (:func:`vad.evaluation.fusion.fuse` without normalisation)."""
        if self.calibrated:
            assert self.model.calibration is not None
            return self.model.calibration.score(signals, self.weights)
        return fuse(signals, self.weights, normalise=False)

    # ------------------------------------------------------------------ one batch
    def _flows(self, window: list[Frame]) -> torch.Tensor:
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
    def signals_of(self, windows: list[list[Frame]], name: str, want_panels: bool) -> tuple[dict, Any]:
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
                heat = torch.as_tensor(heat).float().reshape(len(windows), *self.spec.size).cpu().numpy()
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
            target=read_frames,
            args=(source, self.spec, frames_in, stop),
            name=f"vad-reader-{source.name}",
            daemon=True,
        )
        columns = ["frame", "time", *self.model.signals, "score", "alert"]
        rows: dict[str, list[float]] = {c: [] for c in columns}
        window: deque[Frame] = deque(maxlen=self.spec.span)
        pending: list[list[Frame]] = []
        writer = ScoreOverlay(out_dir / "overlay.avi", source.fps, self.spec.size, self.threshold) if overlay else None
        smoother = CausalSmoother(self.smoothing)  # over this input's scores only
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
                if item is END:
                    break
                if isinstance(item, BaseException):
                    raise item
                summary.frames += 1
                bar.update(1)
                window.append(item)
                if writer is not None:
                    writer.add_frame(item)
                if len(window) == self.spec.span:
                    pending.append(list(window)[:: self.spec.frame_stride])
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
        summary.events = events(times, frames, scores, alerts, gap=self.event_gap)
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
            plot_scores(times, scores, alerts, self.threshold, out_dir / "score.png", source.name)
            summary.files["plot"] = str(out_dir / "score.png")
