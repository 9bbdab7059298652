"""The synthetic default dataset: a procedurally rendered fixed-camera scene with labelled anomalies.

A grey, static scene (textured lawn, a horizontal walkway, a building, trees, lamp posts, a bench) in which small
walkers cross along the walkway, both ways, at a regular speed. Test videos add anomalies of three kinds:

- ``speed``: a walker running along the walkway at several times the normal speed;
- ``object``: a vehicle (a cart with wheels, bigger than a walker and faster) driving along the walkway;
- ``direction``: a walker crossing the scene top-to-bottom or bottom-to-top, over the lawn, across the regular flow.

A frame is labelled 1 while an anomalous entity is visible: while at least 4 pixels (at 64x64) are at least half
covered by it; its mask marks those pixels and is empty in normal frames. Written in the FFP layout (frame files
numbered from 000; segment ``first``/``last`` are 0-based inclusive frame indices):

    <root>/
      synthetic.json                 generator version, parameters, seed, per test video its anomaly segments
      training/frames/01/000.png ... grey uint8 PNGs
      testing/frames/01/000.png ...
      testing/labels/01.npy          uint8 (num_frames,), 1 = anomalous
      testing/masks/01/000.png ...   uint8 0/255, the anomalous entity's pixels (empty in normal frames)

    root = generate("data/synthetic", seed=0)          # or: python -m vad.data.synthetic data/synthetic --seed 0
    index = open_dataset("synthetic", root)            # see vad.data.layout

The same seed and parameters give byte-identical files; only ``np.random.default_rng(seed)`` is used, never the
global random state. Shapes are drawn on a 4x supersampled canvas and area-averaged, so motion is sub-pixel smooth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from vad.errors import DataError

GENERATOR_VERSION = 1
KINDS = ("speed", "object", "direction")
MANIFEST = "synthetic.json"

_SS = 4  # supersampling factor of the drawing canvas
_SHIFT = 2  # extra fractional bits handed to OpenCV's drawing calls
_MIN_NORMAL_LEAD = 12  # normal frames before the first anomaly (more than any method's dropped input frames)
_MIN_VISIBLE_AREA = 4.0  # pixels (at 64x64) an anomalous entity must cover to count as visible: no 1-pixel slivers
_ARRIVAL_SHAPE = 2.0  # gamma shape of the walkers' arrival intervals: 1 = Poisson, larger = more regular


@dataclass(frozen=True)
class SyntheticParams:
    """Every knob of the generator; all of it is recorded in ``synthetic.json``.

    Lengths are in units of ``size[0] / 64`` pixels (so the scene looks the same at any resolution); speeds in those
    units per frame. ``size`` is (height, width).
    """

    num_train: int = 8
    num_test: int = 6
    frames_per_video: int = 120
    size: tuple[int, int] = (64, 64)
    crowd: float = 6.0
    walk_speed: float = 1.0
    speed_spread: float = 0.12
    run_factor: float = 4.0
    vehicle_factor: float = 2.0
    cross_factor: float = 1.8
    second_anomaly_prob: float = 0.5
    masks: bool = True

    def __post_init__(self) -> None:
        h, w = self.size
        if min(h, w) < 32:
            raise ValueError(f"size must be at least 32x32 pixels, got {self.size}")
        if self.num_train < 1 or self.num_test < 1:
            raise ValueError(f"num_train and num_test must be >= 1, got {self.num_train}, {self.num_test}")
        if self.frames_per_video < 3 * _MIN_NORMAL_LEAD:
            raise ValueError(f"frames_per_video must be >= {3 * _MIN_NORMAL_LEAD}, got {self.frames_per_video}")
        if self.crowd <= 0 or self.walk_speed <= 0:
            raise ValueError(f"crowd and walk_speed must be positive, got {self.crowd}, {self.walk_speed}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        return d


@dataclass(frozen=True)
class Scene:
    """The static part of the scene: background image (H, W) float32 in [0, 255] and the walkway geometry (px)."""

    background: np.ndarray
    walk_top: float
    walk_bottom: float
    unit: float


@dataclass
class Entity:
    """A moving thing: foot point per frame ``xy`` (F, 2) in output pixels, NaN where it does not exist."""

    shape: str  # "walker" or "vehicle"
    xy: np.ndarray
    scale: float
    tones: tuple[float, ...]
    kind: str | None = None  # anomaly kind, None for normal walkers
    facing: int = 1


# ---------------------------------------------------------------------------------------------------------- scene


def _texture(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth noise of unit standard deviation, (H, W) float32."""
    noise = rng.standard_normal(shape).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    return smooth / max(float(smooth.std()), 1e-6)


