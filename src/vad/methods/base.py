"""The shared base of every method: declarations checked once, frozen helper nets, the G/D step, the test loop.

A method subclasses :class:`VADModule` (or :class:`FramePredictor`, a generator predicting the target frame with an
optional LSGAN PatchGAN discriminator) and declares what it is:

- ``signals``: the per-frame signals it emits (``psnr``, ``feature_distance``, ...);
- ``loss_terms``: the terms ``model.loss`` may weight; an unknown term is refused with the valid ones listed;
- ``frozen_nets``: named auxiliary nets it takes (a flow estimator for a loss, a feature extractor, ...), each built
  by ``vad.app.build`` from a config group and held here outside the module tree (:class:`FrozenNet`);
- ``task``: ``prediction`` (t = clip_len - 1 input frames, the last frame is the target) or ``reconstruction``
  (clip_len 1); :meth:`VADModule.split_clip` cuts every clip the same way for every method.

and implements

- ``training_step`` (a FramePredictor implements ``forward_clip`` and ``generator_terms`` instead);
- ``predict(batch) -> (N, C, H, W)``: its output for the target frames; the default signal is the PSNR of it
  (``frame_signals``), the default sample panels show it (``sample_panels``, see ``vad.reporting.panels``) and the default
  per-pixel error map is its squared error against ``output_target`` (``error_maps``, for the pixel-level metrics of
  ``vad.evaluation.pixel.evaluation``);
- when its state evolves during the test (MNAD's memory), ``on_test_video_start(video_id)`` and
  ``test_signals(batch)``: the test loop hands over each batch one video at a time, in frame order.

Everything else lives here once: the conversion of the loaders' uint8 frames to float32 in [-1, 1] on the module's
device (:meth:`VADModule.prepare_batch`, in Lightning's ``on_after_batch_transfer`` and in every loop that feeds
batches outside the Trainer, so every step sees float frames), the per-iteration learning-rate schedule, loss logging,
validation on held-out normal videos with injected pseudo-anomalies (``val/auc_micro``, ``val/auc_macro`` under the
test's protocol), the training pseudo-anomaly objectives (:meth:`VADModule.training_clip`,
:meth:`VADModule.split_pseudo`), the test loop that collects every test frame's signals exactly once (also under DDP)
and, when the test videos have pixel masks, their error maps for the pixel-level metrics (``vad.evaluation.pixel.evaluation``), and the
scoring protocol (``vad.evaluation.protocol``) that turns them into metrics. No method needs ``if method == ...`` branches here.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import lightning as L
import numpy as np
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import nn

from vad.data.clips import FRAME_KEYS, frames_to_float
from vad.errors import ConfigError, VadError
from vad.evaluation import protocol as scoring
from vad.evaluation.calibration import CHECKPOINT_KEY as CALIBRATION_KEY
from vad.evaluation.calibration import Calibration
from vad.methods import losses
from vad.nets.patch_discriminator import PatchDiscriminator
from vad.reporting import panels

if TYPE_CHECKING:
    from vad.evaluation.pixel.evaluation import PixelEvaluation

# VADModule converts its batches in on_after_batch_transfer (prepare_batch), which Lightning tells about on every run
# given a datamodule ("It will use the implementation from `LightningModule` instance"): that is the intent.
warnings.filterwarnings(
    "ignore", message=r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a"
)

#: checkpoint key holding {"config": resolved run config, "choices": config-group choices}
CONFIG_KEY = "vad_config"
#: label source recorded with validation results
VALIDATION_LABELS = "pseudo-anomalies injected into held-out normal training videos (no test label)"


def multistep_schedulers(
    named: Sequence[tuple[str, torch.optim.Optimizer]], milestones: Sequence[int], gamma: float
) -> list[dict[str, Any]]:
    """Per-iteration MultiStepLR schedulers (lr x ``gamma`` after each milestone), logged as ``lr-<name>``."""
    return [
        {
            "scheduler": torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma),
            "interval": "step",
            "name": f"lr-{name}",
        }
        for name, opt in named
    ]


class NonFiniteLossError(VadError, RuntimeError):
    """A loss became NaN or infinite; training stops (after a checkpoint is saved) with this message."""


#: the Lightning releases whose manual-optimisation step counting :func:`_uncounted` is tested on
#: (tests/test_base.py); pyproject.toml pins this range
LIGHTNING_TESTED = ">=2.5,<2.7"


@contextmanager
def _uncounted(optimizer: LightningOptimizer) -> Iterator[None]:
    """Step an optimiser without advancing ``trainer.global_step``.

    In manual optimisation Lightning counts every ``optimizer.step()`` as a global step, so a G+D method would advance
    two steps per batch and every schedule expressed in iterations (``max_steps``, checkpoint intervals, logging) would
    run at half length. Only the method's primary optimiser counts; the precision / strategy handling of the step
    itself is unchanged.

    Lightning offers no public switch for this: the step counter is advanced by the ``_on_before_step`` /
    ``_on_after_step`` hooks its manual-optimisation loop installs on each LightningOptimizer, which are swapped for
    no-ops here. A release without them fails here, loudly, instead of silently counting D steps; the behaviour is
    tested (``tests/test_base.py``) for the releases of :data:`LIGHTNING_TESTED`.
    """
    if not (hasattr(optimizer, "_on_before_step") and hasattr(optimizer, "_on_after_step")):
        raise RuntimeError(
            f"lightning {L.__version__}: LightningOptimizer has no _on_before_step/_on_after_step hooks, which vad "
            f"uses to keep discriminator steps out of global_step; install lightning{LIGHTNING_TESTED}"
        )
    before, after = optimizer._on_before_step, optimizer._on_after_step
    optimizer._on_before_step = optimizer._on_after_step = lambda: None
    try:
        yield
    finally:
        optimizer._on_before_step, optimizer._on_after_step = before, after


def split_by_video(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The runs of consecutive items of one video in a collated batch (``video_id`` (B,)), in batch order.

    Every tensor or list entry is sliced along its first dimension; a batch of one video comes back whole.
    """
    ids = batch["video_id"]
    cuts = (torch.nonzero(ids[1:] != ids[:-1]).flatten() + 1).tolist()
    if not cuts:
        return [dict(batch)]
    bounds = [0, *cuts, len(ids)]
    return [{k: v[a:b] for k, v in batch.items()} for a, b in itertools.pairwise(bounds)]


