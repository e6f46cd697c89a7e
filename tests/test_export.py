"""``export``: the ONNX and TorchScript files give the checkpoint's ``predict`` probabilities from [0, 1] pixels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from fmnist_lightning.commands.convert_keras import save_converted_checkpoint
from fmnist_lightning.commands.export import export_command
from fmnist_lightning.commands.main import main
from fmnist_lightning.fashion_mnist import MEAN, STD
from fmnist_lightning.models import (
    MODELS,
    CustomCNN,
    EfficientNet,
    FashionMNISTClassifier,
    FastCNN,
    LeNet5,
    WideResNet,
)
from fmnist_lightning.training.speed import SpeedSettings
from support import REPO, write_checkpoint

# the tests load the TorchScript files with torch.jit.load, deprecated in torch 2.14 like all of TorchScript
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
BATCH = 5  # not the export's example batch of 2: the files must take any batch size
ONNX_TOLERANCE, TORCHSCRIPT_TOLERANCE = 1e-5, 1e-6
# the two largest models at their smallest sizes, same blocks, a fraction of the export time: timm's test EfficientNet
# (the inverted residuals, squeeze-excitation and drop path of the default efficientnet_b0) and WRN-10-1
SMALL = {EfficientNet: {"model_name": "test_efficientnet"}, WideResNet: {"depth": 10, "widen_factor": 1}}
# (model, its hyperparameters, whether it standardises its inputs, the speed settings it trained with): every model,
# then standardisation with test-time flips, and the speed settings that must not reach the exported file
CASES = [(model_class, SMALL.get(model_class, {}), False, {}) for model_class in MODELS] + [
    (LeNet5, {"tta_flip": True}, True, {}),
    (FastCNN, {}, True, {"channels_last": True, "compile": True}),
]


def case_id(case: tuple[type[FashionMNISTClassifier], dict, bool, dict]) -> str:
    model_class, hparams, standardize, speed = case
    flags = [name for name, value in {**hparams, **speed}.items() if value is True]
    return "-".join([model_class.__name__, *flags, *(["standardize"] if standardize else [])])


def predict_probabilities(model: FashionMNISTClassifier, images: torch.Tensor, standardize: bool) -> np.ndarray:
    """What ``predict`` returns for pixels in [0, 1]: standardised as in training (here by hand, torchvision's
    normalize with Fashion-MNIST's mean and std, the model's own standardisation switched off), then the model's
    ``predict_step`` (softmax, and the mean over image and mirror image with ``tta_flip``)."""
    own, model.standardize = model.standardize, False
    try:
        with torch.no_grad():
            return model.predict_step(TF.normalize(images, [MEAN], [STD]) if standardize else images, 0).numpy()
    finally:
        model.standardize = own


def run_onnx(path: Path, images: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (model_input,), (model_output,) = session.get_inputs(), session.get_outputs()
    assert (model_input.name, model_input.shape) == ("images", ["batch", 1, 28, 28])
    assert (model_output.name, model_output.shape) == ("probabilities", ["batch", 10])
    (probabilities,) = session.run(None, {"images": images.numpy()})
    return probabilities


def run_torchscript(path: Path, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.jit.load(path).eval()(images).numpy()


RUNNERS = {"onnx": (run_onnx, ONNX_TOLERANCE), "torchscript": (run_torchscript, TORCHSCRIPT_TOLERANCE)}


def export_ok(capsys: pytest.CaptureFixture, *args: str) -> None:
    assert export_command(list(args)) == 0
    assert capsys.readouterr().out.startswith("wrote ")


@pytest.mark.parametrize("export_format", RUNNERS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_exported_file_gives_the_models_probabilities_for_any_batch_size(tmp_path, capsys, case, export_format):
    model_class, hparams, standardize, speed = case
    torch.manual_seed(0)
    model = model_class(**hparams, standardize=standardize).eval()
    SpeedSettings(**speed).apply(model)
    checkpoint = write_checkpoint(model, tmp_path / "model.ckpt")
    out = tmp_path / f"model.{export_format}"
    export_ok(capsys, "--ckpt_path", str(checkpoint), "--format", export_format, "--out", str(out))
    run, tolerance = RUNNERS[export_format]
    images = torch.rand(BATCH, 1, 28, 28)
    probabilities = run(out, images)
    expected = predict_probabilities(model, images, standardize)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=tolerance)
    if standardize:  # the file standardises itself: its users pass plain x / 255
        assert np.abs(probabilities - predict_probabilities(model, images, standardize=False)).max() > 1e-3


@pytest.mark.parametrize("export_format", RUNNERS)
@pytest.mark.parametrize("name", ["lenet", "lenet_plus"])  # lenet_plus: standardised, tta_flip and channels_last
def test_published_weights_export_into_the_current_directory(tmp_path, monkeypatch, capsys, name, export_format):
    published = REPO / "weights" / f"{name}.ckpt"
    monkeypatch.chdir(tmp_path)
    export_ok(capsys, "--ckpt_path", str(published), "--format", export_format)
    (written,) = tmp_path.iterdir()  # <checkpoint stem>.onnx or .pt, and no partial file left behind
    assert written.name == f"{name}.{'onnx' if export_format == 'onnx' else 'pt'}"
    run, tolerance = RUNNERS[export_format]
    images = torch.rand(BATCH, 1, 28, 28)
    standardize = torch.load(published, weights_only=True)["datamodule_hyper_parameters"]["standardize"]
    model = LeNet5.load_from_checkpoint(published, map_location="cpu").eval()
    assert model.standardize is standardize  # the data module's setting in checkpoints older than the model's own
    expected = predict_probabilities(model, images, standardize)
    np.testing.assert_allclose(run(written, images), expected, rtol=0, atol=tolerance)


def test_a_converted_keras_checkpoint_exports(tmp_path, capsys):
    """What convert-keras writes (here from a torch model: the file is the same) loads and exports like the rest."""
    torch.manual_seed(0)
    model = CustomCNN().eval()
    checkpoint = save_converted_checkpoint(model, tmp_path / "converted.ckpt", tmp_path / "custom_cnn.keras")
    export_ok(capsys, "--ckpt_path", str(checkpoint), "--format", "onnx", "--out", str(tmp_path / "converted.onnx"))
    images = torch.rand(BATCH, 1, 28, 28)
    expected = predict_probabilities(model, images, standardize=False)
    np.testing.assert_allclose(run_onnx(tmp_path / "converted.onnx", images), expected, rtol=0, atol=ONNX_TOLERANCE)


def truncated_checkpoint(folder: Path) -> Path:
    path = folder / "truncated.ckpt"
    data = (REPO / "weights" / "lenet.ckpt").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def foreign_checkpoint(folder: Path) -> Path:
    path = folder / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, path)
    return path


@pytest.mark.parametrize(
    ("make_checkpoint", "message"),
    [
        (lambda folder: folder / "missing.ckpt", "no such file"),
        (truncated_checkpoint, "not a readable checkpoint"),
        (foreign_checkpoint, "not a Lightning checkpoint"),
    ],
    ids=["missing", "truncated", "foreign"],
)
def test_bad_checkpoint_is_a_one_line_error(tmp_path, capsys, make_checkpoint, message):
    checkpoint = make_checkpoint(tmp_path)
    out = tmp_path / "out" / "model.onnx"
    assert main(["export", "--ckpt_path", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and message in line
    assert not out.parent.exists()


@pytest.mark.parametrize("export_format", RUNNERS)
def test_existing_output_file_is_never_replaced(tmp_path, capsys, export_format):
    checkpoint = shutil.copy(REPO / "weights" / "lenet.ckpt", tmp_path / "lenet.ckpt")
    out = tmp_path / "lenet.model"
    out.write_bytes(b"an earlier export")
    assert main(["export", "--ckpt_path", str(checkpoint), "--format", export_format, "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"error: {out} already exists; remove it or pass --out"
    assert out.read_bytes() == b"an earlier export"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lenet.ckpt", "lenet.model"]
