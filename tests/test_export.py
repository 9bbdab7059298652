"""vad.export: the TorchScript module gives the PyTorch model's signals (any batch size) and carries what it needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hydra_runs import TINY_FFP, hydra_job, tiny_dataset
from test_amc import TINY_AMC
from vad.build import build_model
from vad.errors import ConfigError
from vad.export import export, export_torchscript, load_exported
from vad.train import train

TINY_MNAD = ["model=mnad", "model.net.features=2", "model.memory.num_items=4"]


def signals(model: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([v.float() for v in model.frame_signals({"frames": frames}).values()], dim=1)


def test_a_trained_ffp_exports_with_its_calibration_and_matches_pytorch(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    run = tmp_path / "run"
    train(hydra_job("train", [*data, *TINY_FFP, "test=false"], run, tmp_path))
    out = tmp_path / "export"
    export(hydra_job("export", [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], out, tmp_path))
    module, info = load_exported(out / "model.pt")
    assert info["signals"] == ["psnr", "patch_max", "intensity_error", "gradient_error", "flow_error"]
    assert info["input"]["image_size"] == [32, 32]
    assert info["input"]["clip_len"] == 5
    assert info["calibration"]["frames"] > 0  # vad.train calibrated the last checkpoint
    from vad.build import model_from_checkpoint

    model, _ = model_from_checkpoint(
        run / "checkpoints" / "last.ckpt", hydra_job("export", [], tmp_path / "m", tmp_path)
    )
    for batch in (2, 7):  # the traced batch size and another
        frames = torch.rand(batch, 5, 1, 32, 32) * 2 - 1
        with torch.no_grad():
            got = module(frames)
        torch.testing.assert_close(got, signals(model, frames), rtol=0, atol=1e-4)


def test_mnad_exports_its_stateless_signals(tmp_path: Path) -> None:
    cfg = hydra_job("train", [*tiny_dataset(tmp_path / "tiny"), *TINY_MNAD], tmp_path / "run", tmp_path)
    model = build_model(cfg).eval()
    path = export_torchscript(model, cfg, tmp_path / "mnad.pt")
    module, info = load_exported(path)
    assert info["signals"] == ["psnr", "feature_distance"]
    frames = torch.rand(3, 5, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(module(frames), signals(model, frames), rtol=0, atol=1e-4)


def test_a_method_needing_flow_targets_is_refused(tmp_path: Path) -> None:
    cfg = hydra_job("train", [*tiny_dataset(tmp_path / "tiny"), *TINY_AMC], tmp_path / "run", tmp_path)
    with pytest.raises(ConfigError, match=r"AMC needs \['flows'\] besides the frames"):
        export_torchscript(build_model(cfg), cfg, tmp_path / "amc.pt")
    with pytest.raises(ConfigError, match="format=onnx is not one of"):
        export(hydra_job("export", ["ckpt_path=x.ckpt", "format=onnx"], tmp_path / "e", tmp_path))