TASKS = ("prediction", "reconstruction")


def subset_batch(batch: Mapping[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    """The items of ``batch`` where the (B,) boolean ``keep`` is True: tensors and lists of length B are indexed,
    anything else is kept as it is."""
    size = keep.shape[0]
    index = keep.nonzero().flatten().tolist()
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == size:
            out[key] = value[keep.to(value.device)]
        elif isinstance(value, list) and len(value) == size:
            out[key] = [value[i] for i in index]
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class FrozenNet:
    """An auxiliary frozen net a method takes, declared in its ``frozen_nets`` under the name it uses.

    Args:
        group: the config group (top-level config key) ``vad.app.build`` builds it from, e.g. ``flow``.
        what: what it is, for messages ("flow estimator").
        terms: the loss terms that use it: with a non-zero weight on one of them the net is required.
        gradient: those terms backpropagate through the net into the method's output, so a net that is not
            differentiable (``differentiable = False``, e.g. OpenCV's DIS flow) is refused: its term would train
            nothing.
        kind: the class the net must be an instance of.
        choices: the config choices that provide a suitable net, for messages ("flow=lk or flow=flownet2sd").
    """

    group: str
    what: str
    terms: tuple[str, ...] = ()
    gradient: bool = False
    kind: type = nn.Module
    choices: str = ""


class Clip(NamedTuple):
    """A clip cut for a method: ``inputs`` (N, t, C, H, W), ``last`` input frame and ``target`` (N, C, H, W), and
    ``flows`` (N, clip_len - 1, 2, H, W) the flow targets between consecutive frames when the batch carries them
    (:meth:`VADModule.clip_requests`), else None.

    For reconstruction (clip_len 1) ``inputs`` is the target itself as a one-frame sequence.
    """

    inputs: torch.Tensor
    last: torch.Tensor
    target: torch.Tensor
    flows: torch.Tensor | None = None

    @property
    def stacked(self) -> torch.Tensor:
        """The input frames stacked on channels: (N, t * C, H, W)."""
        return self.inputs.flatten(1, 2)


class VADModule(L.LightningModule):
    """Base LightningModule of the suite's methods (manual optimisation).

    Args:
        channels: image channels (1 grey, 3 RGB).
        clip_len: frames per item: the method's input frames plus the target frame (1 for reconstruction).
        loss: flat mapping term -> weight over ``loss_terms`` (default ``default_loss``); a 0 weight skips the term,
            every computed term is logged unweighted.
        score: signed fusion weights of the per-frame signals (see ``vad.evaluation.protocol.fuse``; default ``default_score``).
        frozen: the auxiliary frozen nets by name (see ``frozen_nets``), as ``vad.app.build`` hands them over. They are
            held outside the module tree: not saved in checkpoints, not seen by DDP, never optimised, and moved
            with the module by ``.to()``.
        task: ``prediction`` or ``reconstruction`` (default: the class's ``task``); decides the valid clip lengths.
        grad_clip: max gradient norm applied to every optimiser step, or None.
        channels_last: keep the nets' 4-D weights in channels-last memory format, so convolutions run NHWC (faster
            with oneDNN on CPU and with tensor cores on GPU). A method whose nets reshape feature maps with ``view``
            leaves it off.
    """

    #: names of the per-frame signals :meth:`frame_signals` returns
    signals: tuple[str, ...] = ()
    #: the loss terms ``model.loss`` may weight
    loss_terms: tuple[str, ...] = ()
    #: the loss weights and score weights used when none are given
    default_loss: ClassVar[Mapping[str, float]] = {}
    default_score: ClassVar[Mapping[str, float]] = {"psnr": -1.0}
    #: auxiliary frozen nets the method takes, by name
    frozen_nets: ClassVar[Mapping[str, FrozenNet]] = {}
    #: ``prediction`` (clip_len >= 2: t inputs + the target) or ``reconstruction`` (clip_len 1)
    task: str = "prediction"
    #: False for methods without trainable weights (e.g. the copy-last baseline): they are evaluated, not trained
    trainable: bool = True
    #: what :meth:`error_maps` measures, recorded with the pixel-level metrics
    error_map_description: ClassVar[str] = (
        "squared error of the output against its target frame per pixel, on the [0, 1] scale of the PSNR, mean over "
        "the channels"
    )
    #: per-frame quantities whose means over the normal training frames the method's signals need (AMC's score
    #: weights w = 1 / mean error); see :meth:`training_quantities` and :meth:`compute_training_means`
    training_mean_names: tuple[str, ...] = ()
    #: sigma in frames of the temporal Gaussian applied to each signal before the per-video normalisation in
    #: validation and test (``model.smoothing``, set by ``vad.app.build.build_model`` for every method; 0: none)
    smoothing: float = 0.0

    def __init__(
        self,
        *,
        channels: int,
        clip_len: int,
        loss: Mapping[str, float] | None = None,
        score: Mapping[str, float] | None = None,
        frozen: Mapping[str, nn.Module | None] | None = None,
        task: str | None = None,
        grad_clip: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.channels_last = channels_last
        if channels not in (1, 3):
            raise ConfigError(f"model.channels must be 1 or 3, got {channels}")
        self.task = self.task if task is None else task
        if self.task not in TASKS:
            raise ConfigError(f"model.task={self.task!r} is not one of {list(TASKS)}")
        self.channels = channels
        self.clip_len = self._check_clip_len(clip_len)
        self.loss_weights = self._check_loss(self.default_loss if loss is None else loss)
        self.score_weights = scoring.check_weights(self.default_score if score is None else score, self.signals)
        self._frozen = self._check_frozen(dict(frozen or {}))
        self.grad_clip = grad_clip
        self._test_records: list[dict[str, np.ndarray]] = []
        self._test_video: int | None = None
        self.test_result: scoring.ProtocolResult | None = None
        #: the last test scored as a stream (``vad.app.build.calibrated_metrics``; set by ``vad.app.build.test_and_report``)
        self.test_calibrated: dict[str, Any] | None = None
        #: set by ``vad.app.build.test_and_report`` for the test it runs: collects the error maps of the test frames
        self.pixel_evaluation: PixelEvaluation | None = None
        #: the signals' distribution on held-out normal frames (``vad.evaluation.calibration``), saved in checkpoints
        self.calibration: Calibration | None = None
        self._val_records: list[dict[str, np.ndarray]] = []
        #: the protocol result of the last validation epoch on the pseudo-anomaly validation set
        self.val_result: scoring.ProtocolResult | None = None
        #: the sample grid of the test's first frames, for the report
        self.test_samples: panels.SampleGrid | None = None
        self.run_config: dict[str, Any] | None = None
        if self.training_mean_names:
            # NaN until computed; a buffer, so saved in checkpoints and restored with the weights
            self.register_buffer("training_means", torch.full((len(self.training_mean_names),), math.nan))
        self._schedulers_at: int | None = None  # global_step the step-interval schedulers were last stepped for

    # ------------------------------------------------------------------ declarations, checked once
    def _check_clip_len(self, clip_len: int) -> int:
        if self.task == "reconstruction" and clip_len != 1:
            raise ConfigError(
                f"model.clip_len must be 1 for reconstruction (the frame is its own target), got {clip_len}"
            )
        if self.task == "prediction" and clip_len < 2:
            raise ConfigError(f"model.clip_len must be >= 2 for frame prediction (t inputs + 1 target), got {clip_len}")
        return clip_len

    def _check_loss(self, loss: Mapping[str, float]) -> dict[str, float]:
        name = type(self).__name__
        unknown = sorted(set(loss) - set(self.loss_terms))
        if unknown:
            raise ConfigError(f"model.loss has unknown term(s) {unknown}; {name}'s terms are {list(self.loss_terms)}")
        weights = {}
        for term, weight in loss.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise ConfigError(f"model.loss.{term}={weight!r} is not a finite number; give the term a weight")
            weights[term] = float(weight)
        return weights

    def _check_frozen(self, given: dict[str, nn.Module | None]) -> dict[str, nn.Module]:
        name = type(self).__name__
        unknown = sorted(set(given) - set(self.frozen_nets))
        if unknown:
            raise ConfigError(f"{name} takes no frozen net(s) {unknown}; it takes {list(self.frozen_nets) or 'none'}")
        held: dict[str, nn.Module] = {}
        for key, spec in self.frozen_nets.items():
            net = given.get(key)
            used = [(t, self.weight(t)) for t in spec.terms if self.weight(t) != 0]
            fix = f"choose {spec.choices}, or " if spec.choices else ""
            if net is None:
                if used:
                    term, weight = used[0]
                    raise ConfigError(
                        f"model.loss.{term}={weight} needs a {spec.what} (config group {spec.group}): "
                        f"{fix}set model.loss.{term}=0"
                    )
                continue
            if not isinstance(net, spec.kind):
                raise ConfigError(f"{spec.group}: builds a {type(net).__name__}, not a {spec.kind.__name__}")
            if spec.gradient and used and not getattr(net, "differentiable", True):
                term, weight = used[0]
                raise ConfigError(
                    f"model.loss.{term}={weight} backpropagates through the {spec.what}, but {type(net).__name__} "
                    f"({spec.group}) is not differentiable, so the term would give no gradient: {fix}set "
                    f"model.loss.{term}=0"
                )
            held[key] = net.eval().requires_grad_(False)
        return held

    def frozen_net(self, name: str) -> nn.Module | None:
        """The auxiliary frozen net ``name`` (one of ``frozen_nets``), or None when none was given."""
        if name not in self.frozen_nets:
            raise KeyError(f"{type(self).__name__} declares no frozen net {name!r}; it has {list(self.frozen_nets)}")
        return self._frozen.get(name)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> VADModule:
        # The frozen nets are not submodules; they follow every .to() / .half() / memory-format change here.
        super()._apply(fn, *args, **kwargs)
        for net in self._frozen.values():
            net._apply(fn, *args, **kwargs)
        return self

    # ------------------------------------------------------------------ batches: uint8 from the loaders -> float here
    def prepare_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """A batch as the steps take it: every tensor on the module's device, then the frame entries
        (:data:`vad.data.clips.FRAME_KEYS`: ``frames``, a pseudo-anomaly's ``target``) converted there from the
        loaders' uint8 to float32 in [-1, 1] (:func:`vad.data.clips.frames_to_float`; float ones pass unchanged).

        Lightning calls it after moving each batch (:meth:`on_after_batch_transfer`); whatever feeds batches to a
        method outside the Trainer (the training means, calibration, the experiments' loops) calls it on each.
        """
        device = self.device
        out: dict[str, Any] = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device)
                if key in FRAME_KEYS:
                    value = frames_to_float(value)
            out[key] = value
        return out

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not isinstance(batch, Mapping):
            return batch  # not a clip batch (a test's bare tensors): nothing to convert
        batch = self.prepare_batch(batch)
        if self._trainer is not None:
            # A true precision (bf16-true, 16-true, 64-true) converts the batch's floating-point tensors before the
            # transfer, when the frames were still uint8: they get the same conversion now.
            batch = self.trainer.precision_plugin.convert_input(batch)
        return batch

    def split_clip(self, frames: torch.Tensor, flows: torch.Tensor | None = None) -> Clip:
        """(N, T, C, H, W) clip in [-1, 1] -> :class:`Clip`: for prediction the first T - 1 frames are the inputs and
        the last one the target; for reconstruction the one frame is both. ``flows``: the batch's flow targets."""
        target = frames[:, -1]
        if self.task == "reconstruction":
            return Clip(frames[:, -1:], target, target, flows)
        return Clip(frames[:, :-1], frames[:, -2], target, flows)

    def output_target(self, clip: Clip) -> torch.Tensor:
        """The frame the method's output frame is compared with: the clip's target (a method that reconstructs its
        input frame while predicting something else, such as AMC, returns that frame)."""
        return clip.target

    def clip_of(self, batch: Mapping[str, Any]) -> Clip:
        """:meth:`split_clip` of a batch's frames, with its flow targets when it carries them."""
        return self.split_clip(batch["frames"], batch.get("flows"))

    def training_clip(self, batch: Mapping[str, Any]) -> Clip:
        """:meth:`split_clip` of a training batch, with the target a pseudo-anomaly plug-in sets (``batch["target"]``:
        the normal frame a pseudo-anomalous clip is trained towards, see :mod:`vad.data.pseudo.plugins`)."""
        clip = self.clip_of(batch)
        target = batch.get("target")
        return clip if target is None else clip._replace(target=target.to(clip.target.dtype))

    @staticmethod
    def split_pseudo(batch: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(usual items, items for the bounded negative loss) of a training batch; either may be None (no items).

        A plain batch, or a plug-in batch without ``negative`` items, comes back whole as the first part.
        """
        weights = batch.get("pseudo_negative")
        if weights is None or not bool((weights > 0).any()):
            return dict(batch), None
        negative = weights > 0
        usual = None if bool(negative.all()) else subset_batch(batch, ~negative)
        return usual, subset_batch(batch, negative)

    def pseudo_negative_term(self, output: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """The bounded negative loss of pseudo-anomalous items: mean_i -w_i * min(mse_i, bound_i), mse_i the mean
        squared error of item i's output against its own target (STEAL's objective, bounded so it cannot run away).
        The unclamped error and the bound are logged (``train/pseudo_error``, ``train/pseudo_bound``)."""
        target = self.output_target(self.training_clip(batch))
        error = (output.float() - target.float()).pow(2).flatten(1).mean(1)
        weight = batch["pseudo_negative"].to(error)
        bound = batch["pseudo_bound"].to(error)
        n = error.shape[0]
        self.log("train/pseudo_error", error.detach().mean(), batch_size=n, on_step=True, on_epoch=False)
        self.log("train/pseudo_bound", bound.mean(), batch_size=n, on_step=True, on_epoch=False)
        return -(weight * torch.minimum(error, bound)).mean()

    def clip_requests(self) -> dict[str, Any]:
        """What the method's clips must carry besides the frames, for the datamodule (``vad.app.build`` hands it over
        before the data is prepared): ``{"flows": estimator}`` gives every item ``flows``, the flow targets of that
        estimator between the clip's consecutive frames, computed once into the flow cache (:mod:`vad.data.flows`).
        Nothing by default."""
        return {}

    # ------------------------------------------------------------------ means over the training frames
    def training_quantities(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per-frame values (N,) of each of ``training_mean_names`` on a batch of normal training clips; by default
        those of the method's :meth:`frame_signals` (whose values before the means exist must not matter for them)."""
        signals = self.frame_signals(batch)
        return {name: signals[name] for name in self.training_mean_names}

    @property
    def training_means_ready(self) -> bool:
        """True when the method needs no training means or they have been computed (also: loaded)."""
        return not self.training_mean_names or bool(torch.isfinite(self.training_means).all())

    def training_mean(self, name: str, default: float = 1.0) -> float:
        """The mean of ``name`` over the training frames, or ``default`` before it is computed (validation during
        training, where the per-video min-max makes constant factors irrelevant)."""
        value = float(self.training_means[self.training_mean_names.index(name)])
        return value if math.isfinite(value) else default

    @torch.no_grad()
    def compute_training_means(self, loader: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """Means of :meth:`training_quantities` over every clip of ``loader`` (the normal training clips, in order),
        with the current weights in eval mode, stored in the ``training_means`` buffer (so in checkpoints).

        ``vad.train`` calls it once after training and writes the values into the last checkpoint
        (``finalise_checkpoint``); a test whose
        checkpoint lacks them (a ``best_val`` checkpoint, saved before the end) computes them at its start."""
        was_training = self.training
        self.eval()
        sums = torch.zeros(len(self.training_mean_names), dtype=torch.float64)
        count = 0
        for batch in loader:
            moved = self.prepare_batch(batch)
            values = self.training_quantities(moved)
            sums += torch.stack([values[n].double().sum().cpu() for n in self.training_mean_names])
            count += int(moved["frames"].shape[0])
        self.train(was_training)
        if count == 0:
            raise RuntimeError("no training clips to compute the training means on")
        means = sums / count
        self.training_means.copy_(means.to(self.training_means))
        return dict(zip(self.training_mean_names, means.tolist(), strict=True))

    # ------------------------------------------------------------------ methods implement these
    def predict(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The method's output for the target frames of a batch: (N, C, H, W) in [-1, 1]."""
        raise NotImplementedError

    def frame_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per-frame signals of a test batch: name -> (N,) float tensor; by default the PSNR of :meth:`predict`."""
        return {"psnr": losses.psnr(self.predict(batch).float(), batch["frames"][:, -1].float())}

    def error_maps(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        """Per-pixel anomaly maps of the target frames of a batch, higher = more anomalous: (N, H, W) at the working
        size, or None when the method has no meaningful map (then no pixel-level metric is computed).

        By default the squared error of :meth:`predict` against :meth:`output_target`, mean over the channels
        (:func:`vad.methods.losses.squared_error_map`, whose pixel mean is the MSE of the PSNR signal); None for a method
        without a frame output (no ``predict``). A method whose score rests on another map overrides this (and
        ``error_map_description``). The test loop calls it before :meth:`test_signals` on the same frames, so a
        method with test-time state sees the state at the start of the batch.
        """
        if type(self).predict is VADModule.predict:
            return None
        return losses.squared_error_map(self.predict(batch), self.output_target(self.clip_of(batch)))

    def test_signals_and_maps(self, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """:meth:`test_signals` and :meth:`error_maps` of a test batch, what the test loop asks for while it measures
        the pixel-level metrics. By default two passes, the maps first (so a method with test-time state maps the
        batch with the state at its start); a method that gets both from one forward pass overrides this (FFP)."""
        maps = self.error_maps(batch)
        return self.test_signals(batch), maps

    def sample_panels(self, batch: Mapping[str, Any]) -> dict[str, panels.Panel]:
        """Named panels of a batch for the sample grids (``vad.reporting.panels``); by default the last input frame, the
        output of :meth:`predict`, the target and the error map. A method adds its own (flows, memories, ...)."""
        clip = self.split_clip(batch["frames"])
        prediction = self.predict(batch)
        return {
            "last input": panels.image(clip.last),
            "prediction": panels.image(prediction),
            "target": panels.image(clip.target),
            "error": panels.error_map(prediction, clip.target),
        }

    def setup(self, stage: str) -> None:
        if self.channels_last:
            # Converting the weights suffices: a convolution runs channels-last when its weight is, and its output
            # stays so for the next layer.
            self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ methods with test-time state override these
    def on_test_video_start(self, video_id: int) -> None:
        """Called by the test loop before the first frame of each test video, in test order; a no-op by default."""

    def test_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per-frame signals of a test batch holding frames of ONE video, in frame order; default :meth:`frame_signals`.

        A method whose state evolves during the test (MNAD's memory updates) overrides this; validation keeps using
        the stateless :meth:`frame_signals`.
        """
        return self.frame_signals(batch)

    # ------------------------------------------------------------------ training helpers
    def weight(self, term: str) -> float:
        """The configured weight of a loss term (0 when absent)."""
        return self.loss_weights.get(term, 0.0)

    def check_finite(self, terms: Mapping[str, torch.Tensor], total: torch.Tensor | None = None) -> None:
        """Raise NonFiniteLossError naming the step and the first non-finite term.

        With ``total`` given only that one value is checked (one device sync per step); the terms are inspected only
        when it is not finite. Under DDP the ranks decide together, so all of them stop at the same step (a rank that
        stopped alone would leave the others waiting in the gradient all-reduce).
        """
        checked = [total] if total is not None else list(terms.values())
        finite = all(bool(torch.isfinite(v.detach()).all()) for v in checked)
        if self._trainer is not None and self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        advice = "lower the learning rate or the term's weight (model.loss / model.optim), or set model.grad_clip"
        for name, value in terms.items():
            if not torch.isfinite(value.detach()).all():
                raise NonFiniteLossError(
                    f"loss term '{name}' is {value.detach().float().mean().item()} at step {self.global_step}; {advice}"
                )
        raise NonFiniteLossError(
            f"the weighted loss is not finite at step {self.global_step} (a non-finite weight in model.loss, or a "
            f"term on another rank); {advice}"
        )

    def weighted_sum(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """sum_k w_k * L_k over the computed terms; raises NonFiniteLossError if any term is not finite."""
        total = sum(self.weight(name) * value for name, value in terms.items())
        self.check_finite(terms, total)  # type: ignore[arg-type]
        return total  # type: ignore[return-value]

    def optimise(self, optimizer: LightningOptimizer, loss: torch.Tensor, *, counts_as_step: bool = True) -> None:
        """zero_grad -> backward -> optional clipping -> step, for one optimiser of a manual-optimisation method.

        Gradients of the optimiser's parameters are zeroed first, so gradients left by another network's loss (e.g.
        the generator's adversarial term flowing into the discriminator) never leak into this step.
        """
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        if counts_as_step:
            optimizer.step()
        else:
            with _uncounted(optimizer):
                optimizer.step()

    def log_terms(self, terms: Mapping[str, torch.Tensor], prefix: str = "train/loss_", **kwargs: Any) -> None:
        """Log each term unweighted as ``train/loss_<name>``."""
        batch_size = kwargs.pop("batch_size", None)
        self.log_dict(
            {f"{prefix}{k}": v.detach().float() for k, v in terms.items()},
            on_step=True,
            on_epoch=False,
            batch_size=batch_size,
            **kwargs,
        )

    def _step_schedulers(self) -> bool:
        """Step the step-interval schedulers once for the current iteration; False if already done."""
        if self._schedulers_at == self.global_step:
            return False
        self._schedulers_at = self.global_step
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == "step":
                config.scheduler.step()
        return True

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning does not step schedulers in manual optimisation; step-interval ones are stepped here per
        # iteration, epoch-interval ones in on_train_epoch_end, so every method gets the same behaviour.
        self._step_schedulers()

    def on_train_epoch_end(self) -> None:
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == "epoch":
                config.scheduler.step()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The composed config travels with the weights so `vad.evaluate ckpt_path=...` rebuilds the same run.
        if self.run_config is not None:
            checkpoint[CONFIG_KEY] = self.run_config
        if self.calibration is not None:
            checkpoint[CALIBRATION_KEY] = self.calibration.to_dict()
        # A periodic checkpoint is saved by a callback's on_train_batch_end, before this module's: the iteration's
        # scheduler step is taken now and recorded, or a resumed run would stay one step behind.
        if "lr_schedulers" in checkpoint and self.trainer.training and self._step_schedulers():
            checkpoint["lr_schedulers"] = [c.scheduler.state_dict() for c in self.trainer.lr_scheduler_configs]
            # The optimiser states were collected before that step: their learning rates are the previous
            # iteration's. Schedulers that compute the next rate from the current one (cosine annealing) would
            # resume from the stale rate, so the rates just set are recorded too.
            for state, optimizer in zip(checkpoint.get("optimizer_states", []), self.trainer.optimizers, strict=False):
                for saved, group in zip(state.get("param_groups", []), optimizer.param_groups, strict=False):
                    saved["lr"] = group["lr"]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        data = checkpoint.get(CALIBRATION_KEY)
        self.calibration = None if data is None else Calibration.from_dict(data)

    # ------------------------------------------------------------------ calibration on held-out normal frames
    @torch.no_grad()
    def collect_signals(self, loader: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Every clip's :meth:`frame_signals` (stateless: no test-time memory update) over ``loader``, in eval mode:
        name -> (N,) float64."""
        return self._collect_signals(loader)[0]

    def _collect_signals(
        self, loader: Iterable[Mapping[str, Any]]
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """:meth:`collect_signals`, with each clip's video id and target frame index (from the batches; a batch
        without them counts as one video, in loader order)."""
        was_training = self.training
        self.eval()
        columns: dict[str, list[np.ndarray]] = {name: [] for name in self.signals}
        videos: list[np.ndarray] = []
        indices: list[np.ndarray] = []
        seen = 0
        for batch in loader:
            moved = self.prepare_batch(batch)
            for name, value in self.frame_signals(moved).items():
                columns[name].append(value.detach().double().cpu().numpy())
            n = len(moved["frames"])
            video = batch.get("video_id")
            index = batch.get("index")
            videos.append(np.zeros(n, np.int64) if video is None else torch.as_tensor(video).cpu().numpy())
            indices.append(np.arange(seen, seen + n) if index is None else torch.as_tensor(index).cpu().numpy())
            seen += n
        self.train(was_training)
        signals = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in columns.items()}
        video_ids = np.concatenate(videos).astype(np.int64) if videos else np.zeros(0, np.int64)
        frame_indices = np.concatenate(indices).astype(np.int64) if indices else np.zeros(0, np.int64)
        return signals, video_ids, frame_indices

    def calibrate(
        self, loader: Iterable[Mapping[str, Any]], source: str, smoothing: float | None = None
    ) -> Calibration:
        """Fit :attr:`calibration` on the normal clips of ``loader`` (``source`` says which, for the report); the
        stream scores are smoothed causally with ``smoothing`` frames (None: the run's ``model.smoothing``), and so
        are the calibration frames' scores, video by video in frame order, before the thresholds are taken."""
        signals, videos, indices = self._collect_signals(loader)
        order = np.lexsort((indices, videos))  # video by video, in time order
        self.calibration = Calibration.fit(
            {name: values[order] for name, values in signals.items()},
            self.score_weights,
            source=source,
            smoothing=self.smoothing if smoothing is None else smoothing,
            videos=videos[order],
        )
        return self.calibration

    # ------------------------------------------------------------------ validation: held-out normal videos
    def on_validation_epoch_start(self) -> None:
        self._val_records = []

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Signals of the held-out videos' frames (stateless: :meth:`frame_signals`, so a method's test-time state,
        such as MNAD's memory updates, never changes the trained model); their means are logged as ``val/<signal>``
        and the frames kept for the epoch's AUC."""
        signals = self.frame_signals(batch)
        n = batch["frames"].shape[0]
        self.log_dict({f"val/{k}": v.float().mean() for k, v in signals.items()}, batch_size=n, sync_dist=True)
        record = {
            "video_id": batch["video_id"].detach().cpu().numpy().astype(np.int64),
            "index": batch["index"].detach().cpu().numpy().astype(np.int64),
        }
        record.update({k: v.detach().float().cpu().numpy() for k, v in signals.items()})
        self._val_records.append(record)

    def on_validation_epoch_end(self) -> None:
        """``val/auc_micro`` and ``val/auc_macro`` on the pseudo-anomaly validation set, under the test's protocol
        (the method's fusion of per-video min-max normalised signals); every rank computes the same values."""
        videos = getattr(self.trainer.datamodule, "val_videos_info", None) if self._trainer is not None else None
        if not videos or self.trainer.sanity_checking:
            return
        records = self._gather_records(self._val_records, "the validation videos")
        result = scoring.evaluate(
            scoring.videos_from_records(records, videos, signals=self.signals),
            self.score_weights,
            label_source=VALIDATION_LABELS,
            smoothing=self.smoothing,
        )
        self.val_result = result
        for name in ("auc_micro", "auc_macro"):
            value = getattr(result, name)
            if value is not None and not math.isnan(value):
                self.log(f"val/{name}", float(value), prog_bar=name == "auc_micro")

    # ------------------------------------------------------------------ test: every frame once, then the protocol
    def on_test_epoch_start(self) -> None:
        if not self.training_means_ready:
            # a checkpoint saved before the end of training (best_val) does not hold them yet
            self.compute_training_means(self.trainer.datamodule.training_frames_dataloader())
        self._test_records = []
        self.test_samples = None
        self.test_result = None
        self._test_video = None
        if self.pixel_evaluation is not None:
            self.pixel_evaluation.start(self.trainer.datamodule, self.global_rank, self.error_map_description)
        self.begin_test_state()

    def begin_test_state(self) -> None:
        """Reset the state a method's test evolves (MNAD's test memory) to the trained one; called at the start of
        every test and by ``vad.score`` before each input. A no-op by default."""

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        # A batch may span a video boundary: each video's run of frames is handled on its own, after the
        # on_test_video_start of its video, so per-video state never leaks across the boundary.
        for part in split_by_video(batch):
            video_id = int(part["video_id"][0])
            if video_id != self._test_video:
                self._test_video = video_id
                self.on_test_video_start(video_id)
            pixel = self.pixel_evaluation
            if pixel is not None and pixel.collecting:
                signals, maps = self.test_signals_and_maps(part)
                pixel.add(video_id, part["index"], maps)
            else:
                signals = self.test_signals(part)
            record = {
                "video_id": part["video_id"].detach().cpu().numpy().astype(np.int64),
                "index": part["index"].detach().cpu().numpy().astype(np.int64),
            }
            for name, value in signals.items():
                record[name] = value.detach().float().cpu().numpy()
            self._test_records.append(record)
            if self.test_samples is None:
                self.test_samples = panels.render(self.sample_panels(part), part["video"], part["index"])

    def _gather_records(
        self, records: list[dict[str, np.ndarray]] | None = None, what: str = "the test split"
    ) -> dict[str, np.ndarray]:
        """Concatenate this rank's records (default: the test's) and, under DDP, every rank's (a rank may hold none);
        duplicates removed."""
        records = self._test_records if records is None else records
        local = {k: np.concatenate([r[k] for r in records]) for k in records[0]} if records else {}
        if self.trainer.world_size > 1:
            parts = [g for g in self._all_gather_objects(local) if g]
            local = {k: np.concatenate([g[k] for g in parts]) for k in parts[0]} if parts else {}
        if not local:
            raise RuntimeError(f"{what} yielded no frames to score")
        # A distributed sampler pads the last batches with repeated items: keep the first of each (video, frame).
        key = local["video_id"] * (1 << 32) + local["index"]
        _, first = np.unique(key, return_index=True)
        first.sort()
        return {k: v[first] for k, v in local.items()}

    def _all_gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (``all_gather_object`` under DDP; every rank must call this)."""
        if self._trainer is None or self.trainer.world_size == 1:
            return [obj]
        gathered: list[Any] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def on_test_epoch_end(self) -> None:
        records = self._gather_records()
        datamodule = self.trainer.datamodule
        videos = datamodule.test_videos
        result = scoring.evaluate(
            scoring.videos_from_records(records, videos, signals=self.signals),
            self.score_weights,
            label_source=datamodule.label_source,
            smoothing=self.smoothing,
        )
        self.test_result = result
        for name in ("auc_micro", "auc_macro", "eer", "ap", "auc_micro_raw"):
            value = getattr(result, name)
            if value is not None and not math.isnan(value):
                self.log(f"test/{name}", float(value), rank_zero_only=True)
        pixel = self.pixel_evaluation
        if pixel is not None:
            pixel.finish(self._all_gather_objects)
            for name in ("auc", "ucsd_auc", "rbdc", "tbdc"):
                value = (pixel.block or {}).get(name)
                if value is not None and not math.isnan(value):
                    self.log(f"test/pixel_{name}", float(value), rank_zero_only=True)


class Prediction(NamedTuple):
    """What a :class:`FramePredictor`'s generator makes of a clip: the predicted target ``frame`` (N, C, H, W) in
    [-1, 1] and whatever else its loss terms or sample panels need (``extras``: name -> tensor)."""

    frame: torch.Tensor
    extras: Mapping[str, torch.Tensor] = MappingProxyType({})


class FramePredictor(VADModule):
    """A generator that predicts the target frame of a clip, with an optional LSGAN PatchGAN discriminator.

    Per iteration: one generator step on the weighted sum of ``generator_terms`` plus, when
    ``model.loss.adversarial`` is not 0, the LSGAN term mean((D(P) - 1)^2 / 2); then one discriminator step on the
    real target against the detached prediction, mean((D(G) - 1)^2 / 2) + mean(D(P)^2 / 2), which does not advance
    ``global_step`` (iterations count generator steps). Adam for both nets; both learning rates are multiplied by
    ``gamma`` after each of ``milestones`` (iterations).

    A subclass declares ``signals`` / ``loss_terms`` / ``default_loss`` (with ``adversarial`` among the terms when it
    is trained adversarially) and implements

    - ``build_generator(config) -> nn.Module``: its generator from ``model.generator``, called once here before the
      discriminator is built (``self.channels`` and ``self.clip_len`` are set);
    - ``forward_clip(clip) -> Prediction``: the generator on a :class:`Clip`;
    - ``generator_terms(prediction, clip) -> {term: scalar}``: its unweighted terms, skipping a term whose weight
      is 0; the adversarial term is added here.

    Args:
        generator: keyword arguments of the generator (``build_generator``).
        discriminator: keyword arguments of :class:`vad.nets.PatchDiscriminator`; not built when the adversarial
            weight is 0.
        optim: ``lr_g``, ``lr_d``, ``betas``, ``milestones`` (iterations), ``gamma`` (default ``default_optim``).
        Others: see :class:`VADModule`.
    """

    default_optim: ClassVar[Mapping[str, Any]] = {
        "lr_g": 1e-4,
        "lr_d": 1e-5,
        "betas": (0.9, 0.999),
        "milestones": (),
        "gamma": 0.1,
    }

    def __init__(
        self,
        *,
        channels: int,
        clip_len: int,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        loss: Mapping[str, float] | None = None,
        optim: Mapping[str, Any] | None = None,
        score: Mapping[str, float] | None = None,
        frozen: Mapping[str, nn.Module | None] | None = None,
        grad_clip: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__(
            channels=channels,
            clip_len=clip_len,
            loss=loss,
            score=score,
            frozen=frozen,
            grad_clip=grad_clip,
            channels_last=channels_last,
        )
        unknown = sorted(set(optim or {}) - set(self.default_optim))
        if unknown:
            raise ConfigError(f"model.optim has unknown key(s) {unknown}; valid: {list(self.default_optim)}")
        self.optim = dict(self.default_optim) | dict(optim or {})
        self.generator = self.build_generator(dict(generator or {}))
        self.discriminator = (
            PatchDiscriminator(self.discriminator_channels, **(discriminator or {}))
            if self.weight("adversarial") != 0
            else None
        )

    # ------------------------------------------------------------------ subclasses implement these
    def build_generator(self, config: dict[str, Any]) -> nn.Module:
        """The generator from the ``model.generator`` keyword arguments."""
        raise NotImplementedError

    def forward_clip(self, clip: Clip) -> Prediction:
        """The generator's prediction of ``clip.target`` from ``clip.inputs``."""
        raise NotImplementedError

    def generator_terms(self, prediction: Prediction, clip: Clip) -> dict[str, torch.Tensor]:
        """Unweighted generator loss terms except the adversarial one; a term whose weight is 0 is not computed."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    @property
    def input_frames(self) -> int:
        """t, the number of input frames of a clip."""
        return self.clip_len - 1 if self.task == "prediction" else 1

    def predict(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.forward_clip(self.clip_of(batch)).frame

    # ------------------------------------------------------------------ what the discriminator sees
    @property
    def discriminator_channels(self) -> int:
        """Input channels of the discriminator: the image channels by default."""
        return self.channels

    def real_sample(self, clip: Clip) -> torch.Tensor:
        """What the discriminator sees as real: the target frame by default."""
        return clip.target

    def fake_sample(self, prediction: Prediction) -> torch.Tensor:
        """What the discriminator sees as generated (not detached): the predicted frame by default."""
        return prediction.frame

    def configure_optimizers(self) -> Any:
        betas = tuple(self.optim["betas"])
        milestones: Sequence[int] = list(self.optim["milestones"] or [])
        optimizers = [torch.optim.Adam(self.generator.parameters(), lr=self.optim["lr_g"], betas=betas)]
        if self.discriminator is not None:
            optimizers.append(torch.optim.Adam(self.discriminator.parameters(), lr=self.optim["lr_d"], betas=betas))
        named = list(zip(("generator", "discriminator"), optimizers, strict=False))
        return optimizers, multistep_schedulers(named, milestones, self.optim["gamma"])

    def all_generator_terms(self, prediction: Prediction, clip: Clip) -> dict[str, torch.Tensor]:
        """``generator_terms`` plus the adversarial term when its weight is not 0."""
        terms = self.generator_terms(prediction, clip)
        if self.weight("adversarial"):
            terms["adversarial"] = losses.lsgan_generator_loss(self.discriminator(self.fake_sample(prediction)))
        return terms

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        # Items of a pseudo-anomaly plug-in with the negative objective get only the bounded negative term; the others
        # (plain items, and pseudo items trained towards their normal target) the usual terms.
        usual, negative = self.split_pseudo(batch)
        n = batch["frames"].shape[0]
        optimizers = self.optimizers()
        opt_g = optimizers[0] if isinstance(optimizers, list) else optimizers

        # Generator step. D's parameters are excluded from the graph (toggle) so G's adversarial term leaves no
        # gradient in D, and the D step below zeroes D's gradients before its own backward anyway.
        self.toggle_optimizer(opt_g)
        terms: dict[str, torch.Tensor] = {}
        clip = prediction = None
        if usual is not None:
            clip = self.training_clip(usual)
            prediction = self.forward_clip(clip)
            terms = self.all_generator_terms(prediction, clip)
        loss_g = self.weighted_sum(terms) if terms else torch.zeros((), device=self.device)
        logged = dict(terms)
        if negative is not None:
            inverse = self.pseudo_negative_term(self.forward_clip(self.training_clip(negative)).frame, negative)
            self.check_finite({"pseudo_negative": inverse})
            loss_g = loss_g + inverse
            logged["pseudo_negative"] = inverse
        self.optimise(opt_g, loss_g)
        self.untoggle_optimizer(opt_g)
        logged["g"] = loss_g

        # Discriminator step on the detached prediction; it does not advance global_step (iterations count G steps).
        if self.discriminator is not None and clip is not None and prediction is not None:
            opt_d = optimizers[1]
            self.toggle_optimizer(opt_d)
            loss_d = losses.lsgan_discriminator_loss(
                self.discriminator(self.real_sample(clip)), self.discriminator(self.fake_sample(prediction).detach())
            )
            self.check_finite({"discriminator": loss_d})
            self.optimise(opt_d, loss_d, counts_as_step=False)
            self.untoggle_optimizer(opt_d)
            logged["d"] = loss_d
        self.log_terms(logged, batch_size=n)
        self.log("train/loss", loss_g.detach(), prog_bar=True, batch_size=n, on_step=True, on_epoch=False)
