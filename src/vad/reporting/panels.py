"""Sample panels, the drawing: a method's panels (:mod:`vad.methods.panels`) rendered into the rows of a grid.

A method's ``sample_panels(batch)`` returns named panels; the sample-grid callback, the run report and the trackers
draw whatever it returns, one row per sample, each row titled with its video and frame index:

    grid = render(model.sample_panels(batch), videos=batch["video"], frames=batch["index"], count=4)
    plots.plot_sample_grid(path, grid.rows, row_titles=grid.titles, heatmaps=grid.heatmaps)

Kinds: ``image`` (N, 1 or 3, H, W) in [-1, 1]; ``flow`` (N, 2, H, W) in pixels, drawn in the standard optical-flow
colour wheel (Baker et al., "A Database and Evaluation Methodology for Optical Flow", IJCV 2011: hue = direction,
saturation = magnitude relative to the largest in the panel); ``heatmap`` (N, H, W) or (N, 1, H, W), values >= 0,
drawn with a colour map scaled to its own maximum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vad.methods.panels import Panel

# Hue segments of the colour wheel, in the order red -> yellow -> green -> cyan -> blue -> magenta -> red, with the
# number of steps in each: finer where the eye tells hues apart better.
_WHEEL_SEGMENTS = ((15, (1, 0, 0), (1, 1, 0)), (6, (1, 1, 0), (0, 1, 0)), (4, (0, 1, 0), (0, 1, 1)),
                   (11, (0, 1, 1), (0, 0, 1)), (13, (0, 0, 1), (1, 0, 1)), (6, (1, 0, 1), (1, 0, 0)))  # fmt: skip


def colour_wheel() -> np.ndarray:
    """(55, 3) RGB colours in [0, 1] around the flow colour wheel: red, yellow, green, cyan, blue, magenta."""
    colours = []
    for steps, start, end in _WHEEL_SEGMENTS:
        for k in range(steps):
            f = k / steps
            colours.append([(1 - f) * a + f * b for a, b in zip(start, end, strict=True)])
    return np.asarray(colours, dtype=np.float64)


def flow_to_rgb(uv: np.ndarray, max_radius: float | None = None) -> np.ndarray:
    """(2, H, W) flow in pixels -> (H, W, 3) RGB in [0, 1] in the flow colour wheel.

    The direction of (u, v) picks the hue (interpolated between the wheel's colours), the magnitude relative to
    ``max_radius`` (default: the largest magnitude in the flow) the saturation: zero flow is white, a flow of
    ``max_radius`` the full colour; longer ones (only with an explicit ``max_radius``) are darkened to 75%.
    Directions (image axes, y down): right red, down yellow, left cyan, up blue-violet. Non-finite vectors are drawn
    black.
    """
    uv = np.asarray(uv, dtype=np.float64)
    if uv.ndim != 3 or uv.shape[0] != 2:
        raise ValueError(f"flow_to_rgb expects a (2, H, W) flow, got {uv.shape}")
    u, v = uv
    bad = ~(np.isfinite(u) & np.isfinite(v))
    u, v = np.where(bad, 0.0, u), np.where(bad, 0.0, v)
    radius = np.hypot(u, v)
    scale = float(radius.max()) if max_radius is None else float(max_radius)
    radius = radius / scale if scale > 0 else radius
    wheel = colour_wheel()
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # (-1, 1]; -1/1 = flow pointing right
    position = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(position).astype(int) % n
    k1 = (k0 + 1) % n
    f = (position - np.floor(position))[..., None]
    colour = (1 - f) * wheel[k0] + f * wheel[k1]
    r = radius[..., None]
    rgb = np.where(r <= 1, 1 - r * (1 - colour), colour * 0.75)
    rgb[bad] = 0.0
    return np.clip(rgb, 0.0, 1.0)


@dataclass
class SampleGrid:
    """Rendered rows of a sample grid: ``rows`` name -> (H, W) or (H, W, 3) array (images and flows in [-1, 1],
    heat maps >= 0), ``titles`` one per row, ``heatmaps`` the names of the heat-map columns."""

    rows: list[dict[str, np.ndarray]] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    heatmaps: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rows)


def _plane(kind: str, data: np.ndarray) -> np.ndarray:
    """One sample of a panel -> what the grid draws: (H, W) or (H, W, 3)."""
    if kind == "flow":
        return flow_to_rgb(data) * 2 - 1  # drawn like a frame in [-1, 1]
    if kind == "heatmap":
        return data[0] if data.ndim == 3 else data
    return data[0] if data.shape[0] == 1 else np.transpose(data, (1, 2, 0))


def render(
    panels: Mapping[str, Panel], videos: Sequence[str], frames: Sequence[int] | torch.Tensor, count: int = 4
) -> SampleGrid:
    """The first ``count`` samples of ``panels`` as grid rows, titled ``<video> · frame <index>``.

    ``videos`` / ``frames``: the batch's video names and target frame indices (``batch["video"]``,
    ``batch["index"]``). Every panel must hold at least as many samples as the rows drawn.
    """
    if not panels:
        return SampleGrid()
    panels = {name: panel.numpy() for name, panel in panels.items()}
    frames = frames.tolist() if isinstance(frames, torch.Tensor) else list(frames)
    n = min(count, len(videos), *(len(p) for p in panels.values()))
    rows = [{name: _plane(p.kind, p.data[i]) for name, p in panels.items()} for i in range(n)]
    titles = [f"{videos[i]} · frame {int(frames[i])}" for i in range(n)]
    heat = tuple(name for name, p in panels.items() if p.kind == "heatmap")
    return SampleGrid(rows, titles, heat)
