"""vad.export: the TorchScript module and the ONNX model give the PyTorch model's signals (any batch size) and carry
what they need; vad.inference.exported loads either."""

from __future__ import annotations

import json
import logging
import re
import sys
from importlib import metadata as package_metadata
from pathlib import Path

import pytest
import torch
from hydra_runs import hydra_job, tiny_dataset
from omegaconf import OmegaConf
from packaging.requirements import Requirement
from tiny_runs import TINY_AMC

from vad.app.build import build_model, model_from_checkpoint
from vad.app.export import FILE_NAMES, export
from vad.data.batches import frames_to_float
from vad.errors import ConfigError
from vad.inference.exported import ExportedDetector
from vad.inference.exporters import EXPORTERS, export_onnx, export_torchscript, load_exported, metadata
from vad.inference.spec import InputSpec, eval_batch_size

TINY_MNAD = ["model=mnad", "model.net.features=2", "model.memory.num_items=4"]
FFP_SIGNALS = ["psnr", "patch_max", "intensity_error", "gradient_error", "flow_error"]
REPO = Path(__file__).resolve().parents[2]


def signals(model: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([v.float() for v in model.frame_signals({"frames": frames}).values()], dim=1)


@pytest.fixture(scope="module")
def ffp_run(tiny_ffp_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The session's tiny FFP (calibrated by vad.train), its model as vad.export loads it, and this module's folder."""
    home = tmp_path_factory.mktemp("export")
    ckpt = tiny_ffp_run["ckpt"]
    model, run_cfg = model_from_checkpoint(ckpt, hydra_job("export", [], home / "m", home))
    return {"home": home, "ckpt": ckpt, "model": model, "run_cfg": run_cfg}


#: the ``input`` block of a vad.json as every export so far wrote it (key order included)
WRITTEN_INPUT_BLOCK = {
    "layout": "B, T, C, H, W",
    "clip_len": 4,
    "frame_stride": 2,
    "image_size": [32, 48],
    "channels": 3,
    "colour": "RGB",
    "interpolation": "area",
    "values": "uint8 / 127.5 - 1, in [-1, 1]",
}


def test_the_input_spec_is_read_once_from_a_run_config_and_an_exports_input_block_keeps_its_keys() -> None:
    run_cfg = OmegaConf.create(
        {
            "model": {"clip_len": 4},
            "dataset": {"frame_stride": 2, "image_size": [32, 48], "channels": 3, "interpolation": "area",
                        "batch_size": 8, "eval_batch_size": 16},
        }
    )  # fmt: skip
    spec = InputSpec.of_run(run_cfg)
    assert spec == InputSpec(clip_len=4, frame_stride=2, size=(32, 48), channels=3, interpolation="area")
    assert spec.span == 7
    assert json.dumps(spec.to_metadata()) == json.dumps(WRITTEN_INPUT_BLOCK)
    assert InputSpec.from_metadata(WRITTEN_INPUT_BLOCK) == spec  # an old export loads
    grey = OmegaConf.create(
        {"model": {"clip_len": 5}, "dataset": {"image_size": [32, 32], "channels": 1, "batch_size": 8}}
    )
    assert InputSpec.of_run(grey) == InputSpec(clip_len=5, size=(32, 32), channels=1)  # stride 1, linear by default
    assert InputSpec.of_run(grey).to_metadata()["colour"] == "grey"
    assert eval_batch_size(run_cfg) == 16  # the batches of vad.evaluate
    assert eval_batch_size(grey) == 8
    assert eval_batch_size(run_cfg, 3) == 3


def test_a_trained_ffp_exports_with_its_calibration_and_matches_pytorch(ffp_run: dict) -> None:
    home = ffp_run["home"]
    out = home / "export_torchscript"
    export(hydra_job("export", [f"ckpt_path={ffp_run['ckpt']}"], out, home))
    module, info = load_exported(out / "model.pt")
    assert info["signals"] == FFP_SIGNALS
    assert info["input"]["image_size"] == [32, 32]
    assert info["input"]["clip_len"] == 5
    assert info["calibration"]["frames"] > 0  # vad.train calibrated the last checkpoint
    for batch in (2, 7):  # the traced batch size and another
        frames = torch.rand(batch, 5, 1, 32, 32) * 2 - 1
        with torch.no_grad():
            got = module(frames)
        torch.testing.assert_close(got, signals(ffp_run["model"], frames), rtol=0, atol=1e-4)


@pytest.mark.slow  # torch.onnx export of the FFP: over a minute; the TorchScript export above is the fast check
def test_a_trained_ffp_exports_to_one_onnx_file_with_a_dynamic_batch_and_its_metadata(
    ffp_run: dict, caplog: pytest.LogCaptureFixture
) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    home = ffp_run["home"]
    out = home / "export_onnx"
    caplog.set_level(logging.INFO)  # a Hydra job's level
    assert export(hydra_job("export", [f"ckpt_path={ffp_run['ckpt']}", "format=onnx"], out, home)) == {
        "path": str(out / "model.onnx")
    }
    chatter = [r.name for r in caplog.records if r.name.startswith(("onnxscript", "onnx_ir", "torch.onnx"))]
    assert chatter == []  # the optimiser's per-node INFO lines stay out of the run's log
    # one self-contained file: the weights inside (no external data), the metadata in its metadata_props
    assert sorted(p.name for p in out.iterdir() if p.suffix not in (".log", ".yaml")) == ["model.onnx"]
    proto = onnx.load(str(out / "model.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    info = json.loads(props["vad.json"])
    assert info == json.loads(json.dumps(metadata(ffp_run["model"], ffp_run["run_cfg"])))
    assert info["signals"] == FFP_SIGNALS
    assert info["calibration"]["frames"] > 0
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["vad.json"]) == info
    (frames_in,) = session.get_inputs()
    (signals_out,) = session.get_outputs()
    assert frames_in.name == "frames"
    assert signals_out.name == "signals"
    assert isinstance(frames_in.shape[0], str)  # the dynamic batch axis
    assert frames_in.shape[1:] == [5, 1, 32, 32]
    assert signals_out.shape[1:] == [len(FFP_SIGNALS)]
    for batch in (1, 2, 7):  # the exported batch size and others
        frames = torch.rand(batch, 5, 1, 32, 32) * 2 - 1
        got = torch.from_numpy(session.run(None, {"frames": frames.numpy()})[0])
        torch.testing.assert_close(got, signals(ffp_run["model"], frames), rtol=0, atol=1e-4)


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_mnad_exports_its_stateless_signals(tmp_path: Path, fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    cfg = hydra_job("train", [*tiny_dataset(tmp_path / "tiny"), *TINY_MNAD], tmp_path / "run", tmp_path)
    model = build_model(cfg).eval()
    path = EXPORTERS[fmt](model, cfg, tmp_path / FILE_NAMES[fmt])
    detector = ExportedDetector.load(path)
    assert detector.format == fmt
    assert detector.signals == ("psnr", "feature_distance")
    assert detector.calibration is None  # an untrained model has none
    assert detector.spec == InputSpec(clip_len=5, frame_stride=1, size=(32, 32), channels=1, interpolation="linear")
    for batch in (3, 7):
        frames = torch.rand(batch, 5, 1, 32, 32) * 2 - 1
        torch.testing.assert_close(detector(frames), signals(model, frames), rtol=0, atol=1e-4)
    by_name = detector.test_signals({"frames": frames})
    assert list(by_name) == ["psnr", "feature_distance"]
    torch.testing.assert_close(by_name["feature_distance"], signals(model, frames)[:, 1], rtol=0, atol=1e-4)
    shipped = torch.randint(0, 256, (3, 5, 1, 32, 32), dtype=torch.uint8)  # clips as the loaders ship them
    assert torch.equal(detector(shipped), detector(frames_to_float(shipped)))


def test_a_method_needing_flow_targets_is_refused(tmp_path: Path) -> None:
    cfg = hydra_job("train", [*tiny_dataset(tmp_path / "tiny"), *TINY_AMC], tmp_path / "run", tmp_path)
    model = build_model(cfg)
    with pytest.raises(ConfigError, match=r"AMC needs \['flows'\] besides the frames"):
        export_torchscript(model, cfg, tmp_path / "amc.pt")
    with pytest.raises(ConfigError, match=r"AMC needs \['flows'\] besides the frames"):
        export_onnx(model, cfg, tmp_path / "amc.onnx")
    with pytest.raises(ConfigError, match=r"format=tflite is not one of \['torchscript', 'onnx'\]"):
        export(hydra_job("export", ["ckpt_path=x.ckpt", "format=tflite"], tmp_path / "e", tmp_path))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_graph_that_fixes_the_batch_size_is_refused_and_not_written(tmp_path: Path, fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    cfg = hydra_job("train", [*tiny_dataset(tmp_path / "tiny"), "model=copy_last"], tmp_path / "run", tmp_path)
    model = build_model(cfg).eval()

    def clip_by_clip(batch: dict) -> dict[str, torch.Tensor]:  # a Python loop over the batch: exported as constants
        frames = batch["frames"]
        return {"psnr": torch.stack([frames[i].mean() for i in range(frames.shape[0])])}

    object.__setattr__(model, "frame_signals", clip_by_clip)
    path = tmp_path / FILE_NAMES[fmt]
    with pytest.raises(ConfigError, match=rf"CopyLast: the exported {fmt} model does not give the signals at batch "):
        EXPORTERS[fmt](model, cfg, path)
    assert not path.exists()


def test_without_the_onnx_extra_onnx_fails_in_one_line_naming_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("onnx", "onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError
    install = re.escape('pip install -e ".[onnx]"')
    missing = r"\(onnx, onnxscript, onnxruntime missing\)"
    with pytest.raises(ConfigError, match=rf"ONNX needs the onnx extra {missing}: {install}$"):
        export(hydra_job("export", ["ckpt_path=x.ckpt", "format=onnx"], tmp_path / "e", tmp_path))
    model_file = tmp_path / "model.onnx"
    model_file.write_bytes(b"\x08\x07")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(model_file))}: running an ONNX model needs onnxruntime: "):
        ExportedDetector.load(model_file)


def test_the_onnx_extra_is_declared_and_installed_by_make_install() -> None:
    # pyproject.toml's [project.optional-dependencies] line (tomllib is not in Python 3.10, which vad supports)
    line = re.search(r"^onnx = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), flags=re.MULTILINE)
    assert line is not None
    extra = [Requirement(r) for r in re.findall(r'"([^"]+)"', line.group(1))]
    assert sorted(r.name for r in extra) == ["onnx", "onnxruntime", "onnxscript"]
    for requirement in extra:  # the lower bounds hold for what is installed here
        try:
            installed = package_metadata.version(requirement.name)
        except package_metadata.PackageNotFoundError:
            continue
        assert requirement.specifier.contains(installed), (requirement, installed)
    # make install (what CI runs before make test) installs it with dev, so CI runs the ONNX tests
    assert re.search(r'pip install .*-e "\.\[dev,onnx\]"', (REPO / "Makefile").read_text())
