"""Convert an official dataset download (UCSD Ped1/Ped2, Avenue, ShanghaiTech) into the FFP layout.

Writes, into ``out`` (default ``${paths.data_dir}/<dataset>``)::

    <out>/
      training/frames/<video>/000.tif ...   image frames copied as they are; video frames decoded to png
      testing/frames/<video>/000.jpg ...
      testing/labels/<video>.npy            (N,) uint8 frame labels, 1 = anomalous
      testing/masks/<video>/000.png ...     pixel masks (0 / 255), when the download has them
      prepare.json                          manifest: source, dataset, label source, frame counts, fingerprint

The output is built in a hidden sibling folder and renamed into place, so an interrupted run leaves no half dataset;
a second run with the same source finds the manifest and does nothing.

    python -m vad.prepare dataset=ped2 source=~/downloads/UCSD_Anomaly_Dataset.v1p2
    python -m vad.prepare dataset=avenue source=~/downloads/Avenue_Dataset labels=~/downloads/avenue.mat
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue
from tqdm import tqdm

from vad.app.cli import run_hydra
from vad.data.catalog import dataset_info
from vad.data.frames import iter_video
from vad.data.index import DatasetIndex, Video, is_hidden
from vad.data.labels import PREPARED_MANIFEST, LabelsArg, is_auto, iter_masks, mask_location
from vad.data.layout import open_dataset
from vad.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FRAME_FORMATS = {"png": [cv2.IMWRITE_PNG_COMPRESSION, 3], "jpg": [cv2.IMWRITE_JPEG_QUALITY, 95]}
MANIFEST_VERSION = 1


@dataclass
class PrepareResult:
    """Where the dataset was written, its manifest, and whether the run found it already done."""

    out: Path
    manifest: dict[str, Any]
    skipped: bool


def source_fingerprint(source: Path, labels: LabelsArg, layout: str, frame_format: str) -> str:
    """SHA-256 over the relative names and sizes of every file under ``source`` (dot files excluded), the label file
    and the options: it changes when the download or the requested conversion changes, without reading the frames.
    """
    digest = hashlib.sha256(f"{MANIFEST_VERSION}|{layout}|{frame_format}|{labels}".encode())
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(folder, name)
            digest.update(f"{path.relative_to(source)}:{path.stat().st_size}\n".encode())
    if labels is not None and not is_auto(labels) and Path(labels).is_file():
        digest.update(Path(labels).read_bytes())
    return digest.hexdigest()


def _read_manifest(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / PREPARED_MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _complete(out: Path, manifest: dict[str, Any]) -> bool:
    """True when every video folder the manifest lists holds its number of frames."""
    for split, folder in (("train", "training"), ("test", "testing")):
        for video, n in manifest.get(split, {}).items():
            frames = out / folder / "frames" / video
            if not frames.is_dir() or sum(1 for p in frames.iterdir() if not is_hidden(p)) != n:
                return False
    return True


def _width(n: int) -> int:
    return max(3, len(str(n - 1)))


def _encode(path: Path, image: np.ndarray, frame_format: str) -> None:
    ok, data = cv2.imencode(f".{frame_format}", image, FRAME_FORMATS[frame_format])
    if not ok:
        raise DataError(f"{path}: OpenCV could not encode this frame as {frame_format}")
    data.tofile(str(path))


def _pad_names(folder: Path, n: int, suffix: str) -> None:
    """Rename ``000..`` files to the width ``n`` frames need (a video's length is known only once decoded)."""
    width = _width(n)
    if width > 3:
        for i in range(min(n, 10 ** (width - 1))):
            (folder / f"{i:03d}{suffix}").rename(folder / f"{i:0{width}d}{suffix}")


def _write_frames(video: Video, folder: Path, frame_format: str) -> int:
    """Write the frames of ``video`` into ``folder``; returns how many."""
    folder.mkdir(parents=True)
    if video.source.images:
        width = _width(len(video.source.images))
        for i, image in enumerate(video.source.images):
            shutil.copyfile(image, folder / f"{i:0{width}d}{image.suffix.lower()}")
        return len(video.source.images)
    suffix = f".{frame_format}"
    n = 0
    for n, frame in enumerate(iter_video(video.source.video, channels=3), start=1):  # type: ignore[arg-type]
        _encode(folder / f"{n - 1:03d}{suffix}", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), frame_format)
    if n == 0:
        raise DataError(f"{video.source.location}: the video has no decodable frames; re-encode or remove it")
    _pad_names(folder, n, suffix)
    return n