def _pt(x: float, y: float) -> tuple[int, int]:
    """Output-pixel coordinates -> fixed-point supersampled canvas coordinates (pixel centres at +0.5)."""
    scale = _SS * (1 << _SHIFT)
    return round(x * scale), round(y * scale)


def _len(v: float) -> int:
    return max(1, round(v * _SS * (1 << _SHIFT)))


Paint = float | tuple[float, float]  # a grey level, or (grey level, coverage) on a 2-channel canvas


def _rect(canvas: np.ndarray, x0: float, y0: float, x1: float, y1: float, paint: Paint) -> None:
    pts = np.array([_pt(x0, y0), _pt(x1, y0), _pt(x1, y1), _pt(x0, y1)], dtype=np.int32)
    cv2.fillConvexPoly(canvas, pts, paint, cv2.LINE_8, _SHIFT)


def _ellipse(canvas: np.ndarray, cx: float, cy: float, ax: float, ay: float, paint: Paint) -> None:
    cv2.ellipse(canvas, _pt(cx, cy), (_len(ax), _len(ay)), 0, 0, 360, paint, -1, cv2.LINE_8, _SHIFT)


def _downsample(canvas: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)


def build_scene(rng: np.random.Generator, size: tuple[int, int]) -> Scene:
    """Draw the static background; layout details (walkway position, trees, building) vary with ``rng``."""
    h, w = size
    u = h / 64.0
    hs, ws = h * _SS, w * _SS
    canvas = np.full((hs, ws), 105.0, np.float32)
    canvas += 9.0 * cv2.resize(_texture(rng, (h, w), 3.0), (ws, hs), interpolation=cv2.INTER_LINEAR)
    canvas += 3.0 * _texture(rng, (hs, ws), 1.5 * _SS)

    walk_top = h * rng.uniform(0.47, 0.53)
    walk_bottom = walk_top + h * rng.uniform(0.30, 0.34)
    walk = np.full((hs, ws), 165.0, np.float32) + 2.0 * _texture(rng, (hs, ws), 1.0 * _SS)
    # Paving joints: faint vertical lines every 8 units.
    offset = rng.uniform(0, 8 * u)
    for x in np.arange(offset, w, 8 * u):
        _rect(walk, x, 0, x + 0.35 * u, h, 152.0)
    rows = slice(round(walk_top * _SS), round(walk_bottom * _SS))
    canvas[rows] = walk[rows]
    _rect(canvas, 0, walk_top - 0.6 * u, w, walk_top, 85.0)  # kerbs
    _rect(canvas, 0, walk_bottom, w, walk_bottom + 0.6 * u, 85.0)

    # Building in the top-left corner with a grid of windows.
    bw, bh = w * rng.uniform(0.30, 0.40), walk_top * rng.uniform(0.55, 0.70)
    _rect(canvas, 0, 0, bw, bh, 70.0)
    _rect(canvas, 0, bh - 1.0 * u, bw, bh, 50.0)
    for wx in np.arange(2.5 * u, bw - 4 * u, 6 * u):
        for wy in np.arange(2.5 * u, bh - 5 * u, 6 * u):
            _rect(canvas, wx, wy, wx + 3 * u, wy + 3 * u, 150.0)

    # Trees on the lawns (upper right and bottom strip), lamp posts on the upper kerb, one bench.
    trees = [(rng.uniform(bw + 6 * u, w - 6 * u), walk_top * rng.uniform(0.35, 0.7))]
    trees.append((rng.uniform(5 * u, w - 5 * u), min(walk_bottom + 6 * u, h - 3 * u)))
    for tx, ty in trees:
        _rect(canvas, tx - 0.7 * u, ty, tx + 0.7 * u, ty + 5 * u, 60.0)
        r = rng.uniform(3.5, 4.5) * u
        _ellipse(canvas, tx, ty - 0.5 * r, r, r, 55.0)
        _ellipse(canvas, tx - 0.3 * r, ty - 0.8 * r, 0.45 * r, 0.45 * r, 75.0)
    for lx in rng.uniform(0.1, 0.9, size=2) * w:
        _rect(canvas, lx - 0.4 * u, walk_top - 11 * u, lx + 0.4 * u, walk_top, 45.0)
        _ellipse(canvas, lx, walk_top - 11 * u, 1.2 * u, 0.8 * u, 200.0)
    bx = rng.uniform(0.55, 0.85) * w
    _rect(canvas, bx, walk_top - 5 * u, bx + 8 * u, walk_top - 3.5 * u, 60.0)
    _rect(canvas, bx + 0.5 * u, walk_top - 3.5 * u, bx + 1.3 * u, walk_top - 1.5 * u, 50.0)
    _rect(canvas, bx + 6.7 * u, walk_top - 3.5 * u, bx + 7.5 * u, walk_top - 1.5 * u, 50.0)

    background = np.clip(_downsample(canvas, size), 0.0, 255.0)
    return Scene(background=background, walk_top=walk_top, walk_bottom=walk_bottom, unit=u)


