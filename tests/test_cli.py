"""The CLI as a user runs it, on small IDX files the tests write: in the test's process where only the commands'
outcome and output are checked (``support.cli_in_process``), in a process of its own where that is the point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmnist_lightning.errors import UserInputError
from support import REPO, cli_in_process, run_in_process

# the GPU overlays need a GPU: tests/test_gpu_options.py composes them with every recipe, tests/test_gpu.py runs them
CONFIGS = sorted(path for path in (REPO / "configs").glob("*.yaml") if not path.stem.startswith("gpu"))


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache"), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "fmnist_lightning", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def fmnist(tmp_path, monkeypatch, capsys):
    """Runs a command in the test's process, in tmp_path: what ``cli`` returns, without a new process's imports."""

    def run(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess:
        return cli_in_process(args, cwd, monkeypatch, capsys)

    return run


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_help_lists_lightning_and_project_commands(tmp_path):
    out = ok(cli("--help", cwd=tmp_path)).stdout
    for command in ("fit", "validate", "test", "predict", "models"):
        assert f"  {command} " in out
    console_script = Path(sys.executable).parent / "fmnist"
    assert subprocess.run([console_script, "--help"], capture_output=True, text=True).stdout == out


def test_models_command_lists_keras_parameter_counts(tmp_path):
    out = ok(cli("models", cwd=tmp_path)).stdout
    assert "61,706" in out and "542,230" in out and "225,930" in out and "321,418" in out and "EfficientNet" in out


def test_print_config_shows_the_recipe(fmnist, tmp_path):
    out = ok(fmnist("fit", "--config", str(REPO / "configs/lenet.yaml"), "--print_config")).stdout
    assert "class_path: fmnist_lightning.models.LeNet5" in out and "lr: 0.01" in out and "max_epochs: 20" in out


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_fits_with_fast_dev_run(tmp_path, tiny_data, config, monkeypatch):
    tiny = ["--data.data_dir", str(tiny_data), "--data.validation.val_size", "0.2"]  # 120 images cannot spare 5000
    args = ["fit", "--config", str(config), *tiny, "--trainer.fast_dev_run", "true"]
    assert run_in_process(args, tmp_path, monkeypatch) == 0
    # ddp.yaml's rendezvous stays with its command, as in a process of its own (a later launch would inherit the port)
    assert not {"MASTER_ADDR", "MASTER_PORT"} & set(os.environ)


def test_run_folder_scheme_across_processes(fmnist, tmp_path, tiny_data):
    fit = ("fit", "--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(tiny_data))
    quick = ("--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false")
    ok(fmnist(*fit, *quick, "--trainer.max_epochs", "1"))
    run = tmp_path / "tensorboard_logs" / "LeNet5" / "version_0"
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert list(run.glob("events.out.tfevents.*")) and (run / "hparams.yaml").is_file()
    config = (run / "config.yaml").read_bytes()

    # test in a new process finds the run's best checkpoint and logs beside it (the other commands run in this one)
    test = ("test", "--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(tiny_data), *quick[2:])
    out = ok(cli(*test, "--ckpt_path", "best", cwd=tmp_path)).stdout
    assert "test/acc" in out and (run / "config.test.yaml").is_file()

    # fit --ckpt_path last resumes the same run: same folder, right epoch count, config.yaml kept
    ok(fmnist(*fit, *quick, "--trainer.max_epochs", "2", "--ckpt_path", "last"))
    assert [p.name for p in run.parent.iterdir()] == ["version_0"]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 1 and last["global_step"] == 4 and last["optimizer_states"]
    metrics = json.loads((run / "metrics.json").read_text())  # the resumed fit carries on the run's record
    assert metrics["epochs"] == 2 and len(metrics["epoch_times_s"]) == 2 and "test_acc" not in metrics
    assert (run / "config.yaml").read_bytes() == config and (run / "config.fit.yaml").is_file()

    # a run folder is accepted too; a fresh fit starts a new version
    ok(fmnist(*test, "--ckpt_path", str(run.relative_to(tmp_path))))
    assert (run / "config.test.2.yaml").is_file()
    ok(fmnist(*fit, *quick, "--trainer.max_epochs", "1"))
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0", "version_1"]


def test_checkpoint_keywords_pick_the_run_of_the_configs_recipe(fmnist, tmp_path, tiny_data):
    """lenet.yaml and its plus.yaml overlay share tensorboard_logs/LeNet5/; `last` must not resume the other's run."""
    common = ("--data.data_dir", str(tiny_data), "--trainer.limit_train_batches", "2", "--run_metrics.latency", "false")
    study = ("--config", str(REPO / "configs/lenet.yaml"), *common)
    plus = (*study[:2], "--config", str(REPO / "configs/plus.yaml"), *common, "--data.validation.val_size", "0.2")
    ok(fmnist("fit", *study, "--trainer.max_epochs", "1"))
    runs = tmp_path / "tensorboard_logs" / "LeNet5"
    before = {p.name: p.stat().st_mtime_ns for p in (runs / "version_0").rglob("*")}

    error = one_line_error(fmnist("fit", *plus, "--trainer.max_epochs", "2", "--ckpt_path", "last"))
    assert "no run under tensorboard_logs/LeNet5/ was trained with this config" in error
    assert "version_0, differs in data.augmentation.crop_padding, data.augmentation.hflip" in error
    assert "Resume it with its own config, --config tensorboard_logs/LeNet5/version_0/config.yaml" in error
    assert [p.name for p in runs.iterdir()] == ["version_0"]
    assert {p.name: p.stat().st_mtime_ns for p in (runs / "version_0").rglob("*")} == before

    # nor does its run folder resume it with the other config: fit would apply the two configs by halves
    error = one_line_error(fmnist("fit", *plus, "--ckpt_path", str(runs / "version_0")))
    assert "version_0 was trained with another config (it differs in data.augmentation.crop_padding" in error
    assert f"--config {runs / 'version_0' / 'config.yaml'}" in error
    assert {p.name: p.stat().st_mtime_ns for p in (runs / "version_0").rglob("*")} == before

    # the study's run is found past a newer run of the other recipe; speed and evaluation options do not matter
    ok(fmnist("fit", *plus, "--trainer.max_epochs", "1"))
    ok(fmnist("test", *study, "--model.init_args.tta_flip", "true", "--ckpt_path", "best"))
    assert (runs / "version_0" / "config.test.yaml").is_file()
    assert not (runs / "version_1" / "config.test.yaml").exists()


