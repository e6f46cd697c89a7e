"""The GPU options, checked on the CPU: the overlays compose with every recipe, TF32 is set only for a CUDA device
and said once, a compile mode needs compile, the model's former speed flags still work. (tests/test_gpu.py runs them
on a GPU.)"""

from __future__ import annotations

import logging
import re

import pytest
import torch

from fmnist_lightning import UserInputError
from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.training.speed import SpeedSettings, speed_settings_of, use_float32_matmul_precision
from support import REPO

STUDY = ("lenet", "brownlee", "custom_cnn", "seed_efficientnet")
OWN = ("fast", "fast93", "efficientnet", "best")
CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize(("recipe", "overlay"), [(r, "gpu") for r in STUDY] + [(r, "gpu_bf16") for r in OWN])
def test_a_gpu_overlay_composes_with_every_recipe(recipe, overlay, tiny_data, monkeypatch):
    monkeypatch.setattr("sys.argv", ["fmnist"])  # LightningCLI warns when pytest's own arguments are there too
    configs = [
        "--config",
        str(REPO / "configs" / f"{recipe}.yaml"),
        "--config",
        str(REPO / "configs" / f"{overlay}.yaml"),
    ]
    # parsed for the CPU, which this machine has: the overlay's own accelerator is what is replaced
    cli = FashionMNISTCLI([*configs, "--data.data_dir", str(tiny_data), "--trainer.accelerator", "cpu"], run=False)
    data = cli.datamodule.hparams
    assert data.on_device is True and data.eval_batch_size == 10_000
    assert speed_settings_of(cli.trainer).float32_matmul_precision == "high"
    assert str(cli.trainer.precision) == ("bf16-mixed" if overlay == "gpu_bf16" else "32-true")
    recipe_only = FashionMNISTCLI([*configs[:2], "--data.data_dir", str(tiny_data)], run=False)
    # the recipe's own choices stay: its model, batch size, optimizer and epochs
    assert type(cli.model) is type(recipe_only.model) and data.batch_size == recipe_only.datamodule.hparams.batch_size
    assert cli.trainer.max_epochs == recipe_only.trainer.max_epochs
    own_steps = speed_settings_of(recipe_only.trainer).steps_per_execution
    assert speed_settings_of(cli.trainer).steps_per_execution == (8 if overlay == "gpu_bf16" else own_steps)


@pytest.fixture
def matmul_precision():
    """Restores torch's process-wide float32 matmul precision after the test."""
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


def test_tf32_is_set_for_a_cuda_device_only_and_said_once(matmul_precision, monkeypatch, caplog):
    torch.set_float32_matmul_precision("highest")
    default = SpeedSettings().float32_matmul_precision
    use_float32_matmul_precision(default, torch.device("cpu"))
    assert torch.get_float32_matmul_precision() == "highest"  # CPU results keep true float32
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    with caplog.at_level(logging.INFO):
        use_float32_matmul_precision(default, CUDA)
        use_float32_matmul_precision(default, CUDA)
    assert torch.get_float32_matmul_precision() == "high"
    said = [r.getMessage() for r in caplog.records if "matmul" in r.getMessage()]
    assert said == [
        "float32 on NVIDIA H200: matmuls on TF32 tensor cores (--speed.float32_matmul_precision high), "
        "convolutions TF32"
    ]
    use_float32_matmul_precision(SpeedSettings(float32_matmul_precision="highest").float32_matmul_precision, CUDA)
    assert torch.get_float32_matmul_precision() == "highest"  # the user's choice, not the default


def test_a_compile_mode_needs_compile():
    with pytest.raises(UserInputError, match=r"compile_mode reduce-overhead is a mode of torch\.compile"):
        SpeedSettings(compile_mode="reduce-overhead")


def test_the_models_former_speed_flags_are_aliases_of_the_speed_ones(tiny_data, monkeypatch):
    """``--model.init_args.compile`` and its kin, from before the speed settings left the model: the same setting,
    and a warning that names the new flag."""
    monkeypatch.setattr("sys.argv", ["fmnist"])
    args = ["--config", str(REPO / "configs" / "lenet.yaml"), "--data.data_dir", str(tiny_data)]
    old = ["--model.init_args.channels_last", "false", "--model.init_args.float32_matmul_precision=medium"]
    with pytest.warns(FutureWarning, match=r"--model\.init_args\.channels_last is now --speed\.channels_last"):
        cli = FashionMNISTCLI([*args, *old], run=False)
    speed = speed_settings_of(cli.trainer)
    assert speed.channels_last is False and speed.float32_matmul_precision == "medium"
    assert speed_settings_of(FashionMNISTCLI(args, run=False).trainer).channels_last is True  # lenet.yaml's