# -------------------------------------------------------------------------------------------------------- entities


def _walker_tones(rng: np.random.Generator, light: bool | None = None) -> tuple[float, float, float]:
    """(body, head, legs) grey levels: mostly dark clothes, some light ones; all contrast with the walkway.

    ``light`` forces light clothes, which stand out on the darker lawn and trees too.
    """
    if light is None:
        light = rng.random() < 0.25
    body = rng.uniform(215, 245) if light else rng.uniform(25, 85)
    return body, rng.uniform(110, 135), rng.uniform(30, 60)


def _lane_y(rng: np.random.Generator, scene: Scene) -> float:
    """A foot height on the walkway, away from its kerbs."""
    lo, hi = scene.walk_top + 0.18 * (scene.walk_bottom - scene.walk_top), scene.walk_bottom - 1.0 * scene.unit
    return float(rng.uniform(lo, hi))


def _perspective(scene: Scene, y: float) -> float:
    """Apparent size factor: things lower in the image (closer to the camera) look slightly bigger."""
    h = scene.background.shape[0]
    return 0.85 + 0.3 * min(max(y / h, 0.0), 1.0)


def _along_walkway(
    rng: np.random.Generator, scene: Scene, start: float, num_frames: int, speed: float, margin: float, jitter: bool
) -> tuple[np.ndarray, int]:
    """Foot track (F, 2) of something entering at frame ``start`` from a random side and walking along the walkway.

    ``jitter`` adds a slow, smooth wobble of speed (+-6 %) and height (+-0.4 units): regular but not robotic.
    """
    w = scene.background.shape[1]
    facing = 1 if rng.random() < 0.5 else -1
    y0 = _lane_y(rng, scene)
    t = np.arange(num_frames, dtype=np.float64) - start
    if jitter:
        period, phase = rng.uniform(40, 80), rng.uniform(0, 2 * np.pi)
        amp = 0.06 * period / (2 * np.pi)
        dist = speed * (t + amp * (np.sin(2 * np.pi * t / period + phase) - np.sin(phase)))
        y = y0 + 0.4 * scene.unit * np.sin(2 * np.pi * t / rng.uniform(50, 90) + rng.uniform(0, 2 * np.pi))
    else:
        dist, y = speed * t, np.full_like(t, y0)
    x = -margin + dist if facing > 0 else w + margin - dist
    xy = np.stack([x, y], axis=1)
    gone = (t < 0) | (x < -margin - 1) | (x > w + margin + 1)
    xy[gone] = np.nan
    return xy, facing


def _crowd(rng: np.random.Generator, scene: Scene, num_frames: int, p: SyntheticParams) -> list[Entity]:
    """Normal walkers, arriving at gamma-distributed intervals (more regular than Poisson) for a steady crowd."""
    w = scene.background.shape[1]
    margin = 4.0 * scene.unit
    speed = p.walk_speed * scene.unit
    crossing = (w + 2 * margin) / speed
    interval = crossing / p.crowd
    walkers = []
    t = -crossing * 1.2  # start in the past so the first frame is already populated
    while True:
        t += interval * rng.gamma(_ARRIVAL_SHAPE, 1.0 / _ARRIVAL_SHAPE)
        if t >= num_frames:
            return walkers
        own_speed = speed * rng.uniform(1.0 - p.speed_spread, 1.0 + p.speed_spread)
        xy, facing = _along_walkway(rng, scene, t, num_frames, own_speed, margin, jitter=True)
        if np.isnan(xy[:, 0]).all():
            continue
        scale = rng.uniform(0.9, 1.1)
        walkers.append(Entity("walker", xy, scale, _walker_tones(rng), facing=facing))