def test_a_setting_added_to_the_project_after_a_run_does_not_hide_the_run(tmp_path):
    import yaml

    from fmnist_lightning.runs import folders

    run = tmp_path / "LeNet5" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").touch()
    trained = {"model": {"class_path": "LeNet5", "init_args": {"warmup": 0}}, "data": {"batch_size": 64}}
    (run / "config.yaml").write_text(yaml.safe_dump(trained))
    now = {"model": {"class_path": "LeNet5", "init_args": {"warmup": 0, "new_option": 1}}, "data": {"batch_size": 64}}
    assert (
        folders.resolve_checkpoint("best", run.parent, "test", folders.recipe(now)) == run / "checkpoints" / "best.ckpt"
    )
    now["data"]["batch_size"] = 32
    with pytest.raises(UserInputError, match=r"differs in data\.batch_size"):
        folders.resolve_checkpoint("best", run.parent, "test", folders.recipe(now))


def test_a_one_cycle_run_resumes_only_with_the_length_it_was_scheduled_for(fmnist, tmp_path, tiny_data):
    """The restored OneCycleLR keeps the length the trainer gave it at the start: a resume with another max_epochs
    would stop mid-schedule (or, longer, step past its end)."""
    one_cycle = '{"class_path": "torch.optim.lr_scheduler.OneCycleLR", "init_args": {"max_lr": 0.01}}'
    fit = ("fit", "--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(tiny_data))
    fit += ("--model.init_args.lr_scheduler", one_cycle, "--speed.steps_per_execution", "1")
    fit += ("--run_metrics.latency", "false")
    quick = ("--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false")
    stop_after_one = '--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.EarlyStopping", ' + (
        '"init_args": {"monitor": "val/loss", "stopping_threshold": 1000}}'
    )  # stops the 2-epoch run after its first, like an interrupted run
    ok(fmnist(*fit, *quick, "--trainer.max_epochs", "2", stop_after_one))
    run = tmp_path / "tensorboard_logs" / "LeNet5" / "version_0"
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}

    error = one_line_error(fmnist(*fit, *quick, "--trainer.max_epochs", "3", "--ckpt_path", "last"))
    assert "it differs in trainer.max_epochs); resume it with its own" in error
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    ok(fmnist(*fit, *quick, "--trainer.max_epochs", "2", "--ckpt_path", "last"))
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 1 and last["lr_schedulers"][0]["total_steps"] == 4


def test_last_checkpoint_is_the_last_epoch_when_validation_got_worse(fmnist, tmp_path, tiny_data):
    """Lightning 2.6's own save_last would keep the epoch of the last improvement."""
    diverging = ("--model.init_args.optimizer.init_args.lr", "0.5", "--run_metrics.latency", "false")
    fit = ("fit", "--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(tiny_data), *diverging)
    ok(fmnist(*fit, "--trainer.max_epochs", "4", "--trainer.enable_progress_bar", "false"))
    checkpoints = tmp_path / "tensorboard_logs" / "LeNet5" / "version_0" / "checkpoints"
    epoch = {name: torch.load(checkpoints / f"{name}.ckpt", weights_only=False)["epoch"] for name in ("best", "last")}
    assert epoch["best"] < 3, "validation loss should have got worse after its best epoch"
    assert epoch["last"] == 3
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_checkpoint_keyword_without_runs_is_a_one_line_error(fmnist, tmp_path, tiny_data):
    result = fmnist(
        "test",
        "--config",
        str(REPO / "configs/lenet.yaml"),
        "--data.data_dir",
        str(tiny_data),
        "--ckpt_path",
        "last",
        cwd=tmp_path,
    )
    assert "no run under tensorboard_logs/LeNet5" in one_line_error(result)


def test_missing_data_is_a_one_line_error(fmnist, tmp_path):
    result = fmnist(
        "fit",
        "--config",
        str(REPO / "configs/lenet.yaml"),
        "--data.data_dir",
        "nowhere",
        "--data.files.download",
        "false",
        cwd=tmp_path,
    )
    line = one_line_error(result)
    assert "nowhere" in line and "train-images-idx3-ubyte" in line and "--data.data_dir" in line
    assert not (tmp_path / "tensorboard_logs" / "LeNet5" / "version_0" / "checkpoints").exists()
