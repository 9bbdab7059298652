"""The pseudo-anomaly method: the inverted flow term reaches the pseudo branch and is bounded, every net steps, the
fused score has one polarity, the classifier, the VGG19 perceptual loss loaded without torchvision, config errors."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra_runs import hydra_job, tiny_synthetic
from moving_blobs import BlobClips, moving_blobs
from torch.utils.data import DataLoader

from vad.app.train import train
from vad.data.batches import collate_clips
from vad.errors import ConfigError
from vad.evaluation.fusion import fuse
from vad.flow import LucasKanade
from vad.methods.pseudo_anomaly import PseudoAnomaly
from vad.nets.classifier import FrameClassifier
from vad.nets.vgg19 import VGG19Features, perceptual_loss, vgg19_layers

TINY = {
    "generator": {"features": 4, "depth": 2},
    "discriminator": {"features": [4, 8, 8, 8]},
    "classifier": {"features": [4, 8, 8, 8]},
}


def tiny(**kwargs: object) -> PseudoAnomaly:
    settings = TINY | {"frozen": {"flow": LucasKanade()}} | kwargs
    return PseudoAnomaly(channels=1, clip_len=3, **settings)


def fit_one_step(model: PseudoAnomaly, tmp_path: Path) -> None:
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(model, DataLoader(BlobClips(4, t=3), batch_size=4, collate_fn=collate_clips))


def test_the_inverted_flow_term_moves_the_pseudo_branch_and_only_it(tmp_path: Path) -> None:
    runs = {}
    for weight in (-1.0, 0.0):
        torch.manual_seed(0)
        # a bound far above the untrained branch's flow error, so the term is active in this one step
        loss = {"intensity": 1.0, "flow": 1.0, "adversarial": 0.05, "inverted_flow": weight, "classifier": 1}
        model = tiny(loss=loss, flow_bound=1e6)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        fit_one_step(model, tmp_path / str(weight))
        runs[weight] = (start, model.state_dict())
    (start_a, end_a), (start_b, end_b) = runs[-1.0], runs[0.0]
    assert all(torch.equal(start_a[k], start_b[k]) for k in start_a)  # the same initial weights
    pseudo = [k for k in end_a if k.startswith("pseudo_generator.")]
    normal = [k for k in end_a if k.startswith("generator.")]
    assert any(not torch.equal(end_a[k], end_b[k]) for k in pseudo)  # the inversion changes the pseudo branch's step
    assert all(torch.equal(end_a[k], end_b[k]) for k in normal)  # and nothing of the normal branch
    assert any(not torch.equal(start_a[k], end_a[k]) for k in end_a if k.startswith("pseudo_discriminator."))
    assert any(not torch.equal(start_a[k], end_a[k]) for k in end_a if k.startswith("discriminator."))
    assert any(not torch.equal(start_a[k], end_a[k]) for k in end_a if k.startswith("classifier."))


def test_the_flow_term_gives_the_pseudo_generator_a_gradient_through_the_estimator() -> None:
    torch.manual_seed(0)
    model = tiny(flow_bound=50.0)
    clip = model.split_clip(moving_blobs(2, t=3))
    with torch.no_grad():
        target_flow = model.flow(clip.last, clip.target)
    error = model.flow_error(clip, model.pseudo_generator(clip.stacked), target_flow)
    (model.weight("inverted_flow") * model.inverted_flow_term(error)).backward()
    grads = [p.grad for p in model.pseudo_generator.parameters() if p.grad is not None]
    assert grads
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in model.generator.parameters())


def test_the_bound_holds_when_the_flow_error_grows() -> None:
    model = tiny(flow_bound=1.5)
    for value, slope in ((0.5, 1.0), (1.5 + 1e-3, 0.0), (40.0, 0.0)):
        error = torch.tensor(value, requires_grad=True)
        term = model.weight("inverted_flow") * model.inverted_flow_term(error)
        term.backward()
        assert term.item() >= model.weight("inverted_flow") * 1.5 - 1e-6  # never below -factor x bound
        assert error.grad.item() == pytest.approx(model.weight("inverted_flow") * slope)


def test_a_frame_worse_on_both_signals_scores_higher() -> None:
    weights = tiny().score_weights
    rng = np.random.default_rng(0)
    psnr = rng.uniform(30, 31, 50)
    probability = rng.uniform(0.4, 0.5, 50)
    psnr[20], probability[20] = 25.0, 0.9  # worse on both: lower PSNR, more likely a pseudo-anomaly
    psnr[30] = 25.0  # worse on PSNR only
    probability[40] = 0.9  # worse on the classifier only
    score = fuse({"psnr": psnr, "abnormal_probability": probability}, weights)
    assert score.argmax() == 20
    assert score[20] > score[30] > np.median(score)
    assert score[20] > score[40] > np.median(score)


def test_the_classifier_and_the_signals() -> None:
    net = FrameClassifier(1, features=[4, 8])
    assert net(torch.zeros(3, 1, 32, 48)).shape == (3, 2)  # any working size
    model = tiny().eval()
    batch = {"frames": moving_blobs(3, t=3)}
    with torch.no_grad():
        signals = model.frame_signals(batch)
        panels = model.sample_panels(batch)
    assert set(signals) == {"psnr", "abnormal_probability"}
    assert ((signals["abnormal_probability"] >= 0) & (signals["abnormal_probability"] <= 1)).all()
    assert {"prediction", "pseudo-anomaly branch", "pseudo-anomaly error"} <= set(panels)


# ------------------------------------------------------------------------------------------- VGG19 without torchvision
#: the conv layers of torchvision's vgg19().features, by index
TORCHVISION_CONVS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


def torchvision_file(path: Path) -> Path:
    """A state dict with torchvision's VGG19 keys and shapes (random values): features.* and classifier.*."""
    torch.manual_seed(1)
    state = {f"features.{k}": v for k, v in vgg19_layers().state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4096, 25088)[:8]  # present in the real file; ignored
    torch.save(state, path)
    return path


