"""Checkpoints are read safely: a pickled payload never runs, and only registered classes are built from a file.

The attacker's file is a copy of ``weights/lenet.ckpt`` that also carries an object whose unpickling runs a shell
command (it would create a marker file), placed in a run folder with the config.yaml and metrics.json that
``publish`` needs. Every command that reads checkpoints must refuse it with one line and exit 2, and the marker must
not exist. Each command runs as a user runs it, in the test's process (``support.cli_in_process``), with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (torch reads it at every load): then torch's own default load (Lightning's)
would unpickle anything, so what refuses the file is the project's safe loader, which runs first and asks for a
weights-only load explicitly.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from fmnist_lightning import UserInputError, load, register_model, registry
from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.commands.main import main
from fmnist_lightning.runs import checkpoints
from fmnist_lightning.training import FashionMNISTClassifier
from support import REPO, cli_in_process, error_line, write_checkpoint

LENET = REPO / "weights" / "lenet.ckpt"
REFUSED = "holds objects a safe load refuses"


class Payload:
    """What an attacker adds to a checkpoint: unpickling it runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def lenet_checkpoint() -> dict:
    return torch.load(LENET, map_location="cpu", weights_only=True)


def write_run(root: Path, contents: dict) -> Path:
    """A run folder as ``fit`` leaves one, its best.ckpt and last.ckpt being ``contents``: the run folder."""
    run = root / "tensorboard_logs" / "LeNet5" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best", "last"):
        torch.save(contents, run / "checkpoints" / f"{name}.ckpt")
    shutil.copy(REPO / "configs" / "lenet.yaml", run / "config.yaml")
    (run / "metrics.json").write_text('{"model": "LeNet5", "status": "finished", "epochs": 1, "fit_time_s": 1.0}\n')
    return run


@pytest.fixture
def attack(tmp_path: Path) -> tuple[Path, Path]:
    """(the run folder whose checkpoints carry the payload, the marker file the payload would create)."""
    marker = tmp_path / "pwned"
    malicious = lenet_checkpoint()
    malicious["optimizer_states"] = [{"state": {}, "param_groups": []}]  # resumable, so fit reads it too
    malicious["note"] = Payload(marker)
    run = write_run(tmp_path, malicious)
    assert not marker.exists()
    return run, marker


def test_the_payload_would_run_on_an_unsafe_load(attack):
    """The file is a real attack: torch's unsafe load runs it (here, deliberately, to prove the test's point)."""
    run, marker = attack
    torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert marker.exists()


COMMANDS = ("publish", "test", "validate", "predict", "export onnx", "export torchscript", "fit resume")


def command_line(command: str, run: Path, data: Path) -> list[str]:
    """Each command that reads a checkpoint, naming the attacker's file as a user would: the file or its run folder."""
    best, data_dir = str(run / "checkpoints" / "best.ckpt"), str(data)
    data_args = ["--data.data_dir", data_dir]
    publish = ["--name", "lenet", "--config", "configs/lenet.yaml", "--data_dir", data_dir, "--out_dir", "weights"]
    return {
        "publish": ["publish", best, *publish],
        "test": ["test", "--ckpt_path", best, "--data.data_dir", data_dir],
        "validate": ["validate", "--ckpt_path", str(run), "--data.data_dir", data_dir],
        "predict": ["predict", "--ckpt_path", best, "--data.data_dir", data_dir],
        "export onnx": ["export", "--ckpt_path", best, "--format", "onnx", "--out", "lenet.onnx"],
        "export torchscript": ["export", "--ckpt_path", best, "--format", "torchscript", "--out", "lenet.pt"],
        # resumes the run folder's last.ckpt
        "fit resume": ["fit", "--config", str(run / "config.yaml"), "--ckpt_path", str(run), *data_args],
    }[command]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_pickled_payload_without_running_it(
    tmp_path, tiny_data, attack, command, monkeypatch, capsys
):
    run, marker = attack
    monkeypatch.setenv(
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1"
    )  # torch's default load unpickles anything: only ours protects
    result = cli_in_process(command_line(command, run, tiny_data), tmp_path, monkeypatch, capsys)
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result.stderr)
    assert REFUSED in line and str(run) in line and "nothing in it ran" in line
    assert "truncated" not in line
    assert not marker.exists()
    assert not (tmp_path / "weights").exists() and not list(tmp_path.glob("lenet.*"))  # nothing published/exported
    assert sorted(path.name for path in run.iterdir()) == ["checkpoints", "config.yaml", "metrics.json"]
    assert [path.name for path in run.parent.iterdir()] == ["version_0"]  # no run folder started either


def test_load_refuses_a_pickled_payload_without_running_it(attack, monkeypatch):
    run, marker = attack
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UserInputError, match=REFUSED) as error:
        load(run / "checkpoints" / "best.ckpt")
    assert "\n" not in str(error.value) and ".system" in str(error.value)  # names what it refused: os.system
    assert not marker.exists()


