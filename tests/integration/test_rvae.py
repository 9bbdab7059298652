"""r-VAE: recurrence over the per-step predictions (vs a restarted state), sizes at 256x256, the ELBO terms and the
KL normalisation, deterministic test signals, a Trainer run on the synthetic set."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra_runs import hydra_job, tiny_synthetic
from moving_blobs import moving_blobs
from recurrent_checks import first_frame_matters

from vad.app.train import train
from vad.errors import ConfigError
from vad.methods import losses
from vad.methods.rvae import RVAE, kl_per_pixel
from vad.nets.rgan import add_change
from vad.nets.vae import RecurrentVAE

TINY_G = {"features": 4, "blocks": [1, 1], "latent": 2, "hidden": [4]}
TINY_RVAE = [
    "model=rvae",
    "model.generator.features=4",
    "model.generator.blocks=[1,1]",
    "model.generator.latent=2",
    "model.generator.hidden=[4]",
    "trainer.max_steps=2",
    "debug=tiny",
]


def restarted_state_forward(net: RecurrentVAE, frames: torch.Tensor) -> torch.Tensor:
    """The released r-GAN code's loop applied to r-VAE: a fresh zero ConvLSTM state at every step."""
    steps = net(frames).steps
    for step in steps.unbind(dim=1):
        h, _ = net.convlstm(step, None)
    change = net.read_out(h)
    return add_change(frames[:, -1], change) if net.residual else torch.tanh(change)


def test_the_prediction_depends_on_the_first_frame_and_a_restarted_state_does_not() -> None:
    torch.manual_seed(0)
    net = RecurrentVAE(1, **TINY_G).eval()
    frames = moving_blobs(2, 3, 32)
    assert first_frame_matters(lambda x: net(x).prediction, frames)
    assert not first_frame_matters(lambda x: restarted_state_forward(net, x), frames)


def test_the_residual_variant_starts_near_copy_last_learns_and_stays_recurrent() -> None:
    torch.manual_seed(0)
    net = RecurrentVAE(1, **TINY_G, residual=True).eval()
    frames = moving_blobs(2, 4, 32)
    out = net(frames[:, :3])
    assert (out.prediction - frames[:, 2]).abs().max() < 0.05
    assert (out.steps - frames[:, :3]).abs().max() < 0.05  # each step starts at its own input frame
    (out.prediction - frames[:, 3]).abs().mean().backward()
    assert net.encoder.features[0].weight.grad.abs().sum() > 0
    assert first_frame_matters(lambda x: net(x).prediction, frames[:, :3])
    assert not first_frame_matters(lambda x: restarted_state_forward(net, x), frames[:, :3])


def test_shapes_and_parameter_count_at_256() -> None:
    net = RecurrentVAE(3)  # the defaults of conf/model/rvae.yaml
    counts = {name: sum(p.numel() for p in part.parameters()) for name, part in net.named_children()}
    assert counts == {"encoder": 14_780_352, "decoder": 11_491_395, "convlstm": 449_792, "read_out": 1_731}
    assert sum(counts.values()) == 26_723_270  # as stated in vad.nets.vae
    vgg16_convs = sum(p.numel() for p in net.encoder.features.parameters())
    assert vgg16_convs == 14_714_688  # VGG16's 13 convolutions on RGB
    out = net.to("meta").eval()(torch.empty(2, 3, 3, 256, 256, device="meta"))
    assert out.prediction.shape == (2, 3, 256, 256)
    assert out.steps.shape == (2, 3, 3, 256, 256)
    assert out.mu.shape == out.logvar.shape == (2, 3, 64, 8, 8)


def test_kl_is_per_image_element_and_its_terms_match_the_elbo() -> None:
    mu = torch.zeros(1, 2, 2, 2, 2)
    logvar = torch.zeros(1, 2, 2, 2, 2)
    mu[0, 0] = 1.0  # step 1: KL 0.5 per element, 8 elements; step 2: 0
    frame = torch.zeros(1, 1, 4, 4)  # 16 image elements
    torch.testing.assert_close(kl_per_pixel(mu, logvar, frame), torch.tensor([(0.5 * 8 / 16 + 0) / 2]))

    torch.manual_seed(0)
    model = RVAE(channels=1, clip_len=4, generator=TINY_G).train()
    frames = moving_blobs(2, 4, 32)
    clip = model.split_clip(frames)
    prediction = model.forward_clip(clip)
    terms = model.generator_terms(prediction, clip)
    assert set(terms) == {"intensity", "step_intensity", "kl"}
    steps = prediction.extras["steps"]
    torch.testing.assert_close(terms["intensity"], losses.intensity_loss(prediction.frame, frames[:, -1]))
    expected = sum(losses.intensity_loss(steps[:, k], frames[:, k + 1]) for k in range(3)) / 3
    torch.testing.assert_close(terms["step_intensity"], expected)
    latent_elements = math.prod(prediction.extras["mu"].shape[2:])
    kl = losses.gaussian_kl(prediction.extras["mu"], prediction.extras["logvar"]) * latent_elements / (32 * 32)
    torch.testing.assert_close(terms["kl"], kl)
    assert model.discriminator is None
    with pytest.raises(ConfigError, match="weight intensity or step_intensity"):
        RVAE(channels=1, loss={"kl": 1.0})


def test_test_signals_are_deterministic_and_one_polarity() -> None:
    torch.manual_seed(0)
    model = RVAE(channels=1, clip_len=4, generator=TINY_G).eval()
    frames = moving_blobs(3, 4, 32)
    with torch.no_grad():
        first = model.frame_signals({"frames": frames})
        second = model.frame_signals({"frames": frames})
        predicted = frames.clone()
        predicted[:, -1] = model.predict({"frames": frames})
        perfect = model.frame_signals({"frames": predicted})
    for name in ("prediction_error", "kl", "psnr"):
        torch.testing.assert_close(first[name], second[name])  # z is the posterior mean at test time
    assert (perfect["prediction_error"] < first["prediction_error"]).all()
    torch.testing.assert_close(perfect["prediction_error"], torch.zeros(3))
    assert list(model.sample_panels({"frames": frames}))[4:] == [
        "VAE, frame 1 → 2",
        "VAE, frame 2 → 3",
        "VAE, frame 3 → 4",
    ]


def test_trains_and_tests_on_the_synthetic_set(tmp_path: Path) -> None:
    run = tmp_path / "run"
    metrics = train(hydra_job("train", [*tiny_synthetic(tmp_path / "synthetic"), *TINY_RVAE], run, tmp_path))
    assert metrics["frames"] == 2 * (36 - 3)
    assert metrics["weights"] == {"prediction_error": 1.0}
    header = (run / "scores.csv").read_text().splitlines()[0]
    assert header == "video,frame,label,score,prediction_error,kl,psnr"
    logged = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss_intensity", "train/loss_step_intensity", "train/loss_kl"} <= set(logged)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
