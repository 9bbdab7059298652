"""r-GAN: recurrence across the input frames (vs the released code's restarted state), sizes at 256x256, the loss and
score, one Trainer run on the synthetic set, MS-SSIM scales, exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra_runs import hydra_job, tiny_synthetic
from moving_blobs import moving_blobs
from recurrent_checks import first_frame_matters
from tiny_runs import RESUMABLE, assert_same_training_state

from vad.app.train import train
from vad.errors import ConfigError
from vad.methods import losses
from vad.methods.rgan import RGAN
from vad.nets.rgan import RecurrentUNet

TINY_G = {"features": 4, "depth": 2, "hidden": [4, 4]}
TINY_D = {"features": [4, 8, 8, 8]}
TINY_RGAN = [
    "model=rgan",
    "model.generator.features=4",
    "model.generator.depth=2",
    "model.generator.hidden=[4]",
    "model.discriminator.features=[4,8,8,8]",
    "trainer.max_steps=2",
    "debug=tiny",
]


def tiny_rgan(**kwargs: object) -> RGAN:
    settings = {"generator": TINY_G, "discriminator": TINY_D, "image_size": (32, 32)} | kwargs
    return RGAN(channels=1, clip_len=4, **settings)


def released_code_forward(net: RecurrentUNet, frames: torch.Tensor) -> torch.Tensor:
    """The released r-GAN generator's loop: a fresh zero ConvLSTM state inside the time loop."""
    for step in frames.unbind(dim=1):
        h, _ = net.convlstm(net.unet(step), None)  # the state is re-initialised at every step
    return net.read(h, frames[:, -1])


def test_the_prediction_depends_on_the_first_frame_and_the_released_loop_does_not() -> None:
    torch.manual_seed(0)
    net = RecurrentUNet(1, **TINY_G).eval()
    frames = moving_blobs(2, 3, 32)
    assert first_frame_matters(net, frames)
    assert not first_frame_matters(lambda x: released_code_forward(net, x), frames)


def test_the_residual_read_out_starts_near_copy_last_learns_and_stays_recurrent() -> None:
    torch.manual_seed(0)
    net = RecurrentUNet(1, **TINY_G, residual=True).eval()
    frames = moving_blobs(2, 4, 32)
    prediction = net(frames[:, :3])
    assert (prediction - frames[:, 2]).abs().max() < 0.05  # untrained: the last frame, to within a few %
    (prediction - frames[:, 3]).abs().mean().backward()
    assert net.unet.encoder[0][0].weight.grad.abs().sum() > 0  # not a saddle: the layers below learn from the start
    assert first_frame_matters(net, frames[:, :3])
    assert not first_frame_matters(lambda x: released_code_forward(net, x), frames[:, :3])


def test_shapes_and_parameter_count_at_256() -> None:
    net = RecurrentUNet(3)  # the defaults of conf/model/rgan.yaml
    counts = {name: sum(p.numel() for p in part.parameters()) for name, part in net.named_children()}
    assert counts == {"unet": 7_699_011, "convlstm": 449_792, "read_out": 1_731}
    assert sum(counts.values()) == 8_150_534  # as stated in vad.nets.rgan
    meta = net.to("meta")
    prediction, steps = meta(torch.empty(2, 3, 3, 256, 256, device="meta"), return_steps=True)
    assert prediction.shape == (2, 3, 256, 256)
    assert steps.shape == (2, 3, 3, 256, 256)
    model = RGAN(channels=3, clip_len=4, image_size=(256, 256))
    assert model.discriminator.output_size(256, 256) == (35, 35)
    assert model.msssim["scales"] == 5


@pytest.mark.parametrize(("size", "scales"), [(64, 3), (128, 4), (256, 5)])
def test_msssim_scales_follow_the_working_size_and_are_recorded(size: int, scales: int) -> None:
    model = tiny_rgan(image_size=(size, size))
    assert model.msssim["scales"] == scales
    assert model.hparams["msssim"]["scales"] == scales
    assert len(model.hparams["msssim"]["betas"]) == scales
    with pytest.raises(ConfigError, match=r"model\.msssim\.scales=5: 64-px frames allow 1\.\.3 scales"):
        tiny_rgan(image_size=(64, 64), msssim={"scales": 5})


