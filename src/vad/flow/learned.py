"""A differentiable flow estimator that needs no download: a small network trained on the dataset's own normal
training frames, once per dataset and working size, then frozen (``flow=learned``).

FFP's flow term needs a differentiable estimator. FlowNet2-SD's weights cannot be downloaded everywhere, and the
weight-free Lucas-Kanade (``flow=lk``) gives sub-pixel noise on small grey frames. This estimator learns the flow of
the very frames it will see:

- **targets**: OpenCV DIS flows of consecutive training frames, from the flow-target cache (:mod:`vad.data.flows`;
  ``targets.input_size`` lets DIS work at a larger size, e.g. a dataset's native one), distilled with an L1 loss;
- **self-supervision**: the photometric error of ``b`` warped by the predicted flow against ``a`` (Charbonnier) and a
  first-order smoothness term; together they keep the flow right where DIS is wrong (textureless areas, borders);
- **data**: the training videos of the dataset config, without the held-out validation videos
  (``dataset.val_videos``), every consecutive pair; the last ``holdout`` share of each video's pairs is never
  trained on and measures the end-point error against DIS (``epe``; ``epe_zero`` is that of a zero flow, the
  floor to beat).

The weights are cached under ``paths.weights_dir/learned_flow/<dataset>-<H>x<W>-c<C>-<key12>.pt``. ``key12`` hashes
the training frames (their frame-cache keys, so a changed frame retrains), the target estimator, the network and the
training settings: another dataset, size or setting never reuses a file. The file is written to a temporary name and
renamed. A file that cannot be read or does not fit is reported in one line and trained again.

    flow = LearnedFlow(dataset=cfg.dataset)      # trains (progress bar, a few minutes on 2 cores) or loads
    uv = flow(a, b)                              # (N, 2, H, W) pixels, b(x + uv(x)) ≈ a(x); differentiable
    flow.report                                  # {"epe": ..., "epe_zero": ..., "pairs": ..., "seconds": ...}
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from vad.data.batches import collate_clips, frames_to_float
from vad.data.datamodule import VideoDataModule
from vad.errors import ConfigError, DataError
from vad.flow.base import FlowEstimator, to_grey, warp
from vad.flow.dis import DISFlow

log = logging.getLogger(__name__)

#: bump when the training procedure or the file content changes meaning: every cached net is retrained
FORMAT_VERSION = 1


def _plain(node: Mapping[str, Any]) -> dict[str, Any]:
    """A config node (Hydra hands it over unconverted: ``_recursive_: false``) as a plain resolved dict."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.LeakyReLU(0.1, inplace=True),
    )


class FlowUNet(nn.Module):
    """Two grey frames -> flow at full resolution: an encoder of ``levels`` stride-2 stages over [a, b, b - a], a
    decoder with skips; the last layer starts at zero (the initial flow is zero everywhere)."""

    def __init__(self, features: int = 16, levels: int = 3) -> None:
        super().__init__()
        widths = [features * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList([_block(3, widths[0])])
        self.down.extend(_block(widths[i], widths[i + 1], stride=2) for i in range(levels))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(levels)))
        self.head = nn.Conv2d(widths[0], 2, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.multiple = 2**levels

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        height, width = a.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        x = torch.cat((a, b, b - a), dim=1)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        skips.pop()
        for stage in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat((x, skip), dim=1))
        return self.head(x)[..., :height, :width]


def charbonnier(x: Tensor, eps: float = 1e-3) -> Tensor:
    return torch.sqrt(x * x + eps * eps).mean()


