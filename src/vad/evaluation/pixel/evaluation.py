"""Pixel-level metrics of a test: the method's per-pixel error maps against the test videos' pixel masks.

``vad.evaluate`` and the test stage of ``vad.train`` hand a :class:`PixelEvaluation` to the test loop
(``vad.app.stages.test_and_report``); the loop gives it the error map of every scored frame
(:meth:`VADModule.error_maps`, higher = more anomalous, at the working size) and, at the end of the test, it computes
(definitions in :mod:`vad.evaluation.pixel.roc` and :mod:`vad.evaluation.pixel.regions`):

- ``auc``: the pixel AUC over every pixel of every scored frame; ``auc_anomalous_frames``: over the frames whose mask
  holds an anomaly (the background of the normal frames left out);
- ``ucsd_auc`` / ``ucsd_eer``: the UCSD pixel-level criterion (a frame is detected when 40 % of its anomalous pixels
  are);
- ``rbdc`` / ``tbdc``: the region- and track-based detection criteria (Street Scene), over ``thresholds`` evenly
  spaced from the lowest to the highest map value.

    pixel = PixelEvaluation.from_config(cfg, run_dir)      # pixel_metrics, ... (vad.evaluation.pixel.settings)
    result = test_and_report(..., pixel=pixel)              # metrics.json "pixel": pixel.block, or null and
    pixel.block, pixel.reason                               #   "pixel_reason": why nothing was computed

Nothing is computed (``block`` None, ``reason`` says why) unless every scored test video has pixel masks (UCSD
``TestNNN_gt``, Avenue ``volLabel``, ShanghaiTech ``test_pixel_mask``, FFP-layout ``testing/test_pixel_mask`` or
``testing/masks``) and the method gives a map. Maps are compared with the masks at the masks' size
(:func:`~vad.evaluation.pixel.masks.resize_maps`, bilinear), on the scored frames only: the first frames of each
video that have no prediction are left out of maps and masks alike.

Memory, disk and time: during the test each map is appended, float32 at the working size, to a file per video in a
temporary folder of the run folder (removed at the end): the disk holds the test's maps (Avenue at 256x256: 15324
frames, 4 GB). At the end each video is read back alone, twice: resized chunk by chunk for the pixel AUC, the UCSD
scores and the range of the resized maps; then resized into a second file at the mask size for RBDC / TBDC, whose
thresholds span that range (as :func:`~vad.evaluation.pixel.regions.region_track_criteria` with a threshold count).
What stays in memory is the pixel-AUC histogram (``pixel_bins`` x 16 bytes), the per-frame UCSD scores and one
video's masks and connected-component labels (RBDC's tracks span a video: roughly 10 bytes per mask pixel of the
longest video, about 3 GB for Avenue's 1439 frames at 360x640). RBDC / TBDC dominate the time: one
connected-component labelling per frame and threshold (about 25 s for a 176-frame video at 240x360 with 100
thresholds of noise-like maps, measured on a busy 2-core CPU); ``pixel_thresholds`` trades resolution for time.

Pixel AUC: a histogram of ``pixel_bins`` equal bins over the maps' range (pixels in one bin count as ties); the
block records the bound on the difference to the exact AUC (``auc_bin_error_bound``, :attr:`PixelROC.bin_error_bound`).
``pixel_bins=null`` is exact, with memory growing with the number of distinct map values (small test sets only).

Under DDP each test video is scored whole on one rank (``VideoShards``): every rank spools and measures its own
videos, and their statistics (histograms, per-frame scores, detection counts; no maps) are gathered with
``all_gather_object`` like the frame signals and merged, so every rank ends with the same block.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vad.data.index import MaskSource
from vad.errors import VadError
from vad.evaluation.pixel.masks import read_masks, resize_maps
from vad.evaluation.pixel.regions import RegionTrackCriteria, threshold_sweep
from vad.evaluation.pixel.roc import PixelROC, frame_criterion, ucsd_frame_scores
from vad.evaluation.pixel.settings import PixelSettings, settings_from_config

#: the criteria's fixed parameters, recorded in the block
UCSD_COVERAGE = 0.4
RBDC_BETA = 0.1
TBDC_ALPHA = 0.1
#: maps are brought to the masks' size with this interpolation of :func:`vad.evaluation.pixel.masks.resize_maps`
INTERPOLATION = "linear"
#: the reason recorded when no scored test video has masks
NO_MASKS = "the test videos have no pixel masks"
#: frames resized and measured at once
CHUNK = 32

Gather = Callable[[Any], list[Any]]


class PixelEvaluation:
    """Collects a test's error maps and computes the pixel-level metrics at its end (see the module docstring).

    The test loop calls :meth:`start` (with the datamodule), :meth:`add` for each scored run of frames of one video
    while :attr:`collecting`, and :meth:`finish` on every rank; then :attr:`block` holds the metrics (None when
    nothing was computed) and :attr:`reason` why not.

    Args:
        settings: :class:`PixelSettings`.
        spool_root: the folder the temporary map files go in (the run folder); the system's temporary folder when
            None.
        description: what the maps are, recorded in the block (the method's ``error_map_description``).
    """

    def __init__(self, settings: PixelSettings, spool_root: Path | None = None, description: str = "") -> None:
        self.settings = settings
        self.spool_root = None if spool_root is None else Path(spool_root)
        self.description = description
        self.block: dict[str, Any] | None = None
        self.reason: str | None = None if settings.enabled else "pixel_metrics=false"
        self._reset()

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], spool_root: Path | None = None) -> PixelEvaluation:
        return cls(settings_from_config(cfg), spool_root)

    def _reset(self) -> None:
        self._spool: Path | None = None
        self._names: list[str] = []
        self._num_frames: list[int] = []
        self._masks: list[MaskSource | None] = []
        self._frames: dict[int, list[int]] = {}
        self._size: tuple[int, int] | None = None
        self._lo, self._hi = math.inf, -math.inf
        self._no_map = False
        self._non_finite = False

    # ------------------------------------------------------------------ during the test
    @property
    def collecting(self) -> bool:
        """True while maps are wanted (the test videos have masks and no map has been refused yet)."""
        return self._spool is not None and not (self._no_map or self._non_finite)

    @property
    def summary(self) -> Mapping[str, Any] | str | None:
        """What the printed summary shows: the block, or why it is missing -- except for a test set without masks
        (most of them: footage, Ped2's common layout), where a row saying so would be noise (metrics.json has it)."""
        if self.block is not None:
            return self.block
        return None if self.reason in (None, NO_MASKS) else self.reason

    def start(self, datamodule: Any, rank: int = 0, description: str | None = None) -> None:
        """Decide from the datamodule's test videos whether there is anything to measure; set up the spool.
        ``description``: what the maps are (recorded in the block)."""
        if description is not None:
            self.description = description
        self.cleanup()
        self._reset()
        self.block = None
        self.reason = None if self.settings.enabled else "pixel_metrics=false"
        if self.reason is not None:
            return
        masks = getattr(datamodule, "test_masks", None)
        if masks is None:
            self.reason = f"the datamodule ({type(datamodule).__name__}) gives no pixel masks"
            return
        videos = datamodule.test_videos
        scored = [i for i, v in enumerate(videos) if not v.skipped]
        missing = [videos[i].name for i in scored if masks[i] is None]
        if scored and len(missing) == len(scored):
            self.reason = NO_MASKS
            return
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            self.reason = (
                f"{len(missing)} of the {len(scored)} scored test videos have no pixel masks ({shown}); the pixel "
                "metrics need every scored video's masks"
            )
            return
        self._names = [v.name for v in videos]
        self._num_frames = [int(v.num_frames) for v in videos]
        self._masks = list(masks)
        if self.spool_root is not None:
            self.spool_root.mkdir(parents=True, exist_ok=True)
        self._spool = Path(tempfile.mkdtemp(prefix=f".pixel-maps-rank{rank}-", dir=self.spool_root))

    def add(self, video_id: int, frames: torch.Tensor | np.ndarray, maps: torch.Tensor | None) -> None:
        """Spool the maps (B, H, W) of the scored frames ``frames`` (B,) of one video, in frame order; None: the
        method gives no map (nothing is measured)."""
        if not self.collecting:
            return
        if maps is None:
            self._no_map = True
            return
        values = maps.detach().float().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
        values = np.ascontiguousarray(values, dtype=np.float32)
        index = np.asarray(frames.detach().cpu() if isinstance(frames, torch.Tensor) else frames, dtype=np.int64)
        if values.ndim != 3 or values.shape[0] != index.shape[0]:
            raise ValueError(f"error_maps must give (B, H, W) for the {index.shape[0]} frames, got {values.shape}")
        if not index.size:
            return
        size = (int(values.shape[1]), int(values.shape[2]))
        if self._size is not None and size != self._size:
            raise ValueError(f"error maps of different sizes: {self._size} and {size}")
        self._size = size
        if not np.isfinite(values).all():
            self._non_finite = True
            return
        self._lo = min(self._lo, float(values.min()))
        self._hi = max(self._hi, float(values.max()))
        seen = self._frames.setdefault(int(video_id), [])
        if seen and int(index.min()) <= seen[-1]:
            raise RuntimeError(f"video {self._names[video_id]}: error maps arrived out of frame order")
        seen.extend(index.tolist())
        assert self._spool is not None
        with open(self._spool / f"{int(video_id)}.f32", "ab") as f:
            f.write(values.tobytes())

    # ------------------------------------------------------------------ at the end of the test
    def finish(self, gather: Gather | None = None) -> None:
        """Compute the metrics (every rank calls this: ``gather`` collects one object from each, in rank order;
        None for one process). Sets :attr:`block` or :attr:`reason`; the spool is removed."""
        gather = gather or (lambda obj: [obj])
        try:
            if self.reason is None:  # the same on every rank: decided from the dataset and the settings
                self._finish(gather)
        finally:
            self.cleanup()

    def _finish(self, gather: Gather) -> None:
        start = time.perf_counter()
        local = {
            "no_map": self._no_map,
            "non_finite": self._non_finite,
            "videos": sorted(self._frames),
            "lo": self._lo,
            "hi": self._hi,
            "size": self._size,
        }
        ranks = gather(local)
        videos = [v for r in ranks for v in r["videos"]]
        if any(r["no_map"] for r in ranks):
            self.reason = "the method gives no per-pixel error map (its error_maps returns None)"
        elif any(r["non_finite"] for r in ranks):
            self.reason = "the error maps hold NaN or infinite values"
        elif not videos:
            self.reason = "no test frame was scored"
        elif len(set(videos)) < len(videos):
            self.reason = "a test video was scored on several processes; RBDC / TBDC need each video on one"
        if self.reason is not None:
            return
        # 1. pixel AUC and the UCSD criterion; the range of the maps at the masks' size (inside the working one)
        value_range = (min(r["lo"] for r in ranks), max(r["hi"] for r in ranks))
        first = gather(self._guarded(self._measure_pixels, value_range))
        if self._failed(first):
            return
        # 2. RBDC / TBDC at thresholds over that range, as region_track_criteria(maps, masks, thresholds=count)
        lo = min(p["lo"] for p in first)
        hi = max(p["hi"] for p in first)
        thresholds = threshold_sweep(lo, hi, self.settings.thresholds)
        second = gather(self._guarded(self._measure_regions, thresholds))
        if self._failed(second):
            return
        map_size = next(r["size"] for r in ranks if r["size"] is not None)
        self.block = self._merge(first, second, (lo, hi), map_size)
        self.block["seconds"] = round(time.perf_counter() - start, 3)

    @staticmethod
    def _guarded(measure: Callable[[Any], dict[str, Any]], arg: Any) -> dict[str, Any] | str:
        """``measure(arg)``, or the error as text when the masks cannot be used (so that every rank still gathers,
        and the frame-level report is written)."""
        try:
            return measure(arg)
        except (VadError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"

    def _failed(self, parts: Sequence[dict[str, Any] | str]) -> bool:
        errors = [p for p in parts if isinstance(p, str)]
        if errors:
            self.reason = f"the pixel masks could not be used: {errors[0]}"
        return bool(errors)

    def _videos(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(video id, its spooled maps (n, h, w) memory-mapped, its masks (n, H, W) of the same frames) of this
        rank's videos, one at a time."""
        for video_id in sorted(self._frames):
            assert self._spool is not None  # set by start()
            assert self._size is not None  # set by the first add()
            frames = np.asarray(self._frames[video_id], dtype=np.int64)
            source = self._masks[video_id]
            assert source is not None
            masks = read_masks(source, self._num_frames[video_id])[frames]
            maps = np.memmap(
                self._spool / f"{video_id}.f32", dtype=np.float32, mode="r", shape=(len(frames), *self._size)
            )
            yield video_id, maps, masks
            del maps

    def _measure_pixels(self, value_range: tuple[float, float]) -> dict[str, Any]:
        """This rank's pixel ROCs, UCSD frame scores, mask sizes and the range of its resized maps."""
        bins = self.settings.bins
        every = PixelROC(bins=bins, value_range=value_range if bins is not None else None)
        anomalous = PixelROC(bins=bins, value_range=every.value_range, anomalous_frames_only=True)
        scores: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        sizes: set[tuple[int, int]] = set()
        lo, hi = math.inf, -math.inf
        for _, maps, masks in self._videos():
            size = (int(masks.shape[1]), int(masks.shape[2]))
            sizes.add(size)
            for a in range(0, len(masks), CHUNK):
                chunk = resize_maps(np.asarray(maps[a : a + CHUNK]), size, INTERPOLATION)
                every.update(chunk, masks[a : a + CHUNK])
                anomalous.update(chunk, masks[a : a + CHUNK])
                s, y = ucsd_frame_scores(chunk, masks[a : a + CHUNK], UCSD_COVERAGE)
                scores.append(s)
                labels.append(y)
                if chunk.size:
                    lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
        return {
            "every": every,
            "anomalous": anomalous,
            "scores": scores,
            "labels": labels,
            "sizes": sorted(sizes),
            "videos": len(self._frames),
            "lo": lo,
            "hi": hi,
        }

    def _measure_regions(self, thresholds: np.ndarray) -> dict[str, Any]:
        """This rank's RBDC / TBDC counts: each video's maps resized into a file at the masks' size (tracks span the
        whole video), then measured."""
        criteria = RegionTrackCriteria(thresholds, beta=RBDC_BETA, alpha=TBDC_ALPHA)
        for video_id, maps, masks in self._videos():
            assert self._spool is not None
            path = self._spool / f"{video_id}.resized.npy"
            resized = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=masks.shape)
            for a in range(0, len(masks), CHUNK):
                resized[a : a + CHUNK] = resize_maps(np.asarray(maps[a : a + CHUNK]), masks.shape[1:], INTERPOLATION)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                criteria.update(resized, masks)
            del resized
            path.unlink()
        return {"criteria": criteria}

    def _merge(
        self,
        first: Sequence[dict[str, Any]],
        second: Sequence[dict[str, Any]],
        value_range: tuple[float, float],
        map_size: tuple[int, int],
    ) -> dict[str, Any]:
        # copies: the gathered parts are not ours to change (one process's gather may hand the same objects around)
        every, anomalous = copy.deepcopy(first[0]["every"]), copy.deepcopy(first[0]["anomalous"])
        criteria = copy.deepcopy(second[0]["criteria"])
        for part in first[1:]:
            every.merge(part["every"])
            anomalous.merge(part["anomalous"])
        for part in second[1:]:
            criteria.merge(part["criteria"])
        scores = [s for p in first for s in p["scores"]]
        labels = [y for p in first for y in p["labels"]]
        sizes = sorted({tuple(s) for p in first for s in p["sizes"]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a single class gives NaN, written as null
            ucsd = frame_criterion(scores, labels)
            detection = criteria.result()
            auc, auc_anomalous = every.auc(), anomalous.auc()
            bound = every.bin_error_bound
        return {
            "map": self.description,
            "map_size": list(map_size),
            "mask_size": list(sizes[0]) if len(sizes) == 1 else [list(s) for s in sizes],
            "interpolation": INTERPOLATION,
            "videos": sum(p["videos"] for p in first),
            "frames": int(ucsd.labels.size),
            "anomalous_frames": int(ucsd.labels.sum()),
            "pixels": every.n_positive + every.n_negative,
            "anomalous_pixels": every.n_positive,
            "auc": auc,
            "auc_anomalous_frames": auc_anomalous,
            "auc_bins": self.settings.bins,
            "auc_bin_error_bound": bound,
            "ucsd_auc": ucsd.auc,
            "ucsd_eer": ucsd.eer,
            "ucsd_coverage": UCSD_COVERAGE,
            "rbdc": detection.rbdc,
            "tbdc": detection.tbdc,
            "thresholds": int(detection.thresholds.size),
            "threshold_range": list(value_range),
            "regions": detection.n_regions,
            "tracks": detection.n_tracks,
            "beta": RBDC_BETA,
            "alpha": TBDC_ALPHA,
        }

    def cleanup(self) -> None:
        """Remove the spool folder (idempotent)."""
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None