def test_a_truncated_file_is_called_truncated_not_unsafe(tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(LENET.read_bytes()[:1000])
    with pytest.raises(UserInputError, match="truncated or not a torch file") as error:
        load(truncated)
    assert REFUSED not in str(error.value)


def test_publish_in_process_refuses_it_too(attack, tiny_data, tmp_path, capsys):
    run, marker = attack
    args = ["publish", str(run / "checkpoints" / "last.ckpt"), "--name", "lenet", "--config", "configs/lenet.yaml"]
    assert main([*args, "--data_dir", str(tiny_data), "--out_dir", str(tmp_path / "weights")]) == 2
    assert REFUSED in error_line(capsys.readouterr().err)
    assert not marker.exists() and not (tmp_path / "weights" / "lenet.ckpt").exists()


def test_an_unregistered_class_is_never_built(tmp_path):
    """Only classes of the registry: a safe file that names another class (here a project class that is not a
    model, and torch's Linear) is refused before Lightning's instantiator would import and build it."""
    for class_path in ("fmnist_lightning.training.FashionMNISTClassifier", "torch.nn.Linear", "lenet", "LeNet5"):
        saved = lenet_checkpoint()
        saved["hyper_parameters"]["_class_path"] = class_path
        torch.save(saved, tmp_path / "other.ckpt")
        with pytest.raises(
            UserInputError, match=rf"a checkpoint of {re.escape(class_path)}, not of this project's models"
        ):
            load(tmp_path / "other.ckpt")


def test_only_lightnings_instantiator_is_admitted(tmp_path):
    saved = lenet_checkpoint()
    saved["hyper_parameters"]["_instantiator"] = "os.system"
    torch.save(saved, tmp_path / "instantiator.ckpt")
    with pytest.raises(UserInputError, match=r"names 'os\.system' to build its model"):
        load(tmp_path / "instantiator.ckpt")


class ToyModel(FashionMNISTClassifier):
    """A model of the user's own: checkpoints of it load like the project's once it is registered."""

    def __init__(self, **kwargs) -> None:
        super().__init__(net=nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), **kwargs)


def toy_checkpoint(path: Path) -> tuple[ToyModel, Path]:
    torch.manual_seed(0)
    model = ToyModel().eval()
    write_checkpoint(model, path, class_path=f"{ToyModel.__module__}.{ToyModel.__qualname__}")
    return model, path


def test_a_model_registered_in_process_loads_from_its_checkpoint(tmp_path, monkeypatch):
    model, path = toy_checkpoint(tmp_path / "toy.ckpt")
    with pytest.raises(UserInputError, match="not of this project's models"):  # not registered yet
        load(path)
    # registered for this test only: the registry's tables are restored afterwards
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_CLASSES", dict(registry._CLASSES))
    register_model("toy_for_checkpoint_safety", parameters=7_850)(ToyModel)
    loaded = load(path)
    assert type(loaded) is ToyModel
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))


@pytest.mark.parametrize("path", sorted((REPO / "weights").glob("*.ckpt")), ids=lambda path: path.stem)
def test_every_published_file_passes_the_safe_load_with_no_extra_types(path):
    """``SAFE_GLOBALS`` is empty because no file needs more than tensors and plain values."""
    assert checkpoints.SAFE_GLOBALS == ()
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    checkpoints.read_checkpoint(path, str(path))


# a recipe of each kind of training state a checkpoint can carry: (configs, what it adds)
RECIPES = {
    # AdamW, SequentialLR (linear warm-up, then cosine), Lightning's EMAWeightAveraging
    "lenet+plus": ["configs/lenet.yaml", "configs/plus.yaml"],
    # KerasAdam, ReduceLROnPlateau, EarlyStopping, several optimizer steps per Lightning step
    "seed_efficientnet": ["configs/seed_efficientnet.yaml"],
    # SGD, OneCycleLR, EMAWithWarmup; WRN-10-1, the smallest of the same blocks
    "best": ["configs/best.yaml", "--model.init_args.depth", "10", "--model.init_args.widen_factor", "1"],
}


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_runs_checkpoints_pass_the_safe_load_with_no_extra_types(tmp_path, tiny_data, monkeypatch, recipe):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["fmnist"])
    configs = [str(REPO / arg) if arg.startswith("configs/") else arg for arg in RECIPES[recipe]]
    args = ["fit", *[item for arg in configs for item in (("--config", arg) if arg.endswith(".yaml") else (arg,))]]
    args += ["--data.data_dir", str(tiny_data), "--data.validation.val_size", "0.2", "--trainer.max_epochs", "1"]
    args += ["--speed.compile", "false", "--trainer.enable_progress_bar", "false"]
    args += ["--run_metrics.latency", "false", "--run_metrics.activation_memory", "false"]
    FashionMNISTCLI(args)
    for path in sorted(tmp_path.glob("tensorboard_logs/*/version_0/checkpoints/*.ckpt")):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path.name
        assert "optimizer_states" in checkpoints.read_checkpoint(path, str(path))
        # the data module's option groups as plain dicts, which a weights-only load reads without registering types
        data = torch.load(path, weights_only=True)["datamodule_hyper_parameters"]
        assert data["validation"]["val_size"] == 0.2 and type(data["augmentation"]) is dict
    assert len(list(tmp_path.glob("tensorboard_logs/*/version_0/checkpoints/*.ckpt"))) == 2