def _anomaly(
    rng: np.random.Generator, scene: Scene, kind: str, start: int, num_frames: int, p: SyntheticParams
) -> Entity:
    """One anomalous entity of ``kind`` (see the module docstring), setting off at frame ``start`` from out of view."""
    h, w = scene.background.shape
    u = scene.unit
    speed = p.walk_speed * u
    if kind == "speed":
        xy, facing = _along_walkway(rng, scene, start, num_frames, speed * p.run_factor, 4 * u, jitter=False)
        return Entity("walker", xy, rng.uniform(0.95, 1.1), _walker_tones(rng), kind=kind, facing=facing)
    if kind == "object":
        xy, facing = _along_walkway(rng, scene, start, num_frames, speed * p.vehicle_factor, 10 * u, jitter=False)
        body = rng.uniform(15, 45) if rng.random() < 0.5 else rng.uniform(220, 250)
        tones = (body, rng.uniform(120, 190), 15.0)
        return Entity("vehicle", xy, rng.uniform(0.95, 1.1), tones, kind=kind, facing=facing)
    if kind == "direction":
        down = rng.random() < 0.5
        angle = rng.uniform(-0.25, 0.25)  # radians off the vertical
        v = speed * p.cross_factor
        t = np.arange(num_frames, dtype=np.float64) - start
        x0 = rng.uniform(0.45, 0.85) * w
        y = (-0.5 * u + v * np.cos(angle) * t) if down else (h + 14 * u - v * np.cos(angle) * t)
        xy = np.stack([x0 + v * np.sin(angle) * t, y], axis=1)
        xy[(t < 0) | (y < -1.0 * u) | (y > h + 15 * u)] = np.nan
        return Entity("walker", xy, rng.uniform(0.95, 1.1), _walker_tones(rng, light=True), kind=kind)
    raise ValueError(f"unknown anomaly kind {kind!r}; choose from {KINDS}")


def _visible_span(entity: Entity, scene: Scene) -> tuple[int, int] | None:
    """First and last frame whose foot point lies roughly in view (a planning estimate; labels come from masks)."""
    h, w = scene.background.shape
    xy = entity.xy
    inside = (
        ~np.isnan(xy[:, 0]) & (xy[:, 0] > -2) & (xy[:, 0] < w + 2) & (xy[:, 1] > 0) & (xy[:, 1] < h + 12 * scene.unit)
    )
    frames = np.flatnonzero(inside)
    return (int(frames[0]), int(frames[-1])) if frames.size else None


def _plan_anomalies(rng: np.random.Generator, scene: Scene, video: int, p: SyntheticParams) -> list[Entity]:
    """One or two anomalies; video ``i`` starts with kind ``i mod 3`` so every kind occurs once there are 3 videos."""
    n = p.frames_per_video
    kinds = [KINDS[video % len(KINDS)]]
    if rng.random() < p.second_anomaly_prob:
        kinds.append(KINDS[int(rng.integers(len(KINDS)))])
    entities: list[Entity] = []
    earliest = _MIN_NORMAL_LEAD
    for i, kind in enumerate(kinds):
        latest = max(earliest, round(0.45 * n)) if i == 0 else n - 2 * _MIN_NORMAL_LEAD
        if earliest > latest:
            break
        start = int(rng.integers(earliest, latest + 1))
        entity = _anomaly(rng, scene, kind, start, n, p)
        span = _visible_span(entity, scene)
        if span is None:
            break
        entities.append(entity)
        earliest = span[1] + int(rng.integers(8, 20))
    return entities


# ------------------------------------------------------------------------------------------------------- rendering