def _write_masks(video: Video, folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    width = _width(n)
    count = 0
    for count, mask in enumerate(iter_masks(video.masks), start=1):  # type: ignore[arg-type]
        _encode(folder / f"{count - 1:0{width}d}.png", mask.astype(np.uint8) * 255, "png")
    if count != n:
        location = mask_location(video.masks)  # type: ignore[arg-type]
        raise DataError(f"{location}: {count} pixel masks but test video {video.name} has {n} frames; fix the masks")


def _write_dataset(index: DatasetIndex, tmp: Path, frame_format: str, dataset: str) -> dict[str, Any]:
    """Write all videos, labels and masks of ``index`` into ``tmp``; returns the manifest's per-video part."""
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    origins: dict[str, str] = {}
    masks: list[str] = []
    splits = [("train", "training", v) for v in index.train] + [("test", "testing", v) for v in index.test]
    with tqdm(splits, desc=f"prepare {dataset}", unit="video") as bar:
        for split, folder, video in bar:
            n = _write_frames(video, tmp / folder / "frames" / video.name, frame_format)
            counts[split][video.name] = n
            origins[f"{folder}/{video.name}"] = str(video.source.location)
            if video.labels is not None:
                if len(video.labels) != n:
                    raise DataError(
                        f"test video {video.name}: {len(video.labels)} frame labels but {n} decoded frames "
                        f"({video.source.location}); re-encode the video or fix the labels"
                    )
                (tmp / "testing" / "labels").mkdir(parents=True, exist_ok=True)
                np.save(tmp / "testing" / "labels" / f"{video.name}.npy", video.labels.astype(np.uint8))
            if video.masks is not None:
                _write_masks(video, tmp / "testing" / "masks" / video.name, n)
                masks.append(video.name)
            bar.set_postfix(frames=sum(sum(c.values()) for c in counts.values()))
    anomalous = int(sum(v.labels.sum() for v in index.test)) if index.has_labels else None
    return {**counts, "anomalous_test_frames": anomalous, "masks": masks, "origins": origins}


def _check_target(out: Path, source: Path, dataset: str) -> dict[str, Any] | None:
    """The manifest of ``out`` when it is this dataset from this source; raise when ``out`` holds anything else."""
    if out == source or source in out.parents or out in source.parents:
        raise DataError(f"{out}: the output folder overlaps the source {source}; choose out=<a separate folder>")
    if not out.exists():
        return None
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; remove it or choose another out=<folder>")
    manifest = _read_manifest(out)
    if manifest is not None and manifest.get("dataset") == dataset and manifest.get("source") == str(source):
        return manifest
    if not any(out.iterdir()):
        return None
    held = f"{manifest.get('dataset')} from {manifest.get('source')}" if manifest else "files not written by prepare"
    raise DataError(
        f"{out}: folder is not empty and holds {held}, not {dataset} from {source}; nothing was changed. "
        "Remove the folder or choose another out=<folder>"
    )


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def prepare(
    dataset: str,
    source: str | Path,
    out: str | Path,
    layout: str = "auto",
    labels: LabelsArg = "auto",
    frame_format: str = "png",
) -> PrepareResult:
    """Convert the download at ``source`` into the FFP layout at ``out`` (see the module docstring).

    ``labels``: as in :func:`vad.data.layout.open_dataset` (e.g. the FFP ``avenue.mat`` for Avenue's literature
    ground truth); ``frame_format``: png (lossless) or jpg (quality 95) for frames decoded from video files.
    """
    dataset_info(dataset)
    if frame_format not in FRAME_FORMATS:
        raise ConfigError(f"frame_format={frame_format!r}: choose one of {', '.join(FRAME_FORMATS)}")
    source = Path(source).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if not source.exists():
        raise DataError(f"{source}: source not found; pass source=<the folder of the official {dataset} download>")
    if labels is not None and not is_auto(labels):
        given = Path(labels).expanduser()
        labels = (source / given) if not given.exists() and (source / given).exists() else given.resolve()
    fingerprint = source_fingerprint(source, labels, layout, frame_format)
    existing = _check_target(out, source, dataset)
    if existing is not None and existing.get("fingerprint") == fingerprint and _complete(out, existing):
        log.info(f"{out}: {dataset} from {source} is already prepared; nothing to do")
        return PrepareResult(out=out, manifest=existing, skipped=True)

    index = open_dataset(dataset, source, layout=layout, labels=labels)
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        written = _write_dataset(index, tmp, frame_format, dataset)
        manifest = {
            "version": MANIFEST_VERSION,
            "dataset": dataset,
            "source": str(source),
            "layout": index.layout,
            "labels": None if labels is None else str(labels),
            "label_source": index.label_source,
            "frame_format": frame_format,
            "fingerprint": fingerprint,
            **written,
        }
        (tmp / PREPARED_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(manifest["train"].values()) + sum(manifest["test"].values())
    log.info(
        f"{out}: {len(manifest['train'])} training / {len(manifest['test'])} test videos, {total} frames; "
        f"labels: {index.label_source or 'none'}"
    )
    return PrepareResult(out=out, manifest=manifest, skipped=False)


def run(cfg: DictConfig) -> PrepareResult:
    """Run :func:`prepare` from a composed ``conf/prepare.yaml`` (``cfg.dataset`` is the chosen dataset config)."""
    if cfg.get("dataset") is None:
        raise ConfigError(
            "dataset is required: python -m vad.prepare dataset=<ped1|ped2|avenue|shanghaitech> "
            "source=<download folder>"
        )
    if OmegaConf.is_missing(cfg, "source"):
        raise ConfigError(
            f"source is required: python -m vad.prepare dataset={cfg.dataset.name} source=<download folder>"
        )
    try:
        out = cfg.out
    except (MissingMandatoryValue, InterpolationToMissingValueError):
        raise ConfigError(f"out is required for dataset={cfg.dataset.name}: add out=<folder>") from None
    return prepare(
        dataset=cfg.dataset.name,
        source=cfg.source,
        out=out,
        layout=cfg.layout,
        labels=cfg.labels,
        frame_format=cfg.frame_format,
    )


def main() -> None:
    """Entry point of ``python -m vad.prepare`` / ``vad-prepare``: works from any directory."""
    run_hydra("prepare", run)


if __name__ == "__main__":
    main()
