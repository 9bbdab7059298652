"""The shared base of every method: the declarations, checked once, and the LightningModule core.

A method subclasses :class:`VADModule` (or :class:`vad.methods.frame_predictor.FramePredictor`, a generator
predicting the target frame with an optional LSGAN PatchGAN discriminator) and declares what it is:

- ``signals``: the per-frame signals it emits (``psnr``, ``feature_distance``, ...);
- ``loss_terms``: the terms ``model.loss`` may weight; an unknown term is refused with the valid ones listed;
- ``frozen_nets``: named auxiliary nets it takes (a flow estimator for a loss, a feature extractor, ...), each built
  by ``vad.app.build`` from a config group and held here outside the module tree (:class:`FrozenNet`);
- ``task``: ``prediction`` (t = clip_len - 1 input frames, the last frame is the target) or ``reconstruction``
  (clip_len 1); :meth:`VADModule.split_clip` cuts every clip the same way for every method.

and implements

- ``training_step``, ending in the shared :meth:`VADModule.objective_step` and :meth:`VADModule.log_step` (a
  FramePredictor implements ``forward_clip`` and ``generator_terms`` instead);
- ``predict(batch) -> (N, C, H, W)``: its output for the target frames; the default signal is the PSNR of it
  (``frame_signals``), the default sample panels show it (``sample_panels``, see :mod:`vad.methods.panels`) and the
  default per-pixel error map is its squared error against ``output_target`` (``error_maps``, for the pixel-level
  metrics of ``vad.evaluation.pixel.evaluation``);
- when its state evolves during the test (MNAD's memory), ``on_test_video_start(video_id)`` and
  ``test_signals(batch)``: the test loop hands over each batch one video at a time, in frame order.

Its constructor takes the arguments every method shares; a method's ``__init__`` names only its own and forwards
the rest (``**common``). The rest lives once in the parts VADModule composes: :mod:`vad.methods.optimisation` (G/D
steps, loss checks, schedulers), :mod:`vad.methods.pseudo_objective` (the pseudo-anomaly objective, the shared end
of a training step), :mod:`vad.methods.loops` (training means, calibration, validation, test). Here: the uint8 ->
float32 [-1, 1] conversion of batches on the module's device (:meth:`VADModule.prepare_batch`, in Lightning's
``on_after_batch_transfer`` and wherever batches are fed outside the Trainer), the clip cutting, the default
signals, maps and panels, and the checkpoint hooks. No method needs ``if method == ...`` branches here.

    class Copy(VADModule):  # the copy-last baseline: its output is the last input frame
        def predict(self, batch): return self.split_clip(batch["frames"]).last
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import lightning as L
import torch
from torch import nn

from vad.checkpoint_io import CONFIG_KEY
from vad.data.batches import FRAME_KEYS, frames_to_float
from vad.errors import ConfigError
from vad.evaluation.calibration import CHECKPOINT_KEY as CALIBRATION_KEY
from vad.evaluation.calibration import Calibration
from vad.evaluation.fusion import check_weights
from vad.evaluation.smoothing import check_smoothing
from vad.methods import losses, panels
from vad.methods.loops import Loops
from vad.methods.optimisation import Optimisation
from vad.methods.pseudo_objective import PseudoObjective

# VADModule converts its batches in on_after_batch_transfer (prepare_batch), which Lightning tells about on every run
# given a datamodule ("It will use the implementation from `LightningModule` instance"): that is the intent.
warnings.filterwarnings(
    "ignore", message=r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a"
)

TASKS = ("prediction", "reconstruction")


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


class VADModule(Loops, PseudoObjective, Optimisation, L.LightningModule):
    """Base LightningModule of the suite's methods (manual optimisation).

    Args:
        channels: image channels (1 grey, 3 RGB).
        clip_len: frames per item: the method's input frames plus the target frame (1 for reconstruction); default
            the class's ``default_clip_len``.
        loss: flat mapping term -> weight over ``loss_terms`` (default ``default_loss``); a 0 weight skips the term,
            every computed term is logged unweighted.
        score: signed fusion weights of the per-frame signals (see ``vad.evaluation.fusion.fuse``; default
            ``default_score``).
        frozen: the auxiliary frozen nets by name (see ``frozen_nets``), as ``vad.app.build`` hands them over. They are
            held outside the module tree: not saved in checkpoints, not seen by DDP, never optimised, and moved
            with the module by ``.to()``.
        task: ``prediction`` or ``reconstruction`` (default: the class's ``task``); decides the valid clip lengths.
        grad_clip: max gradient norm applied to every optimiser step, or None.
        channels_last: keep the nets' 4-D weights in channels-last memory format, so convolutions run NHWC (faster
            with oneDNN on CPU and with tensor cores on GPU); default the class's ``default_channels_last``. A method
            whose nets reshape feature maps with ``view`` leaves it off.
        smoothing: sigma in frames of the temporal Gaussian applied to each signal before the per-video
            normalisation in validation and test (``model.smoothing``; 0: none).
    """

    #: names of the per-frame signals :meth:`frame_signals` returns
    signals: tuple[str, ...] = ()
    #: the loss terms ``model.loss`` may weight
    loss_terms: tuple[str, ...] = ()
    #: the loss weights and score weights used when none are given
    default_loss: ClassVar[Mapping[str, float]] = {}
    default_score: ClassVar[Mapping[str, float]] = {"psnr": -1.0}
    #: ``clip_len`` and ``channels_last`` when none are given
    default_clip_len: ClassVar[int] = 5
    default_channels_last: ClassVar[bool] = False
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

    def __init__(
        self,
        *,
        channels: int = 3,
        clip_len: int | None = None,
        loss: Mapping[str, float] | None = None,
        score: Mapping[str, float] | None = None,
        frozen: Mapping[str, nn.Module | None] | None = None,
        task: str | None = None,
        grad_clip: float | None = None,
        channels_last: bool | None = None,
        smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.channels_last = self.default_channels_last if channels_last is None else channels_last
        if channels not in (1, 3):
            raise ConfigError(f"model.channels must be 1 or 3, got {channels}")
        self.task = self.task if task is None else task
        if self.task not in TASKS:
            raise ConfigError(f"model.task={self.task!r} is not one of {list(TASKS)}")
        self.channels = channels
        self.clip_len = self._check_clip_len(self.default_clip_len if clip_len is None else clip_len)
        self.loss_weights = self._check_loss(self.default_loss if loss is None else loss)
        self.score_weights = check_weights(self.default_score if score is None else score, self.signals)
        self._frozen = self._check_frozen(dict(frozen or {}))
        self.grad_clip = grad_clip
        self.smoothing = check_smoothing(smoothing)
        #: {"config": resolved run config, "choices": config-group choices}, saved in checkpoints (:meth:`attach_run`)
        self.run_config: dict[str, Any] | None = None
        self._test_records: list[dict[str, Any]] = []
        self._val_records: list[dict[str, Any]] = []
        self._test_video: int | None = None
        if self.training_mean_names:
            # NaN until computed; a buffer, so saved in checkpoints and restored with the weights
            self.register_buffer("training_means", torch.full((len(self.training_mean_names),), math.nan))

    def attach_run(self, config: dict[str, Any]) -> None:
        """Attach the run the method belongs to: ``config`` ({"config": resolved run config, "choices": config-group
        choices}) travels with the weights in every checkpoint, so ``vad.evaluate ckpt_path=...`` rebuilds the run."""
        self.run_config = config

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
        (:data:`vad.data.batches.FRAME_KEYS`: ``frames``, a pseudo-anomaly's ``target``) converted there from the
        loaders' uint8 to float32 in [-1, 1] (:func:`vad.data.batches.frames_to_float`; float ones pass unchanged).

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

    def clip_requests(self) -> dict[str, Any]:
        """What the method's clips must carry besides the frames, for the datamodule (``vad.app.build`` hands it over
        before the data is prepared): ``{"flows": estimator}`` gives every item ``flows``, the flow targets of that
        estimator between the clip's consecutive frames, computed once into the flow cache (:mod:`vad.data.flows`).
        Nothing by default."""
        return {}

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
        (:func:`vad.methods.losses.squared_error_map`, whose pixel mean is the MSE of the PSNR signal); None for a
        method without a frame output (no ``predict``). A method whose score rests on another map overrides this (and
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
        """Named panels of a batch for the sample grids (:mod:`vad.methods.panels`); by default the last input frame,
        the output of :meth:`predict`, the target and the error map. A method adds its own (flows, memories, ...)."""
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

    def weight(self, term: str) -> float:
        """The configured weight of a loss term (0 when absent)."""
        return self.loss_weights.get(term, 0.0)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint[CONFIG_KEY] = self.run_config
        if self.calibration is not None:
            checkpoint[CALIBRATION_KEY] = self.calibration.to_dict()
        self.record_scheduler_step(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        data = checkpoint.get(CALIBRATION_KEY)
        self.calibration = None if data is None else Calibration.from_dict(data)