def _draw(canvas: np.ndarray, entity: Entity, frame: int, scene: Scene) -> None:
    """Draw ``entity`` as it is at ``frame`` on a supersampled canvas.

    A 2-channel canvas receives (grey level, coverage 1) per pixel; a 1-channel canvas receives 1 (a mask).
    """
    x, y = (float(v) for v in entity.xy[frame])
    s = entity.scale * _perspective(scene, y) * scene.unit
    a, b, c = ((t, 1.0) for t in entity.tones) if canvas.ndim == 3 else (1.0, 1.0, 1.0)
    if entity.shape == "walker":  # a: body, b: head, c: legs
        _rect(canvas, x - 1.3 * s, y - 4.0 * s, x + 1.3 * s, y, c)
        _ellipse(canvas, x, y - 7.0 * s, 2.3 * s, 4.2 * s, a)
        _ellipse(canvas, x, y - 12.6 * s, 1.8 * s, 1.8 * s, b)
        return
    f = entity.facing  # vehicle; a: body, b: window, c: wheels
    _rect(canvas, x - 8 * s, y - 7.5 * s, x + 8 * s, y - 2 * s, a)
    _rect(canvas, x + f * (1 * s), y - 7 * s, x + f * (6.5 * s), y - 4.5 * s, b)
    for wx in (x - 5 * s, x + 5 * s):
        _ellipse(canvas, wx, y - 1.8 * s, 1.8 * s, 1.8 * s, c)


