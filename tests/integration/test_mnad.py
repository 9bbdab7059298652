"""MNAD: nets, losses, the training step and its memory update, the test-time memory, configs and runs."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from hydra_runs import hydra_job, tiny_dataset
from moving_blobs import BlobClips, moving_blobs
from torch.utils.data import DataLoader

from vad.app.build import build_model
from vad.app.evaluate import evaluate
from vad.app.train import train
from vad.data.batches import frames_to_float
from vad.data.datamodule import VideoDataModule
from vad.errors import ConfigError
from vad.methods import losses
from vad.methods.loops import split_by_video
from vad.methods.mnad import MNAD
from vad.nets import MNADDecoder, MNADEncoder

RUN = [
    "debug=tiny",
]
TINY_MNAD = ["model.net.features=2", "model.memory.num_items=4", *RUN]


def tiny_mnad(clip_len: int = 3, **kwargs: object) -> MNAD:
    """Widths 2/4/8 and 16-d queries, 4 memory items, grey frames."""
    kwargs = {"net": {"features": 2}, "memory": {"num_items": 4}} | kwargs
    return MNAD(channels=1, clip_len=clip_len, **kwargs)


def fit(model: MNAD, tmp_path: Path, **trainer_args: object) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **trainer_args,
    )
    trainer.fit(model, DataLoader(BlobClips(8, model.clip_len), batch_size=2))
    return trainer


# ---------------------------------------------------------------------------------------------------------- nets
def test_encoder_and_both_decoders_shapes() -> None:
    encoder = MNADEncoder(8, features=2)
    features, skips = encoder(torch.zeros(3, 8, 32, 40))
    assert features.shape == (3, 16, 4, 5)
    assert [s.shape[1:] for s in skips] == [(2, 32, 40), (4, 16, 20), (8, 8, 10)]
    queries_and_read = torch.zeros(3, 32, 4, 5)
    assert MNADDecoder(1, features=2)(queries_and_read, skips).shape == (3, 1, 32, 40)
    assert MNADDecoder(1, features=2, skips=False)(queries_and_read).shape == (3, 1, 32, 40)
    with pytest.raises(ValueError, match="not divisible by 8"):
        encoder(torch.zeros(1, 8, 36, 32))
    with pytest.raises(ValueError, match="pass the encoder's skips to a decoder built with skips=True"):
        MNADDecoder(1, features=2, skips=False)(queries_and_read, skips)


def test_paper_sized_nets_have_the_documented_parameter_counts() -> None:
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(MNADEncoder(12)) == 4_693_376
    assert count(MNADDecoder(3)) == 10_957_443
    assert count(MNADEncoder(3)) == 4_688_192
    assert count(MNADDecoder(3, skips=False)) == 10_183_299


# ---------------------------------------------------------------------------------------------------------- losses
def test_compactness_and_separateness_by_hand() -> None:
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    nearest = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert losses.compactness_loss(queries, nearest).item() == pytest.approx(0.5)  # (0 + 0 + 1 + 1) / 4
    anchors = torch.zeros(2, 2)
    positives = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    negatives = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    # max(0, 5 - 1 + 1) = 5 and max(0, 1 - 5 + 1) = 0 -> mean 2.5
    assert losses.separateness_loss(anchors, positives, negatives).item() == pytest.approx(2.5, abs=1e-5)
    assert losses.separateness_loss(anchors, positives, negatives, margin=5.0).item() == pytest.approx(
        (9 + 1) / 2, abs=1e-5
    )
    with pytest.raises(ValueError, match="queries and positives must have the same shape"):
        losses.compactness_loss(queries, nearest[:1])


def test_weighted_regular_score_by_hand() -> None:
    target = torch.tensor([1.0, -1.0, 0.2, 0.0]).reshape(1, 1, 2, 2)
    pred = torch.zeros(1, 1, 2, 2)
    errors = [0.25, 0.25, 0.01, 0.0]  # ((P - G) / 2)^2
    weights = [1 - math.exp(-e) for e in errors]
    expected = sum(w * e for w, e in zip(weights, errors, strict=True)) / sum(weights)
    score = losses.weighted_regular_score(torch.cat([pred, target]), torch.cat([target, target]))
    assert score[0].item() == pytest.approx(expected, rel=1e-6)
    assert score[1].item() == 0.0  # a perfect prediction is normal, not 0/0


# ---------------------------------------------------------------------------------------------------------- training
def test_training_step_uses_the_memory_before_its_update_and_updates_after_the_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_mnad(optim={"anneal": "none"})
    start = copy.deepcopy(model).train()
    frames = BlobClips(2).frames  # the one batch fit() trains on (batch_size 2, no shuffling)
    clip = start.split_clip(frames)
    inputs, target = clip.stacked, clip.target
    with torch.no_grad():
        output, out = start(inputs)
        expected_loss = start.weighted_sum(start.loss_terms_of(output, target, out))
        expected_items = start.memory.updated(out)
    trainer = fit(model, tmp_path, max_steps=1)
    assert trainer.logged_metrics["train/loss"].item() == pytest.approx(expected_loss.item(), rel=1e-5)
    torch.testing.assert_close(model.memory.items, expected_items)
    assert not torch.equal(model.memory.items, start.memory.items)
    logged = set(trainer.logged_metrics)
    assert {"train/loss_intensity", "train/loss_compactness", "train/loss_separateness"} <= logged
    assert trainer.logged_metrics["train/memory_items_used"].item() == out.nearest.unique().numel()
    # one optimiser over the nets only: the memory is a buffer
    (optimizer,) = trainer.optimizers
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.parameters()}
    assert "memory.items" in model.state_dict()


def test_zero_weight_skips_its_term(tmp_path: Path) -> None:
    model = tiny_mnad(loss={"intensity": 1.0, "compactness": 0.1, "separateness": 0.0})
    trainer = fit(model, tmp_path, max_steps=1)
    assert "train/loss_separateness" not in trainer.logged_metrics
    assert "train/loss_compactness" in trainer.logged_metrics


class LearningRates(L.Callback):
    """The learning rate each training batch runs with."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_cosine_annealing_per_iteration_or_per_epoch(tmp_path: Path) -> None:
    cosine = [2e-4 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    # anneal=step: over the run's 4 iterations (max_steps), stepped after each
    rates = LearningRates()
    fit(tiny_mnad(), tmp_path, max_steps=4, callbacks=[rates])
    assert rates.seen == pytest.approx(cosine, rel=1e-9)
    # anneal=epoch (the reference): over max_epochs, stepped at each epoch's end
    rates = LearningRates()
    fit(tiny_mnad(optim={"anneal": "epoch"}), tmp_path, max_epochs=4, limit_train_batches=1, callbacks=[rates])
    assert rates.seen == pytest.approx(cosine, rel=1e-9)
    with pytest.raises(ConfigError, match=r"anneals over trainer\.max_epochs, which is not set"):
        fit(tiny_mnad(optim={"anneal": "epoch"}), tmp_path, max_steps=1, max_epochs=-1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": {"intensity": 1.0, "compactnes": 0.1}}, r"unknown term\(s\) \['compactnes'\]"),
        ({"task": "reconstruction"}, "model.clip_len must be 1 for reconstruction"),
        ({"clip_len": 1}, "model.clip_len must be >= 2 for frame prediction"),
        ({"task": "segmentation"}, "model.task='segmentation' is not one of"),
        ({"test_memory": {"between_videos": "keep"}}, "model.test_memory.between_videos='keep' is not one of"),
        ({"test_memory": {"gamma": -1}}, "model.test_memory.gamma must be a number >= 0 or null"),
        ({"optim": {"anneal": "linear"}}, "model.optim.anneal='linear' is not one of"),
        ({"score": {"psnr": -0.6, "distance": 0.4}}, "score weights name unknown signal"),
    ],
)
def test_config_errors_name_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_mnad(**kwargs)


