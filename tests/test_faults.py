"""Runs that are killed resume where they stopped: real subprocesses, real signals (the resumes in the test's
process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support import REPO, error_line, run_in_process, write_dataset

STEPS_PER_EPOCH = 50  # 400 training images in batches of 8, taken 8 batches at a time (fit below): 6 × 8 + 2
KILLED_AT = 74  # in the second epoch (steps 51–100), after its third group of 8 steps
SCHEDULER = '{"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1, "gamma": 0.5}}'


def fit(data: Path, cwd: Path, *args: str, signalled: bool = False) -> subprocess.CompletedProcess:
    """The fit; in a process of its own where a signal is to stop it (``signalled``), else in the test's process
    (``support.run_in_process``: a resume reads only what the stopped process left on disk)."""
    command = ["fit", "--config", str(REPO / "configs/lenet.yaml")]
    command += ["--data.data_dir", str(data), "--data.batch_size", "8", "--trainer.enable_progress_bar", "false"]
    command += ["--model.init_args.optimizer", "torch.optim.Adam", "--model.init_args.lr_scheduler", SCHEDULER]
    command += ["--run_metrics.latency", "false", "--run_metrics.activation_memory", "false"]
    command += ["--speed.steps_per_execution", "8"]  # the groups KILLED_AT and the resume count on
    command += ["--trainer.max_epochs", "3", *args]
    if not signalled:
        with pytest.MonkeyPatch.context() as patch:
            return subprocess.CompletedProcess(command, run_in_process(command, cwd, patch), "", "")
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "XDG_CACHE_HOME": str(cwd / "cache")}
    command = [sys.executable, "-m", "fmnist_lightning", *command]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


@pytest.mark.parametrize(
    ("signal_name", "on_device"),
    [("SIGTERM", False), ("SIGKILL", False), ("SIGTERM", True)],
    ids=["SIGTERM", "SIGKILL", "SIGTERM-data-on-device"],
)
def test_a_killed_fit_resumes_from_last_and_finishes_its_epochs(tmp_path, signal_name, on_device):
    data = tmp_path / "data"
    write_dataset(data, num_train=400, num_test=40)
    kill = {"class_path": "signal_at_step.SignalAtStep", "init_args": {"step": KILLED_AT, "signal_name": signal_name}}
    # batches gathered from the dataset's own (device) tensors resume mid-epoch as the host path's do
    on_device_args = ["--data.on_device", "true"] if on_device else []
    killed = fit(data, tmp_path, *on_device_args, f"--trainer.callbacks+={json.dumps(kill)}", signalled=True)
    run = tmp_path / "tensorboard_logs" / "LeNet5" / "version_0"
    saved = checkpoint(run)
    if signal_name == "SIGTERM":  # Lightning stops at the step's end; the run's last.ckpt is rewritten there
        assert killed.returncode == 143 and "--ckpt_path last" in killed.stderr, killed.stderr[-2000:]
        assert saved["global_step"] == KILLED_AT
    else:  # killed outright: the end of the first epoch survives, whole
        assert killed.returncode == -9
        assert saved["global_step"] == STEPS_PER_EPOCH
    assert json.loads((run / "metrics.json").read_text())["status"] in ("interrupted", "running")

    resumed = fit(data, tmp_path, *on_device_args, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [p.name for p in run.parent.iterdir()] == ["version_0"]  # the same run, continued
    final = checkpoint(run)
    steps = 3 * STEPS_PER_EPOCH
    if signal_name == "SIGTERM":  # Lightning restarts the epoch's loader for its 4 groups still due: 4 × 8 steps
        steps = KILLED_AT + 4 * 8 + STEPS_PER_EPOCH
    assert final["epoch"] == 2 and final["global_step"] == steps
    optimizer = final["optimizer_states"][0]  # restored, not restarted: one Adam step per optimizer step
    assert {int(state["step"]) for state in optimizer["state"].values()} == {steps}
    (scheduler,) = final["lr_schedulers"]
    halved_thrice = optimizer["param_groups"][0]["initial_lr"] * 0.5**3
    assert scheduler["last_epoch"] == 3 and scheduler["_last_lr"] == [pytest.approx(halved_thrice)]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs"] == 3


def test_a_record_that_went_past_the_resumed_checkpoint_is_cut_back_to_it(tmp_path):
    """A process killed after an epoch ended past its last mid-epoch last.ckpt left that epoch in metrics.json;
    the resumed fit trains the epoch again and must not record it twice."""
    data = tmp_path / "data"
    write_dataset(data, num_train=400, num_test=40)
    assert fit(data, tmp_path, "--trainer.max_epochs", "1").returncode == 0
    run = tmp_path / "tensorboard_logs" / "LeNet5" / "version_0"
    record = json.loads((run / "metrics.json").read_text())
    for key in ("epoch_times_s", "train_images_per_s_by_epoch", "val_acc_by_epoch", "val_loss_by_epoch"):
        record[key].append(-1.0)  # the epoch the killed process recorded after the checkpoint
    record["epochs"] += 1
    (run / "metrics.json").write_text(json.dumps(record))

    resumed = fit(data, tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run / "metrics.json").read_text())
    assert record["epochs"] == 2 and len(record["epoch_times_s"]) == 2 and len(record["val_acc_by_epoch"]) == 2
    assert -1.0 not in record["epoch_times_s"] + record["val_acc_by_epoch"] + record["train_images_per_s_by_epoch"]


def test_a_fit_stopped_during_validation_validates_that_epoch_when_resumed(tmp_path):
    """The epoch's training was done, its validation was not: resuming validates it (whole) before going on, so
    checkpoint choice and the learning curves miss no epoch."""
    data = tmp_path / "data"
    write_dataset(data, num_train=400, num_test=40)
    validation = ["--data.eval_batch_size", "8"]  # 5 validation batches: the signal comes after the first
    (tmp_path / "uninterrupted").mkdir()
    uninterrupted = fit(data, tmp_path / "uninterrupted", *validation)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    expected = json.loads(next((tmp_path / "uninterrupted").rglob("metrics.json")).read_text())

    stop = {"class_path": "signal_at_step.SignalInValidation", "init_args": {"epoch": 1}}
    killed = fit(data, tmp_path, *validation, f"--trainer.callbacks+={json.dumps(stop)}", signalled=True)
    assert killed.returncode == 143, killed.stderr[-2000:]
    resumed = fit(data, tmp_path, *validation, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = tmp_path / "tensorboard_logs" / "LeNet5" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and len(metrics["val_acc_by_epoch"]) == 3
    # the first two epochs trained as uninterrupted (the stop came after epoch 1's training): the same validation
    assert metrics["val_loss_by_epoch"][:2] == expected["val_loss_by_epoch"][:2]
    # epoch 1's training figures and time went with the stopped process: unknown, not zero, and the lists stay by epoch
    assert metrics["train_loss_by_epoch"][0] == expected["train_loss_by_epoch"][0]
    assert metrics["train_loss_by_epoch"][1] is None and len(metrics["train_loss_by_epoch"]) == 3
    assert metrics["epoch_times_s"][1] is None and metrics["train_images_per_s_by_epoch"][1] is None
    final = checkpoint(run)
    assert final["global_step"] == 3 * STEPS_PER_EPOCH
    assert final["lr_schedulers"][0]["last_epoch"] == 3  # the epoch schedule stepped once for the redone epoch


def lightning_checkpoint(path: Path, class_path: str, resumable: bool = True) -> Path:
    """The keys the CLI checks, as Lightning writes them (the check runs before Lightning reads the weights)."""
    saved = {"state_dict": {}, "pytorch-lightning_version": "2.6.0", "hyper_parameters": {"_class_path": class_path}}
    torch.save({**saved, "optimizer_states": [{}]} if resumable else saved, path)
    return path


def truncated(path: Path) -> Path:
    whole = lightning_checkpoint(path.with_suffix(".whole"), "fmnist_lightning.models.LeNet5").read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


def foreign(path: Path) -> Path:
    torch.save({"weights": torch.zeros(3)}, path)
    return path


@pytest.mark.parametrize(
    ("command", "make", "message"),
    [
        ("fit", truncated, "not a readable checkpoint, truncated or not a torch file"),
        ("test", truncated, "(RuntimeError); copy it again, or pass the run's other checkpoint (best or last)"),
        ("test", foreign, "not a Lightning checkpoint"),
        (
            "test",
            lambda p: lightning_checkpoint(p, "other_project.Net"),
            "of other_project.Net, not of this project's models; pass one written by fit, publish or convert-keras",
        ),
        ("fit", lambda p: lightning_checkpoint(p, "fmnist_lightning.models.LeNet5", False), "holds weights only"),
        (
            "fit",
            lambda p: lightning_checkpoint(p, "fmnist_lightning.models.CustomCNN"),
            "a CustomCNN checkpoint, but the config trains LeNet5",
        ),
    ],
)
def test_an_unusable_checkpoint_is_a_one_line_error_and_stays_as_it_was(tmp_path, capsys, command, make, message):
    from fmnist_lightning.commands.main import main

    checkpoint = make(tmp_path / "model.ckpt")
    before = checkpoint.read_bytes()
    logs = tmp_path / "logs"
    args = [command, "--config", str(REPO / "configs/lenet.yaml"), "--ckpt_path", str(checkpoint)]
    assert main([*args, "--trainer.logger.init_args.save_dir", str(logs)]) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"error: --ckpt_path {checkpoint}: ") and message in line
    assert checkpoint.read_bytes() == before and not logs.exists()
