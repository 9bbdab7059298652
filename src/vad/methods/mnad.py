"""MNAD — memory-guided normality (Park, Noh, Ham, CVPR 2020), prediction and reconstruction variants.

An encoder turns the input (t frames for prediction, the frame itself for reconstruction) into a map of queries;
a memory of M prototype items is read at every position and the decoder maps concat[query, read] to the target
frame. Training minimises intensity (MSE) + compactness + separateness with one Adam optimiser and cosine annealing,
and updates the memory after each step with that step's queries. The per-frame signals are the PSNR of the output and
the feature distance D (mean squared distance of the frame's queries to their nearest items); the anomaly score
a (1 - g(PSNR)) + (1 - a) g(D), g the per-video min-max, is the fusion ``{psnr: -a, feature_distance: 1 - a}``.

    python -m vad.train experiment=mnad_ped2 trainer=gpu
    python -m vad.train model=mnad_recon dataset=avenue

Test time (``test_memory``): the test starts from the trained memory and processes the frames in order, one at a
time, exactly like the reference's batch-1 loop whatever ``dataset.eval_batch_size`` is (the encoder still runs on
the whole batch; only the memory read and the decoder go frame by frame). After a frame is scored, the memory is
updated with its queries when its weighted regular score (``vad.methods.losses.weighted_regular_score``) is below
``gamma``.
``between_videos: carry`` keeps one memory across the test videos in test order, as the reference does; ``reset``
restarts every test video from the trained memory, so a video's scores do not depend on the videos before it. The
test memory is a copy: the trained memory (and the checkpoint) never change at test time.

Under DDP, DDP broadcasts rank 0's buffers at every training step, so the memory follows rank 0's queries; the
reference trains on one GPU.

Defects of the reference code not reproduced: the memory is a registered buffer (saved, moved with the model) instead
of a tensor kept beside it; the compactness and separateness losses carry their own names in both variants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from lightning.pytorch.utilities import rank_zero_warn

from vad.errors import ConfigError
from vad.methods import losses, panels
from vad.methods.base import VADModule
from vad.nets import Memory, MemoryRead, MNADDecoder, MNADEncoder

ANNEALING = ("step", "epoch", "none")
BETWEEN_VIDEOS = ("carry", "reset")


class MNAD(VADModule):
    """MNAD encoder -> memory -> decoder with a single Adam optimiser (manual optimisation).

    Args:
        channels: image channels (1 or 3).
        clip_len: t + 1 for prediction (t input frames, the last frame is the target); 1 for reconstruction.
        task: ``prediction`` (decoder with U-Net skips) or ``reconstruction`` (decoder without skips).
        net: keyword arguments of the encoder / decoder (``features``: width w; the queries have 8w channels).
        memory: keyword arguments of :class:`vad.nets.Memory` except ``features`` (``num_items``, ``update_max``,
            ``read_grad``).
        loss: weights of ``intensity`` (MSE of the output), ``compactness``, ``separateness``.
        optim: ``lr``, ``betas``, ``anneal``: cosine annealing to 0 ``step`` = every iteration over the trainer's
            whole run (max_steps, or max_epochs x batches), ``epoch`` = once per epoch over ``trainer.max_epochs``
            (the reference), or ``none``.
        test_memory: ``gamma`` (update threshold on the weighted regular score; None: no test-time update) and
            ``between_videos`` (``carry`` or ``reset``), see the module docstring.
        score: fusion weights of ``psnr`` and ``feature_distance``.
        grad_clip: max gradient norm per optimiser step.
        common: the other arguments every method takes, see :class:`~vad.methods.base.VADModule`.
    """

    signals = ("psnr", "feature_distance")
    loss_terms = ("intensity", "compactness", "separateness")
    default_loss: ClassVar[Mapping[str, float]] = {"intensity": 1.0, "compactness": 0.1, "separateness": 0.1}
    default_score: ClassVar[Mapping[str, float]] = {"psnr": -0.6, "feature_distance": 0.4}

    def __init__(
        self,
        *,
        net: Mapping[str, Any] | None = None,
        memory: Mapping[str, Any] | None = None,
        optim: Mapping[str, Any] | None = None,
        test_memory: Mapping[str, Any] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.optim = {"lr": 2e-4, "betas": (0.9, 0.999), "anneal": "step"} | dict(optim or {})
        _choice("model.optim.anneal", self.optim["anneal"], ANNEALING)
        self.test_memory = {"gamma": 0.01, "between_videos": "carry"} | dict(test_memory or {})
        _choice("model.test_memory.between_videos", self.test_memory["between_videos"], BETWEEN_VIDEOS)
        gamma = self.test_memory["gamma"]
        if gamma is not None and not (isinstance(gamma, int | float) and math.isfinite(gamma) and gamma >= 0):
            raise ConfigError(
                f"model.test_memory.gamma must be a number >= 0 or null (no test-time update), got {gamma}"
            )
        self.save_hyperparameters()

        in_channels = self.channels * (self.clip_len - 1 if self.task == "prediction" else 1)
        self.encoder = MNADEncoder(in_channels, **(net or {}))
        self.memory = Memory(features=self.encoder.out_channels, **({"num_items": 10} | dict(memory or {})))
        self.decoder = MNADDecoder(self.channels, self.encoder.features, skips=self.task == "prediction")
        # The memory the test reads and updates: a copy of the trained one, made at the start of each test.
        self._test_items: torch.Tensor | None = None

    # ------------------------------------------------------------------ forward
    def decode(self, out: MemoryRead, skips: list[torch.Tensor]) -> torch.Tensor:
        """The decoder on concat[query, read]; the skips are used by the prediction decoder only."""
        return self.decoder(out.decoder_input(), skips if self.decoder.uses_skips else None)

    def forward(self, inputs: torch.Tensor, items: torch.Tensor | None = None) -> tuple[torch.Tensor, MemoryRead]:
        """Encoder input (N, C_in, H, W) -> output frame (N, C, H, W) in [-1, 1] and the memory read.

        ``items``: the memory to read (M, C); default the trained memory.
        """
        features, skips = self.encoder(inputs)
        out = self.memory(features, items)
        return self.decode(out, skips), out

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.optim["lr"], betas=tuple(self.optim["betas"]))
        anneal = self.optim["anneal"]
        if anneal == "none":
            return optimizer
        if anneal == "epoch":
            length = self.trainer.max_epochs
            if length is None or length < 1:
                raise ConfigError(
                    "model.optim.anneal=epoch anneals over trainer.max_epochs, which is not set: set "
                    "trainer.max_epochs (60 in the paper) or use model.optim.anneal=step"
                )
        else:
            length = self.trainer.estimated_stepping_batches
            if not math.isfinite(length):
                raise ConfigError("model.optim.anneal=step needs a finite run: set trainer.max_steps or max_epochs")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(length)))
        return [optimizer], [{"scheduler": scheduler, "interval": anneal}]

    def loss_terms_of(self, output: torch.Tensor, target: torch.Tensor, out: MemoryRead) -> dict[str, torch.Tensor]:
        """Unweighted loss terms; a term whose weight is 0 is not computed."""
        terms: dict[str, torch.Tensor] = {}
        if self.weight("intensity"):
            terms["intensity"] = losses.intensity_loss(output, target)
        if self.weight("compactness"):
            terms["compactness"] = losses.compactness_loss(out.queries, out.positive)
        if self.weight("separateness"):
            terms["separateness"] = losses.separateness_loss(out.queries, out.positive, out.negative)
        return terms

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        # Pseudo-anomalies with the negative objective get only the bounded negative term and never update the memory.
        usual, negative = self.split_pseudo(batch)
        n = batch["frames"].shape[0]
        terms: dict[str, torch.Tensor] = {}
        out = None
        if usual is not None:
            clip = self.training_clip(usual)
            output, out = self(clip.stacked)
            terms = self.loss_terms_of(output, clip.target, out)
        logged: dict[str, torch.Tensor] = {}
        loss = self.objective_step(self.optimizers(), terms, negative, lambda inputs: self(inputs.stacked)[0], logged)
        self.log_step(logged, loss, batch_size=n)
        if out is not None:
            # The losses and the read used the memory before this step's update, as in the paper.
            self.memory.update_(out)
            used = torch.bincount(out.nearest, minlength=self.memory.num_items).gt(0).sum()
            self.log("train/memory_items_used", used.float(), batch_size=n, on_step=True, on_epoch=False)

    # ------------------------------------------------------------------ signals
    @staticmethod
    def signals_of(output: torch.Tensor, target: torch.Tensor, out: MemoryRead) -> dict[str, torch.Tensor]:
        return {"psnr": losses.psnr(output.float(), target.float()), "feature_distance": out.nearest_distance()}

    def frame_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Signals with the trained memory, no update (validation)."""
        clip = self.split_clip(batch["frames"])
        output, out = self(clip.stacked)
        return self.signals_of(output, clip.target, out)

    def test_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Signals of one video's frames in order, with the gated memory update after each frame."""
        clip = self.split_clip(batch["frames"])
        inputs, target = clip.stacked, clip.target
        items = self._current_items()
        gamma = self.test_memory["gamma"]
        if gamma is None:
            output, out = self(inputs, items)
            return self.signals_of(output, target, out)
        features, skips = self.encoder(inputs)
        columns: dict[str, list[torch.Tensor]] = {name: [] for name in self.signals}
        for i in range(inputs.shape[0]):
            out = self.memory(features[i : i + 1], items)
            output = self.decode(out, [s[i : i + 1] for s in skips])
            for name, value in self.signals_of(output, target[i : i + 1], out).items():
                columns[name].append(value)
            # torch.where instead of a Python branch keeps the gate on the device (no sync per frame).
            normal = losses.weighted_regular_score(output, target[i : i + 1]) < gamma
            items = torch.where(normal[0], self.memory.updated(out), items)
        self._test_items = items
        return {name: torch.cat(values) for name, values in columns.items()}

    def predict(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The decoder's output with the current memory (the test memory during a test), no update."""
        output, _ = self(self.split_clip(batch["frames"]).stacked, self._current_items())
        return output

    def sample_panels(self, batch: Mapping[str, Any]) -> dict[str, panels.Panel]:
        """Last input, output, target, error map and the memory distance map: per query position, the mean over
        the channels of (q - nearest item)^2 (the feature distance before its mean over the positions)."""
        shown = super().sample_panels(batch)
        _, out = self(self.split_clip(batch["frames"]).stacked, self._current_items())
        n, _, *spatial = out.query_map.shape
        distance = (out.queries - out.positive).square().mean(dim=1).reshape(n, *spatial)
        shown["memory distance"] = panels.heatmap(distance)
        return shown

    def _current_items(self) -> torch.Tensor:
        return self.memory.items if self._test_items is None else self._test_items

    # ------------------------------------------------------------------ test-time memory
    def begin_test_state(self) -> None:
        self._test_items = self.memory.items.detach().clone()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        if self.trainer.world_size > 1 and self.test_memory["gamma"] is not None:
            rank_zero_warn(
                "MNAD test-time memory updates follow the frame order of one process; under DDP each rank updates its "
                "own copy over its share of the frames. Test on one device for the reference protocol."
            )

    def on_test_video_start(self, video_id: int) -> None:
        if self.test_memory["between_videos"] == "reset":
            self._test_items = self.memory.items.detach().clone()

    def on_test_epoch_end(self) -> None:
        try:
            super().on_test_epoch_end()
        finally:
            self._test_items = None


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {list(choices)}")
    return value