# ---------------------------------------------------------------------------------------------------------- test time
def test_split_by_video_cuts_a_batch_at_video_boundaries() -> None:
    batch = {
        "frames": torch.arange(5.0).reshape(5, 1),
        "video": ["01", "01", "02", "02", "03"],
        "video_id": torch.tensor([0, 0, 1, 1, 2]),
        "index": torch.tensor([7, 8, 4, 5, 4]),
    }
    parts = split_by_video(batch)
    assert [p["video"] for p in parts] == [["01", "01"], ["02", "02"], ["03"]]
    assert [p["index"].tolist() for p in parts] == [[7, 8], [4, 5], [4]]
    torch.testing.assert_close(parts[1]["frames"], torch.tensor([[2.0], [3.0]]))
    assert split_by_video({**batch, "video_id": torch.zeros(5, dtype=torch.long)})[0]["frames"] is batch["frames"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    tiny_dataset(root)
    return root


def run_test(model: MNAD, root: Path, eval_batch_size: int) -> list[dict[str, np.ndarray]]:
    """trainer.test on the tiny set (2 test videos, 5 + 4 scored frames); per-video raw signals."""
    datamodule = VideoDataModule(
        "tiny",
        root,
        image_size=(32, 32),
        channels=1,
        clip_len=model.clip_len,
        eval_batch_size=eval_batch_size,
        cache_dir=root.parent / f"{root.name}_cache",
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    return [video.signals for video in model.test_result.videos]


def clips_of(root: Path, clip_len: int) -> list[torch.Tensor]:
    """Each test video's clips (F, T, 1, 32, 32) in frame order, through the real datamodule, converted to [-1, 1]
    as the method converts the uint8 batches on its device."""
    datamodule = VideoDataModule(
        "tiny", root, image_size=(32, 32), channels=1, clip_len=clip_len, cache_dir=root.parent / f"{root.name}_cache"
    )
    datamodule.setup("test")
    batch = next(iter(DataLoader(datamodule.test_dataset, batch_size=64, collate_fn=lambda items: items)))
    ids = np.array([item["video_id"] for item in batch])
    stacked = [torch.stack([item["frames"] for item in batch if item["video_id"] == v]) for v in np.unique(ids)]
    return [frames_to_float(clips) for clips in stacked]


def sequential_signals(model: MNAD, videos: list[torch.Tensor], reset: bool) -> list[dict[str, np.ndarray]]:
    """The reference's loop: one frame at a time, memory updated after every frame (gamma large), then next."""
    items = model.memory.items.clone()
    result = []
    with torch.no_grad():
        for clips in videos:
            items = model.memory.items.clone() if reset else items
            psnr, distance = [], []
            for clip in clips:
                cut = model.split_clip(clip[None])
                output, out = model(cut.stacked, items)
                target = cut.target
                psnr.append(losses.psnr(output, target).item())
                distance.append(out.nearest_distance().item())
                items = model.memory.updated(out)
            result.append({"psnr": np.array(psnr), "feature_distance": np.array(distance)})
    return result


@pytest.mark.parametrize("between_videos", ["carry", "reset"])
def test_test_time_updates_follow_frame_order_whatever_the_batch_size(tiny_root: Path, between_videos: str) -> None:
    torch.manual_seed(0)
    model = tiny_mnad(clip_len=5, test_memory={"gamma": 1e9, "between_videos": between_videos}).eval()
    trained = model.memory.items.clone()
    expected = sequential_signals(model, clips_of(tiny_root, 5), reset=between_videos == "reset")
    for eval_batch_size in (1, 4):  # 4: the second batch holds video 1's last frame and video 2's first three
        got = run_test(model, tiny_root, eval_batch_size)
        for video, want in zip(got, expected, strict=True):
            for name in ("psnr", "feature_distance"):
                np.testing.assert_allclose(video[name], want[name], rtol=1e-5, err_msg=f"{name} @ {eval_batch_size}")
    assert torch.equal(model.memory.items, trained)  # the test updates a copy, never the trained memory


def test_reset_restarts_each_video_from_the_trained_memory_and_carry_does_not(tiny_root: Path) -> None:
    torch.manual_seed(0)
    model = tiny_mnad(clip_len=5, test_memory={"gamma": 1e9, "between_videos": "carry"}).eval()
    clips = clips_of(tiny_root, 5)
    with torch.no_grad():  # video 2, first frame, read with the trained memory
        fresh = model.frame_signals({"frames": clips[1][:1]})["feature_distance"].item()
    carried = run_test(model, tiny_root, 4)
    model.test_memory["between_videos"] = "reset"
    restarted = run_test(model, tiny_root, 4)
    assert restarted[1]["feature_distance"][0] == pytest.approx(fresh, rel=1e-5)
    assert carried[1]["feature_distance"][0] < fresh / 10  # the carried memory learnt video 1's queries
    # video 1 starts from the trained memory in both
    np.testing.assert_allclose(carried[0]["feature_distance"], restarted[0]["feature_distance"], rtol=1e-6)


def test_without_test_time_update_the_signals_are_the_stateless_ones(tiny_root: Path) -> None:
    torch.manual_seed(0)
    model = tiny_mnad(clip_len=5, test_memory={"gamma": None}).eval()
    clips = clips_of(tiny_root, 5)
    with torch.no_grad():
        expected = [model.frame_signals({"frames": c}) for c in clips]
    got = run_test(model, tiny_root, 3)
    for video, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(video["psnr"], want["psnr"].numpy(), rtol=1e-5)
        np.testing.assert_allclose(video["feature_distance"], want["feature_distance"].numpy(), rtol=1e-5)
    # gamma 0: no weighted regular score is below it, the same signals as no update at all
    model.test_memory["gamma"] = 0.0
    for video, want in zip(run_test(model, tiny_root, 3), expected, strict=True):
        np.testing.assert_allclose(video["psnr"], want["psnr"].numpy(), rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------- runs
def test_model_ffp_and_model_mnad_take_the_same_dataset_and_trainer(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    for model_name in ("ffp", "mnad", "mnad_recon"):
        cfg = hydra_job("train", [*data, *RUN, f"model={model_name}"], tmp_path / model_name, tmp_path)
        model = build_model(cfg)
        datamodule = instantiate(cfg.dataset, _convert_="all")
        assert model.channels == datamodule.channels == 1
        assert model.clip_len == datamodule.clip_len


@pytest.mark.slow
def test_switching_ffp_and_mnad_trains_both_with_no_other_override(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    for model_name in ("ffp", "mnad"):
        metrics = train(hydra_job("train", [*data, *RUN, f"model={model_name}"], tmp_path / model_name, tmp_path))
        assert metrics["frames"] == (9 - 4) + (8 - 4)


def test_train_then_evaluate_restores_the_trained_memory(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    overrides = [*data, *TINY_MNAD, "model=mnad", "model.test_memory.gamma=1000"]
    run = tmp_path / "run"
    trained = train(hydra_job("train", overrides, run, tmp_path))
    header = (run / "scores.csv").read_text().splitlines()[0]
    assert header == "video,frame,label,score,psnr,feature_distance"
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    initial = build_model(hydra_job("train", overrides, tmp_path / "fresh", tmp_path)).memory.items
    assert not torch.equal(state["memory.items"], initial)  # three updates moved it
    for_eval = [o for o in overrides if not o.startswith("callbacks.")]  # vad.evaluate has no callbacks group
    again = evaluate(hydra_job("eval", [*for_eval, f"ckpt_path={ckpt}"], tmp_path / "eval", tmp_path))
    for key in ("auc_micro", "auc_macro", "ap"):
        assert again[key] == pytest.approx(trained[key], abs=1e-9), key
    assert (tmp_path / "eval" / "scores.csv").read_text() == (run / "scores.csv").read_text()


def test_reconstruction_variant_trains_and_scores_every_frame(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    metrics = train(hydra_job("train", [*data, *TINY_MNAD, "model=mnad_recon"], tmp_path / "run", tmp_path))
    assert metrics["frames"] == 9 + 8  # clip_len 1: no frame is dropped
    assert metrics["weights"] == {"psnr": -0.7, "feature_distance": 0.3}


def test_sample_panels_add_the_memory_distance_map() -> None:
    torch.manual_seed(0)
    model = tiny_mnad().eval()
    batch = {"frames": moving_blobs(2, 3, 32)}
    with torch.no_grad():
        shown = model.sample_panels(batch)
        distance = model.frame_signals(batch)["feature_distance"]
    assert list(shown) == ["last input", "prediction", "target", "error", "memory distance"]
    assert shown["memory distance"].kind == "heatmap"
    assert shown["memory distance"].data.shape == (2, 4, 4)  # the query map of 32x32 frames (three poolings)
    torch.testing.assert_close(shown["memory distance"].data.mean(dim=(1, 2)), distance)