def smoothness(flow: Tensor) -> Tensor:
    return (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() + (flow[..., :, 1:] - flow[..., :, :-1]).abs().mean()


def end_point_error(flow: Tensor, target: Tensor) -> Tensor:
    """Mean Euclidean distance between two (N, 2, H, W) flows, per sample: (N,)."""
    return (flow - target).pow(2).sum(dim=1).sqrt().flatten(1).mean(dim=1)


class LearnedFlow(FlowEstimator):
    """A small flow U-Net trained on the dataset's normal training frames (see the module docstring).

    Args:
        dataset: the dataset config (``${dataset}``: name, root, image_size, channels, ...) whose training videos
            it learns from, at their working size.
        weights_dir: where trained nets are cached (``paths.weights_dir``).
        targets: the DIS settings of the distillation targets (``preset``, ``input_size``).
        features, levels: the net's width and depth.
        steps, batch_size, lr: the training schedule (Adam, cosine decay to 0).
        crop: side of the random square crop each batch is trained on (one place per batch; the net is fully
            convolutional, so it runs on whole frames afterwards): the training cost does not grow with the working
            size. None: whole frames.
        distill, photometric, smooth: loss weights of L1 to DIS, Charbonnier photometric error, smoothness.
        holdout: share of each video's last pairs kept out of training to measure the end-point error.
        seed: initialisation and batch order.
        input_size: see :class:`FlowEstimator` (the net is trained at the dataset's working size).
        progress: show a progress bar while training.
    """

    differentiable = True

    def __init__(
        self,
        dataset: Mapping[str, Any],
        weights_dir: str | os.PathLike[str],
        targets: Mapping[str, Any] | None = None,
        features: int = 16,
        levels: int = 3,
        steps: int = 1500,
        batch_size: int = 16,
        crop: int | None = 48,
        lr: float = 1e-3,
        distill: float = 1.0,
        photometric: float = 1.0,
        smooth: float = 0.05,
        holdout: float = 0.1,
        seed: int = 0,
        input_size: Sequence[int] | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(input_size)
        if steps < 1 or batch_size < 1 or lr <= 0 or features < 1 or levels < 1:
            raise ConfigError(
                f"flow: steps={steps}, batch_size={batch_size}, lr={lr}, features={features}, levels={levels}: "
                "all must be positive"
            )
        if not 0.0 < holdout < 1.0:
            raise ConfigError(f"flow.holdout={holdout}: must be a share in (0, 1) of each video's frame pairs")
        self.features, self.levels = int(features), int(levels)
        self.steps, self.batch_size, self.lr = int(steps), int(batch_size), float(lr)
        if crop is not None and int(crop) < 8:
            raise ConfigError(f"flow.crop={crop}: must be null (whole frames) or at least 8 pixels")
        self.crop = None if crop is None else int(crop)
        self.distill, self.photometric, self.smooth = float(distill), float(photometric), float(smooth)
        self.holdout, self.seed = float(holdout), int(seed)
        with torch.random.fork_rng(devices=[]):  # the method's own initialisation stays what it would be without
            torch.manual_seed(self.seed)
            self.net = FlowUNet(self.features, self.levels)
        self.report: dict[str, Any] = {}
        self._fit_or_load(_plain(dataset), Path(weights_dir), _plain(targets or {}), progress)
        self.freeze()

    def compute(self, a: Tensor, b: Tensor) -> Tensor:
        return self.net(to_grey(a), to_grey(b))

    # -- training ----------------------------------------------------------------------------------------------------

    def _settings(self) -> str:
        return (
            f"learned-flow v{FORMAT_VERSION} features={self.features} levels={self.levels} steps={self.steps} "
            f"batch={self.batch_size} crop={self.crop} lr={self.lr} distill={self.distill} "
            f"photometric={self.photometric} smooth={self.smooth} holdout={self.holdout} seed={self.seed}"
        )

    def _fit_or_load(self, dataset: dict[str, Any], weights_dir: Path, targets: dict[str, Any], progress: bool) -> None:
        pairs = flow_pairs(dataset, targets, self.holdout)
        key = hashlib.sha1("\n".join([self._settings(), *pairs.identity]).encode()).hexdigest()[:12]
        height, width = pairs.size
        path = weights_dir / "learned_flow" / f"{pairs.name}-{height}x{width}-c{pairs.channels}-{key}.pt"
        if path.is_file():
            try:
                content = torch.load(path, map_location="cpu", weights_only=True)
                self.net.load_state_dict(content["state_dict"])
                self.report = dict(content["report"])
                self.weights_path = str(path)
                return
            except Exception as error:  # a truncated or foreign file: say so once, then train again
                log.warning("%s: unreadable learned-flow weights (%s); training them again", path, error)
        self.report = self._train(pairs, progress)
        self.report.update(dataset=pairs.name, size=[height, width], targets=pairs.identity[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            torch.save({"state_dict": self.net.state_dict(), "report": self.report}, tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self.weights_path = str(path)
        log.info("learned flow: %s (held-out EPE %.4f px vs zero flow %.4f px)", path, self.report["epe"],
                 self.report["epe_zero"])  # fmt: skip

    def _cropped(self, tensors: tuple[Tensor, ...], generator: torch.Generator) -> tuple[Tensor, ...]:
        height, width = tensors[0].shape[-2:]
        if self.crop is None or (self.crop >= height and self.crop >= width):
            return tensors
        h, w = min(self.crop, height), min(self.crop, width)
        top = int(torch.randint(height - h + 1, (1,), generator=generator))
        left = int(torch.randint(width - w + 1, (1,), generator=generator))
        return tuple(t[..., top : top + h, left : left + w] for t in tensors)

    def _train(self, pairs: FlowPairs, progress: bool) -> dict:
        generator = torch.Generator().manual_seed(self.seed)
        self.net.train()
        optimiser = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, self.steps)
        start = time.perf_counter()
        order: list[int] = []
        with tqdm(total=self.steps, desc="learning the flow (flow=learned)", disable=not progress, unit="it",
                  dynamic_ncols=True) as bar:  # fmt: skip
            for _ in range(self.steps):
                if len(order) < self.batch_size:
                    shuffled = torch.randperm(len(pairs.train), generator=generator).tolist()
                    order.extend(pairs.train[i] for i in shuffled)
                batch = pairs.batch(order[: self.batch_size])
                del order[: self.batch_size]
                a, b = to_grey(batch["frames"][:, 0]), to_grey(batch["frames"][:, 1])
                target = batch["flows"][:, 0]
                a, b, target = self._cropped((a, b, target), generator)
                flow = self.net(a, b)
                loss = self.distill * (flow - target).abs().mean()
                if self.photometric:
                    loss = loss + self.photometric * charbonnier(warp(b, flow) - a)
                if self.smooth:
                    loss = loss + self.smooth * smoothness(flow)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        self.net.eval()
        report = held_out_errors(pairs, self.net)
        report.update(pairs=len(pairs.train), held_out_pairs=len(pairs.held), steps=self.steps,
                      seconds=round(time.perf_counter() - start, 1))  # fmt: skip
        return report


@dataclass
class FlowPairs:
    """The consecutive frame pairs of a dataset's training videos (held-out validation videos excluded) with their
    DIS targets: ``clips`` a ClipDataset of 2-frame clips carrying ``flows``; ``train`` / ``held`` its indices (the
    last ``holdout`` share of each video's pairs held out); ``identity`` what the pairs are (the target estimator's
    identity, then the frame cache entries)."""

    clips: Any
    train: list[int]
    held: list[int]
    identity: list[str]
    name: str
    size: tuple[int, int]
    channels: int

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """The pairs ``indices`` collated, their frames converted to float32 in [-1, 1] (the net trains on the CPU)."""
        batch = collate_clips(self.clips.__getitems__(list(indices)))
        batch["frames"] = frames_to_float(batch["frames"])
        return batch


def flow_pairs(dataset: Mapping[str, Any], targets: Mapping[str, Any], holdout: float) -> FlowPairs:
    """:class:`FlowPairs` of the dataset config ``dataset`` (frames and DIS targets cached on first use)."""
    settings = {k: v for k, v in dataset.items() if k != "_target_"}
    # every consecutive pair once, no pseudo-anomaly, flows from DIS; the held-out validation videos stay out
    options = {**settings, "clip_len": 2, "frame_stride": 1, "pseudo": None, "val_pseudo": None, "num_workers": 0,
               "persistent_workers": False, "eval_batch_size": 64, "footage_as_test": False}  # fmt: skip
    try:
        data = VideoDataModule(**options)
    except TypeError as error:
        raise ConfigError(f"flow=learned: the dataset config does not describe a VideoDataModule ({error})") from None
    target = DISFlow(**targets)
    data.request({"flows": target})
    data.prepare_data()
    clips = data.training_frames_dataloader().dataset
    train, held = [], []
    first = 0
    for count in clips.clips_per_video.tolist():
        kept = max(1, math.ceil(count * holdout)) if count > 1 else 0
        train.extend(range(first, first + count - kept))
        held.extend(range(first + count - kept, first + count))
        first += count
    if not train:
        raise DataError(f"{data.root}: no training frame pairs to learn the flow from")
    frames = sorted(data.cache.path(v, f"{data.name}/training").name for v in data.train_videos)
    return FlowPairs(clips, train, held, [target.identity(), *frames], data.name, data.image_size, data.channels)


@torch.no_grad()
def held_out_errors(pairs: FlowPairs, flow: Callable[[Tensor, Tensor], Tensor] | None) -> dict[str, float]:
    """Errors of ``flow(a, b)`` (grey (N, 1, H, W) frames in [-1, 1]) on the held-out pairs: ``epe`` (mean end-point
    error against DIS, px), ``photometric`` (mean |b warped by the flow - a|), and the same for a zero flow
    (``epe_zero``, ``photometric_zero``) and for the DIS targets themselves (``photometric_dis``)."""
    sums = dict.fromkeys(("epe", "epe_zero", "photometric", "photometric_zero", "photometric_dis"), 0.0)
    for first in range(0, len(pairs.held), 64):
        batch = pairs.batch(pairs.held[first : first + 64])
        a, b = to_grey(batch["frames"][:, 0]), to_grey(batch["frames"][:, 1])
        target = batch["flows"][:, 0]
        zero = torch.zeros_like(target)
        estimate = zero if flow is None else flow(a, b)
        sums["epe"] += end_point_error(estimate, target).sum().item()
        sums["epe_zero"] += end_point_error(zero, target).sum().item()
        for name, uv in (("photometric", estimate), ("photometric_zero", zero), ("photometric_dis", target)):
            sums[name] += (warp(b, uv) - a).abs().flatten(1).mean(dim=1).sum().item()
    count = max(len(pairs.held), 1)
    return {k: v / count for k, v in sums.items()}