def test_vgg19_layers_carry_torchvision_keys_and_load(tmp_path: Path) -> None:
    keys = vgg19_layers().state_dict().keys()
    assert sorted({int(k.split(".")[0]) for k in keys}) == TORCHVISION_CONVS
    path = torchvision_file(tmp_path / "vgg19.pth")
    net = VGG19Features(path)
    saved = torch.load(path, weights_only=True)
    assert torch.equal(net.features[0].weight, saved["features.0.weight"])
    assert torch.equal(net.features[25].bias, saved["features.25.bias"])
    assert len(net.features) == 27  # up to relu4_4
    frames = torch.rand(1, 1, 32, 32) * 2 - 1  # one item, grey: the layers, not the batch, are averaged
    assert [m.shape[1] for m in net(frames)] == [64, 128, 256, 512]
    assert perceptual_loss(net, frames, frames).item() == 0.0
    assert perceptual_loss(net, frames, -frames).item() > 0.0


def test_vgg19_weights_missing_or_of_another_net_are_refused_with_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"perceptual.weights: .*nowhere.pth not found; give perceptual.weights"):
        VGG19Features(tmp_path / "nowhere.pth")
    with pytest.raises(ConfigError, match=r"perceptual\.weights is not set"):
        VGG19Features(None)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, other)
    with pytest.raises(ConfigError, match=r"resnet.pth is not a torchvision VGG19 state dict \(missing \['features.0"):
        VGG19Features(other)
    narrow = tmp_path / "narrow.pth"
    state = {f"features.{k}": v for k, v in vgg19_layers().state_dict().items()}
    state["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save(state, narrow)
    with pytest.raises(ConfigError, match=r"shape of features.0.weight is \(32, 3, 3, 3\); expected \(64, 3, 3, 3\)"):
        VGG19Features(narrow)


def test_config_errors_name_the_key_and_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"inverted_flow=1.0 must be <= 0"):
        tiny(loss={"intensity": 1, "inverted_flow": 1.0, "classifier": 1})
    with pytest.raises(ConfigError, match=r"model.loss.perceptual=1.0 needs a VGG19 feature extractor"):
        tiny(loss={"intensity": 1, "perceptual": 1.0, "classifier": 1})
    with pytest.raises(ConfigError, match=r"model.flow_bound must be > 0"):
        tiny(flow_bound=0)


TINY_RUN = [
    "model=pseudo_anomaly", "model.generator.features=4", "model.generator.depth=2",
    "model.discriminator.features=[4,8,8,8]", "model.classifier.features=[4,8,8,8]", "model.clip_len=3",
    "trainer.max_steps=2", "debug=tiny",
]  # fmt: skip


def test_trains_and_tests_under_a_real_trainer_with_a_perceptual_loss(tmp_path: Path) -> None:
    weights = torchvision_file(tmp_path / "vgg19.pth")
    overrides = [
        *tiny_synthetic(tmp_path / "synthetic"), *TINY_RUN, "model.loss.perceptual=0.1", "perceptual=vgg19",
        f"perceptual.weights={weights}",
    ]  # fmt: skip
    run = tmp_path / "run"
    metrics = train(hydra_job("train", overrides, run, tmp_path))
    assert 0.0 <= metrics["auc_micro"] <= 1.0
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    logged = (
        "perceptual",
        "pseudo_loss_inverted_flow",
        "pseudo_flow_error",
        "pseudo_flow_bound",
        "pseudo_loss_d",
        "loss_d",
    )
    for key in [*logged, "loss_classifier", "classifier_accuracy"]:
        assert f"train/{key}".replace("train/perceptual", "train/loss_perceptual") in header, key
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2  # the pseudo branch, both discriminators and the classifier do not count
    assert not any(k.startswith("_frozen") or "features." in k for k in state["state_dict"] if "classifier" not in k)


def test_a_non_differentiable_flow_estimator_is_refused_for_the_inversion(tmp_path: Path) -> None:
    overrides = [*tiny_synthetic(tmp_path / "s"), *TINY_RUN, "flow=dis", "model.loss.flow=0"]
    with pytest.raises(ConfigError, match=r"model.loss.inverted_flow=-2.0 backpropagates through the flow estimator"):
        train(hydra_job("train", overrides, tmp_path / "run", tmp_path))