def _render_frame(scene: Scene, entities: list[Entity], frame: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Composite the entities present at ``frame`` over the background, far to near.

    Returns the frame (H, W) uint8 and, per anomalous entity of ``entities`` (in order), its mask (H, W) bool: the
    pixels at least half covered by it (walkers passing in front do not remove it from the mask).
    """
    h, w = scene.background.shape
    size = (h, w)
    present = [e for e in entities if not np.isnan(e.xy[frame, 0])]
    present.sort(key=lambda e: e.xy[frame, 1])
    # Premultiplied compositing: grey level and coverage are area-averaged together, then blended once.
    layer = np.zeros((h * _SS, w * _SS, 2), np.float32)
    for e in present:
        _draw(layer, e, frame, scene)
    small = _downsample(layer, size)
    image = scene.background * (1.0 - small[:, :, 1]) + small[:, :, 0]
    masks = []
    for e in (e for e in entities if e.kind is not None):
        if np.isnan(e.xy[frame, 0]):
            masks.append(np.zeros(size, bool))
            continue
        own = np.zeros((h * _SS, w * _SS), np.float32)
        _draw(own, e, frame, scene)
        masks.append(_downsample(own, size) >= 0.5)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), masks


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise DataError(f"{path}: OpenCV could not encode this frame as PNG")
    path.write_bytes(data.tobytes())


def _render_video(
    folder: Path, scene: Scene, entities: list[Entity], num_frames: int, mask_folder: Path | None
) -> tuple[np.ndarray, list[dict]]:
    """Write the frames (and masks) of one video.

    Returns per-frame labels (F,) uint8 (1 while an anomalous entity is visible) and its anomaly segments
    ``{kind, first, last}`` (0-based, inclusive), in order of appearance.
    """
    folder.mkdir(parents=True)
    if mask_folder is not None:
        mask_folder.mkdir(parents=True)
    digits = max(3, len(str(num_frames - 1)))
    anomalies = [e for e in entities if e.kind is not None]
    visible = np.zeros((num_frames, len(anomalies)), bool)
    for i in range(num_frames):
        image, masks = _render_frame(scene, entities, i)
        _write_png(folder / f"{i:0{digits}d}.png", image)
        union = np.zeros(image.shape, bool)
        for j, mask in enumerate(masks):
            visible[i, j] = mask.sum() >= _MIN_VISIBLE_AREA * scene.unit**2
            if visible[i, j]:
                union |= mask
        if mask_folder is not None:
            _write_png(mask_folder / f"{i:0{digits}d}.png", union.astype(np.uint8) * 255)
    segments = []
    for j, e in enumerate(anomalies):
        frames = np.flatnonzero(visible[:, j])
        if frames.size:
            segments.append({"kind": e.kind, "first": int(frames[0]), "last": int(frames[-1])})
    segments.sort(key=lambda s: s["first"])
    return visible.any(axis=1).astype(np.uint8), segments


# ------------------------------------------------------------------------------------------------------ generation


def _video_names(count: int) -> list[str]:
    digits = max(2, len(str(count)))
    return [f"{i:0{digits}d}" for i in range(1, count + 1)]


def _write_dataset(out: Path, seed: int, p: SyntheticParams) -> None:
    rng = np.random.default_rng(seed)
    scene = build_scene(rng, p.size)
    n = p.frames_per_video
    for name in _video_names(p.num_train):
        _render_video(out / "training" / "frames" / name, scene, _crowd(rng, scene, n, p), n, None)
    videos = {}
    (out / "testing" / "labels").mkdir(parents=True)
    for i, name in enumerate(_video_names(p.num_test)):
        entities = _crowd(rng, scene, n, p) + _plan_anomalies(rng, scene, i, p)
        mask_folder = out / "testing" / "masks" / name if p.masks else None
        labels, segments = _render_video(out / "testing" / "frames" / name, scene, entities, n, mask_folder)
        np.save(out / "testing" / "labels" / f"{name}.npy", labels)
        videos[name] = {"num_frames": n, "anomalous_frames": int(labels.sum()), "segments": segments}
    manifest = {"generator_version": GENERATOR_VERSION, "seed": seed, "params": p.to_json(), "test_videos": videos}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _existing_matches(root: Path, seed: int, p: SyntheticParams) -> bool:
    """True if ``root`` holds this exact dataset; raises DataError if it holds anything else."""
    if not any(root.iterdir()):
        return False
    fix = "delete the folder or choose another root"
    manifest = root / MANIFEST
    try:
        recorded = json.loads(manifest.read_text())
        if not isinstance(recorded.get("params"), dict):
            raise ValueError("no params")
    except (OSError, ValueError, AttributeError) as err:
        raise DataError(f"{root}: exists and is not a synthetic dataset (no readable {MANIFEST}); {fix}") from err
    wanted = {"generator_version": GENERATOR_VERSION, "seed": seed, **p.to_json()}
    got = {"generator_version": recorded.get("generator_version"), "seed": recorded.get("seed"), **recorded["params"]}
    if got != wanted:
        diff = ", ".join(f"{k}={got.get(k)!r} (asked {v!r})" for k, v in wanted.items() if got.get(k) != v)
        raise DataError(f"{root}: holds a synthetic dataset made with other parameters: {diff}; {fix}")
    return True


def generate(
    root: Path | str,
    seed: int = 0,
    *,
    num_train: int = SyntheticParams.num_train,
    num_test: int = SyntheticParams.num_test,
    frames_per_video: int = SyntheticParams.frames_per_video,
    size: tuple[int, int] = SyntheticParams.size,
    **options: float | bool,
) -> Path:
    """Render the synthetic dataset into ``root`` (see the module docstring for the layout) and return ``root``.

    ``options`` are the other fields of :class:`SyntheticParams` (``crowd``, ``walk_speed``, ``run_factor``, ...).
    Writes into a temporary sibling folder, then renames it, so an interrupted run leaves no half dataset. If
    ``root`` already holds the same dataset this returns at once; if it holds anything else, DataError (never
    overwrites). An existing empty folder is filled.
    """
    root = Path(root)
    params = SyntheticParams(
        num_train=num_train, num_test=num_test, frames_per_video=frames_per_video, size=tuple(size), **options
    )
    if root.exists():
        if not root.is_dir():
            raise DataError(f"{root}: exists and is not a folder; delete it or choose another root")
        if _existing_matches(root, seed, params):
            return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        _write_dataset(tmp, seed, params)
        if root.exists():
            root.rmdir()  # empty (checked above); rename cannot replace a folder on every platform
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if root.is_dir() and _existing_matches(root, seed, params):
            return root  # a concurrent call wrote the same dataset first
        raise
    return root


def main(argv: list[str] | None = None) -> None:
    """``python -m vad.data.synthetic <root> [--seed N] [--num-train N] [--num-test N] [--frames N] [--size H W]``."""
    d = SyntheticParams()
    parser = argparse.ArgumentParser(prog="python -m vad.data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="output folder (must not exist, or hold the same dataset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=d.num_train)
    parser.add_argument("--num-test", type=int, default=d.num_test)
    parser.add_argument("--frames", type=int, default=d.frames_per_video, help="frames per video")
    parser.add_argument("--size", type=int, nargs=2, default=list(d.size), metavar=("H", "W"))
    args = parser.parse_args(argv)
    try:
        root = generate(
            args.root,
            args.seed,
            num_train=args.num_train,
            num_test=args.num_test,
            frames_per_video=args.frames,
            size=(args.size[0], args.size[1]),
        )
    except DataError as err:
        raise SystemExit(f"error: {err}") from None
    manifest = json.loads((root / MANIFEST).read_text())
    videos = manifest["test_videos"].values()
    anomalous = sum(v["anomalous_frames"] for v in videos) / sum(v["num_frames"] for v in videos)
    print(f"{root}: {args.num_train} training and {args.num_test} test videos, {anomalous:.1%} anomalous test frames")


if __name__ == "__main__":
    main()
