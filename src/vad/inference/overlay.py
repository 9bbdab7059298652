"""What ``vad.score`` shows of an input: the score plot (``score.png``) and the overlay video (``overlay.avi``: each
frame beside its clip's error heat map, over a scrolling score bar).

    plot_scores(times, scores, alerts, threshold, out_dir / "score.png", "clip")
    overlay = ScoreOverlay(out_dir / "overlay.avi", fps, size, threshold)   # add_frame, add_score, close
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from vad.errors import DataError
from vad.inference.sources import Frame


def plot_scores(
    times: np.ndarray, scores: np.ndarray, alerts: np.ndarray, threshold: float | None, path: Path, title: str
) -> None:
    """The scores of one input against time, the threshold and the alerted spans, saved to ``path``."""
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


class ScoreOverlay:
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
        self.waiting: deque[Frame] = deque()
        self.scores: deque[tuple[float, bool]] = deque(maxlen=self.HISTORY)
        self.heat_max = 1e-12

    def add_frame(self, frame: Frame) -> None:
        self.waiting.append(frame)

    def add_score(self, target: Frame, score: float, alert: bool, heat: np.ndarray | None) -> None:
        # frames up to the scored one are written now, in order; the earlier ones without a score
        while self.waiting and self.waiting[0].index < target.index:
            self._write(self.waiting.popleft(), None, None, False)
        if self.waiting and self.waiting[0].index == target.index:
            self.waiting.popleft()
        self.scores.append((score, alert))
        self._write(target, heat, score, alert)

    def _write(self, frame: Frame, heat: np.ndarray | None, score: float | None, alert: bool) -> None:
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
