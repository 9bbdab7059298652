"""r-GAN*: recurrence over the latent maps (vs a restarted state), sizes at 256x256, a Trainer run on the synthetic
set. The loss and score are r-GAN's (tests/test_rgan.py)."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra_runs import hydra_job, tiny_synthetic
from moving_blobs import moving_blobs
from recurrent_checks import first_frame_matters

from vad.app.train import train
from vad.methods.rgan_latent import RGANLatent
from vad.nets.autoencoder import RecurrentAutoencoder
from vad.nets.rgan import add_change

TINY_G = {"features": 4, "depth": 2, "latent": 4}
TINY_RGAN_LATENT = [
    "model=rgan_latent",
    "model.generator.features=4",
    "model.generator.depth=2",
    "model.generator.latent=4",
    "model.generator.hidden=[4]",
    "model.discriminator.features=[4,8,8,8]",
    "trainer.max_steps=2",
    "debug=tiny",
]


def restarted_state_forward(net: RecurrentAutoencoder, frames: torch.Tensor) -> torch.Tensor:
    """The released r-GAN code's loop applied to r-GAN*: a fresh zero ConvLSTM state at every step."""
    for latent in net.latents(frames).unbind(dim=1):
        h, _ = net.convlstm(latent, None)
    decoded = net.decoder(h)
    return add_change(frames[:, -1], decoded) if net.residual else decoded


def test_the_prediction_depends_on_the_first_frame_and_a_restarted_state_does_not() -> None:
    torch.manual_seed(0)
    net = RecurrentAutoencoder(1, **TINY_G).eval()
    frames = moving_blobs(2, 3, 32)
    assert first_frame_matters(net, frames)
    assert not first_frame_matters(lambda x: restarted_state_forward(net, x), frames)


def test_the_residual_decoder_starts_near_copy_last_learns_and_stays_recurrent() -> None:
    torch.manual_seed(0)
    net = RecurrentAutoencoder(1, **TINY_G, residual=True).eval()
    frames = moving_blobs(2, 4, 32)
    prediction = net(frames[:, :3])
    assert (prediction - frames[:, 2]).abs().max() < 0.05
    (prediction - frames[:, 3]).abs().mean().backward()
    assert net.encoder.levels[0][0].weight.grad.abs().sum() > 0
    assert first_frame_matters(net, frames[:, :3])
    assert not first_frame_matters(lambda x: restarted_state_forward(net, x), frames[:, :3])


def test_shapes_and_parameter_count_at_256() -> None:
    net = RecurrentAutoencoder(3)  # the defaults of conf/model/rgan_latent.yaml
    counts = {name: sum(p.numel() for p in part.parameters()) for name, part in net.named_children()}
    assert counts == {"encoder": 4_832_864, "convlstm": 73_856, "decoder": 2_477_763}
    assert sum(counts.values()) == 7_384_483  # as stated in vad.nets.autoencoder
    meta = net.to("meta")
    frames = torch.empty(2, 3, 3, 256, 256, device="meta")
    assert meta.latents(frames).shape == (2, 3, 32, 16, 16)  # the paper's 16x16x32 latent
    assert meta(frames).shape == (2, 3, 256, 256)
    assert RGANLatent(channels=3, clip_len=4).generator.convlstm.hidden == [32]


def test_trains_and_tests_on_the_synthetic_set(tmp_path: Path) -> None:
    run = tmp_path / "run"
    metrics = train(hydra_job("train", [*tiny_synthetic(tmp_path / "synthetic"), *TINY_RGAN_LATENT], run, tmp_path))
    assert metrics["frames"] == 2 * (36 - 3)
    header = (run / "scores.csv").read_text().splitlines()[0]
    assert header == "video,frame,label,score,prediction_loss,psnr"
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 2
    assert any(key.startswith("generator.convlstm.") for key in state["state_dict"])
    assert (run / "samples.png").is_file()