def test_a_config_with_the_models_former_speed_keys_is_a_one_line_error(tiny_data, tmp_path, capsys):
    from fmnist_lightning.commands.main import main

    old = tmp_path / "old.yaml"
    old.write_text("model:\n  init_args:\n    compile: true\n    channels_last: true\n")
    assert main(["fit", "--config", str(REPO / "configs" / "lenet.yaml"), "--config", str(old)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {old}: model.init_args.channels_last is now speed.channels_last, model.init_args.compile is now "
        "speed.compile (the speed settings are apart from the model; docs/cli.md)"
    )


def test_the_former_steps_per_execution_keys_are_an_alias_or_a_one_line_error(tiny_data, tmp_path, monkeypatch, capsys):
    """The model's ``steps_per_execution`` is ``--speed.steps_per_execution`` now, and so is the data module's
    ``batches_per_step``, which followed it: a warning names it (old_keys.py); a config file setting them, one line."""
    from fmnist_lightning.commands.main import main

    monkeypatch.setattr("sys.argv", ["fmnist"])
    args = ["--config", str(REPO / "configs" / "lenet.yaml"), "--data.data_dir", str(tiny_data)]
    for old_flag in ("--model.init_args.steps_per_execution", "--data.batches_per_step"):
        with pytest.warns(FutureWarning, match=rf"{re.escape(old_flag)} is now --speed\.steps_per_execution"):
            cli = FashionMNISTCLI([*args, old_flag, "4"], run=False)
        assert speed_settings_of(cli.trainer).steps_per_execution == 4
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  init_args:\n    steps_per_execution: 4\ndata:\n  batches_per_step: 4\n")
    assert main(["fit", *args, "--config", str(old)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {old}: data.batches_per_step is now speed.steps_per_execution, model.init_args.steps_per_execution "
        "is now speed.steps_per_execution (the speed settings are apart from the model; docs/cli.md)"
    )
    old.write_text("model:\n  init_args:\n    steps_per_execution: 4\n")
    assert main(["fit", *args, "--config", str(old)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {old}: model.init_args.steps_per_execution is now speed.steps_per_execution (the speed settings "
        "are apart from the model; docs/cli.md)"
    )


def test_the_gpu_speed_settings_are_not_part_of_a_recipe():
    """A run trained with configs/gpu.yaml is the same recipe as the config alone: `--ckpt_path last` finds it."""
    from fmnist_lightning.runs.folders import recipe

    plain = {"model": {"init_args": {"standardize": True}}, "data": {"batch_size": 64}}
    on_gpu = {  # a run folder's config.yaml from before the speed settings left the model, too
        "model": {"init_args": {"standardize": True, "compile_mode": "default", "float32_matmul_precision": "medium"}},
        "data": {"batch_size": 64, "on_device": True, "eval_batch_size": 10_000},
        "speed": {"compile": True, "compile_mode": "default"},
    }
    assert recipe(on_gpu) == recipe(plain) == {"model.init_args.standardize": True, "data.batch_size": 64}


def test_lightning_does_not_advise_loader_workers(tiny_data, tmp_path, monkeypatch, recwarn):
    """Lightning advises workers where a machine has the cores for them (a GPU node); our loaders gather a batch with
    one indexing op, on the device with --data.on_device, where workers cannot run."""
    import lightning.pytorch.trainer.connectors.data_connector as data_connector

    from fmnist_lightning.commands.cli import lightning_command

    monkeypatch.setattr(data_connector, "suggested_max_num_workers", lambda devices: 16)
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(REPO / "configs" / "lenet.yaml"), "--data.data_dir", str(tiny_data)]
    args += ["--data.on_device", "true", "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false"]
    assert lightning_command(args) == 0
    assert not [w for w in recwarn if "does not have many workers" in str(w.message)]