def test_training_loss_and_score_are_the_same_prediction_loss() -> None:
    torch.manual_seed(0)
    model = tiny_rgan().eval()
    frames = moving_blobs(3, 4, 32)
    clip = model.split_clip(frames)
    with torch.no_grad():
        prediction = model.forward_clip(clip)
        terms = model.generator_terms(prediction, clip)
        signals = model.frame_signals({"frames": frames})
    assert set(terms) == {"l1", "msssim", "gradient"}
    torch.testing.assert_close(terms["l1"], losses.l1_loss(prediction.frame, clip.target))
    torch.testing.assert_close(terms["gradient"], losses.gradient_loss(prediction.frame, clip.target, zero_pad=False))
    torch.testing.assert_close(terms["msssim"], losses.msssim_loss(prediction.frame, clip.target, 2))
    # the score of each frame is its weighted prediction loss: their batch mean is the training loss
    torch.testing.assert_close(signals["prediction_loss"].mean(), sum(terms.values()))
    torch.testing.assert_close(signals["psnr"], losses.psnr(prediction.frame, clip.target))
    # one polarity: a target the model predicts exactly scores lowest (loss 0, PSNR at its cap)
    predicted = frames.clone()
    predicted[:, -1] = prediction.frame
    with torch.no_grad():
        perfect = model.frame_signals({"frames": predicted})
    torch.testing.assert_close(perfect["prediction_loss"], torch.zeros(3), atol=1e-4, rtol=0)
    assert (perfect["prediction_loss"] < signals["prediction_loss"]).all()
    with torch.no_grad():
        squared = tiny_rgan(loss={"intensity": 2.0}).eval()
        squared.generator.load_state_dict(model.generator.state_dict())
        per_frame = squared.frame_signals({"frames": frames})["prediction_loss"]
    torch.testing.assert_close(per_frame, 2 * losses.intensity_loss(prediction.frame, clip.target, "none"))
    with pytest.raises(ConfigError, match=r"weight at least one of \['l1', 'msssim', 'gradient', 'intensity'\]"):
        tiny_rgan(loss={"adversarial": 0.05})
    with pytest.raises(ConfigError, match=r"model\.image_size=\[32, 32\]"):
        model.frame_signals({"frames": moving_blobs(1, 4, 64)})


def test_sample_panels_show_the_unet_prediction_of_each_frame() -> None:
    model = tiny_rgan().eval()
    with torch.no_grad():
        shown = model.sample_panels({"frames": moving_blobs(2, 4, 32)})
    assert list(shown)[4:] == ["U-Net, frame 1", "U-Net, frame 2", "U-Net, frame 3"]


def test_trains_and_tests_on_the_synthetic_set(tmp_path: Path) -> None:
    run = tmp_path / "run"
    metrics = train(hydra_job("train", [*tiny_synthetic(tmp_path / "synthetic"), *TINY_RGAN], run, tmp_path))
    assert metrics["frames"] == 2 * (36 - 3)  # t = 3: the first 3 frames of each test video are not scored
    assert metrics["weights"] == {"prediction_loss": 1.0}
    header = (run / "scores.csv").read_text().splitlines()[0]
    assert header == "video,frame,label,score,prediction_loss,psnr"
    logged = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss_l1", "train/loss_msssim", "train/loss_gradient", "train/loss_adversarial"} <= set(logged)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert checkpoint["hyper_parameters"]["msssim"]["scales"] == 2


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    data = tiny_synthetic(tmp_path / "synthetic")
    settings = [*data, *TINY_RGAN, *(o for o in RESUMABLE if not o.startswith("model.loss.flow"))]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train(hydra_job("train", settings, full, tmp_path))
    middle = full / "checkpoints" / "step0000003.ckpt"
    train(hydra_job("train", [*settings, f"ckpt_path={middle}"], resumed, tmp_path))
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 7
    assert_same_training_state(full / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")
