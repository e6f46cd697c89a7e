"""``export``: a checkpoint as an ONNX or TorchScript file that runs without this project or Lightning.

The exported graph computes what ``predict`` returns, from raw pixels: images N×1×28×28 scaled to [0, 1] (x / 255)
in, class probabilities N×10 out. The standardisation a model was trained with (``--model.init_args.standardize``,
the model's own, recorded in the checkpoint) and the test-time flip of ``tta_flip`` models are part of the graph, so
its users need to know nothing of the training recipe.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.jit import TracerWarning

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.lightning_private import jit_is_scripting
from fmnist_lightning.runs.loading import load
from fmnist_lightning.safe_files import atomic_path
from fmnist_lightning.training.module import FashionMNISTClassifier

# a batch of 2, not 1: traced with one image, the batch size could be taken for a constant
EXAMPLE_IMAGES = (2, 1, 28, 28)
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"


class PixelsToProbabilities(nn.Module):
    """The model as ``predict`` runs it, from [0, 1] pixels: the exported function. The model's own standardisation
    (``model.standardize``, in its ``forward``) and its test-time flip are part of it."""

    def __init__(self, model: FashionMNISTClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # contiguous: channels_last is a training speed-up; the exported function must not depend on the layout
        return self.model.predict_step(images.contiguous(), 0)


def write_onnx(module: nn.Module, path: Path) -> None:
    """ONNX through torch's TorchScript-based exporter (``dynamo=False``).

    torch 2.14's default, the torch.export-based exporter, needs the onnxscript package and took about 6× as long
    here (21 s against 3.5 s for the timm EfficientNet on two busy CPU cores) for the same probabilities within 1e-7;
    this one needs no package beyond torch. ``onnx`` then checks the file.
    """
    try:
        import onnx
    except ModuleNotFoundError:
        raise UserInputError(
            "--format onnx needs the onnx package: pip install 'fmnist-lightning[export]' (onnx, onnxruntime)"
        ) from None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
        torch.onnx.export(
            module,
            (torch.rand(EXAMPLE_IMAGES),),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    onnx.checker.check_model(str(path), full_check=True)


def write_torchscript(module: nn.Module, path: Path) -> None:
    """A traced TorchScript module, loadable with ``torch.jit.load`` alone.

    ``check_trace`` is off: it traces a second time, which tripled the time for the timm EfficientNet; the tests
    compare the file's probabilities with the model's instead, on another batch size.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        traced = torch.jit.trace(module, torch.rand(EXAMPLE_IMAGES), check_trace=False)
        torch.jit.save(traced, str(path))


FORMATS: dict[str, tuple[str, Callable[[nn.Module, Path], None]]] = {
    "onnx": (".onnx", write_onnx),
    "torchscript": (".pt", write_torchscript),
}


def export(checkpoint: Path, export_format: str, out: Path | None = None) -> Path:
    """Write the checkpoint's model as ``export_format`` to ``out`` (default: ``<checkpoint stem>.onnx`` or ``.pt``
    in the current directory) and return the path; an existing file is never replaced, and the file appears whole
    or not at all."""
    if not checkpoint.is_file():
        raise UserInputError(
            f"--ckpt_path {checkpoint}: no such file; pass a checkpoint, e.g. weights/lenet.ckpt or a run's "
            "checkpoints/best.ckpt"
        )
    suffix, write = FORMATS[export_format]
    target = out if out is not None else Path(checkpoint.stem + suffix)
    if target.exists():
        raise UserInputError(f"{target} already exists; remove it or pass --out")
    model = load(checkpoint)  # through the one safe loader: a damaged, foreign or unsafe file is a one-line error
    module = PixelsToProbabilities(model).eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Lightning's own switch for tracing a LightningModule (its to_torchscript and log_graph use it): without it, the
    # tracer's look at every attribute reaches `trainer`, which raises outside a Trainer
    with atomic_path(target) as partial, torch.no_grad(), jit_is_scripting(), warnings.catch_warnings():
        # the model's standardisation (torchvision's normalize) makes its mean and std tensors from Python constants,
        # which the tracer records as constants: what the exported file needs, and what it warns about
        warnings.filterwarnings("ignore", "torch.as_tensor results are registered as constants", TracerWarning)
        write(module, partial)
    return target


def export_command(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fmnist_lightning export",
        description=(
            "Export a checkpoint's model as ONNX or TorchScript. The file maps images N×1×28×28, pixels scaled to "
            "[0, 1] (x / 255.0, light object on black as in Fashion-MNIST), to class probabilities N×10 (softmax, "
            "what predict returns), for any batch size N. The standardisation the model was trained with "
            "(--model.init_args.standardize) is inside the file; a tta_flip model averages the probabilities of "
            "each image and its mirror image, as predict does. ONNX names the input 'images' and the output "
            "'probabilities'."
        ),
    )
    parser.add_argument(
        "--ckpt_path", type=Path, required=True, help="a checkpoint: a run's checkpoints/best.ckpt or weights/*.ckpt"
    )
    parser.add_argument("--format", choices=FORMATS, required=True, dest="export_format")
    parser.add_argument(
        "--out", type=Path, help="the file to write (default: <checkpoint name>.onnx or .pt in the current directory)"
    )
    options = parser.parse_args(args)
    written = export(options.ckpt_path, options.export_format, options.out)  # UserInputError: main's exit 2
    print(f"wrote {written}: {options.export_format}, images N×1×28×28 in [0, 1] → probabilities N×10")
    return 0
