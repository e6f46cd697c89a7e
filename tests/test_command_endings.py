"""The end of every command says what happened, and a command leaves only what it was asked to.

One LeNet-5 ``fit`` (configs/lenet.yaml: 16 batches per Lightning step) on the small IDX files, as a user runs it:
its closing summary against its metrics.json, the next commands it prints (run as printed), the model summary's rows,
the TensorBoard graph and what it printed to stderr; the progress bar's count of batches; and ``test``/``predict`` of
a published checkpoint in a folder that must stay clean (in the test's process: what they print and leave is checked,
with the session's data cache as a user's lies outside the folder).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.observe.fit_summary import duration, percent, recipe_checkpoint
from fmnist_lightning.observe.progress import BatchProgressBar
from support import REPO, cli_in_process, write_dataset

LENET = REPO / "configs" / "lenet.yaml"
RUN = Path("tensorboard_logs") / "LeNet5" / "version_0"
# warnings that name a deprecation: Python's own format, and Lightning's (its file:line, then the message)
DEPRECATION = re.compile(r"DeprecationWarning|FutureWarning|deprecated", re.IGNORECASE)


def command(*args: str, cwd: Path, quiet_warnings: bool = True) -> subprocess.CompletedProcess:
    """``python -m fmnist_lightning ARGS`` in ``cwd``; with ``quiet_warnings`` false, with the warnings a user sees."""
    env = {**os.environ}  # the session's private XDG_CACHE_HOME (conftest)
    env.pop("PYTHONWARNINGS", None)
    if quiet_warnings:
        env["PYTHONWARNINGS"] = "ignore"
    result = subprocess.run(
        [sys.executable, "-m", "fmnist_lightning", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """``fit --config configs/lenet.yaml`` for two epochs, with the warnings a user sees."""
    folder = tmp_path_factory.mktemp("endings")
    write_dataset(folder / "fmnist")
    args = ("fit", "--config", str(LENET), "--data.data_dir", "fmnist", "--trainer.max_epochs", "2")
    return folder, command(*args, "--data.batch_size", "16", cwd=folder, quiet_warnings=False)


def test_fit_ends_with_its_figures_from_metrics_json_and_the_next_commands(fit):
    folder, result = fit
    metrics = json.loads((folder / RUN / "metrics.json").read_text())
    lines = result.stdout.splitlines()
    ending = lines[lines.index(next(line for line in lines if line.startswith("fit finished"))) :]
    assert ending == [
        f"fit finished: 2 epochs in {duration(metrics['fit_time_s'])}",
        f"  validation accuracy: {percent(metrics['final_val_acc'])} after the last epoch, "
        f"best {percent(metrics['best_val_acc'])}",
        f"  run folder: {RUN}",
        "next:",
        # lenet.yaml validates on the test set and says so: its final epoch is the one to test
        f"  python -m fmnist_lightning test --config {LENET} --ckpt_path {RUN}/checkpoints/last.ckpt "
        "--data.data_dir fmnist",
        "  tensorboard --logdir tensorboard_logs",
    ]


def test_the_printed_test_command_runs_and_says_where_it_recorded_the_accuracy(fit):
    folder, result = fit
    printed = next(line for line in result.stdout.splitlines() if "fmnist_lightning test" in line)
    args = shlex.split(printed)[3:]  # after `python -m fmnist_lightning`
    out = command(*args, "--trainer.enable_progress_bar", "false", cwd=folder).stdout
    metrics = json.loads((folder / RUN / "metrics.json").read_text())
    checkpoint = f"{RUN}/checkpoints/last.ckpt"
    assert f"test accuracy: {percent(metrics['test_acc'])} (loss {metrics['test_loss']:.4f}) of {checkpoint}" in out
    assert f"  recorded in {RUN / 'metrics.json'} (test_acc, test_loss)" in out


def test_the_model_summary_shows_the_networks_layers_not_the_metric_objects(fit):
    _, result = fit
    rows = [line.split("│") for line in result.stdout.splitlines() if line.startswith("│")]
    names = [row[2].strip() for row in rows if len(row) > 3 and row[2].strip()]
    assert names[0] == "net" and "net.0" in names and "net.11" in names  # LeNet-5's twelve layers
    assert all(name.startswith("net") for name in names), names
    assert "Metric" not in result.stdout and "Confusion" not in result.stdout


def test_the_graph_is_the_networks_layers_with_their_shapes(fit):
    folder, _ = fit
    events = EventAccumulator(str(folder / RUN))
    events.Reload()
    nodes = {node.name: node for node in events.Graph().node}
    conv = nodes["LeNet5/net/0"]
    assert conv.op == "Conv2d" and list(conv.input) == ["input"]
    assert [dim.size for dim in conv.attr["_output_shapes"].list.shape[0].dim] == [1, 6, 28, 28]
    assert list(nodes["output"].input) == ["LeNet5/net/11"]


def test_fit_prints_no_deprecation_from_the_projects_choices(fit):
    """Not TensorBoard's graph through torch.jit.trace (drawn from torch.fx instead), nor Lightning's use of torch's
    LeafSpec (filtered by name: Lightning's own call)."""
    _, result = fit
    assert not [line for line in result.stderr.splitlines() if DEPRECATION.search(line)], result.stderr
    assert "torch.jit" not in result.stderr and "LeafSpec" not in result.stderr


class BarTotals(L.Callback):
    """The bar's total and position at the end of each training epoch."""

    def __init__(self, bar: BatchProgressBar) -> None:
        self.bar = bar
        self.seen: list[tuple[int, int]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen.append((self.bar.train_progress_bar.total, self.bar.train_progress_bar.n))


@pytest.mark.parametrize(
    ("steps", "batch_size", "limit", "batches"),
    [
        (16, 8, "1.0", 15),  # lenet.yaml's 16: 120 images in one step of 15 batches
        (3, 16, "1.0", 8),  # 3 + 3 + 2: the epoch's last step is short (120 = 7 × 16 + 8)
        (3, 16, "2", 6),  # limit_train_batches counts Lightning's steps: two of three batches
        (1, 16, "1.0", 8),
    ],
)
def test_the_progress_bar_counts_batches_not_lightnings_steps(tiny_data, tmp_path, steps, batch_size, limit, batches):
    cli = FashionMNISTCLI(
        [
            "--config", str(LENET), "--data.data_dir", str(tiny_data), "--data.batch_size", str(batch_size),
            "--speed.steps_per_execution", str(steps), "--trainer.limit_train_batches", limit,
            "--trainer.max_epochs", "2", "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
            "--run_metrics.latency", "false",
        ],
        run=False,
    )  # fmt: skip
    (bar,) = [callback for callback in cli.trainer.callbacks if isinstance(callback, BatchProgressBar)]
    totals = BarTotals(bar)
    cli.trainer.callbacks.append(totals)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.num_training_batches == -(-batches // steps)  # what Lightning's own bar would count
    assert totals.seen == [(batches, batches)] * 2


@pytest.fixture
def in_process(monkeypatch, capsys):
    """Runs a command in the test's process (``support.cli_in_process``): what ``command`` checks and returns."""

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        result = cli_in_process(args, cwd, monkeypatch, capsys, cache_in_cwd=False)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    return run


def user_folder_with_published_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of the user's own (the current directory of the commands) holding ``weights/lenet.ckpt``."""
    folder = tmp_path / "user"
    (folder / "weights").mkdir(parents=True)
    shutil.copy(REPO / "weights" / "lenet.ckpt", folder / "weights" / "lenet.ckpt")
    return folder, Path("weights") / "lenet.ckpt"


def test_evaluating_a_published_checkpoint_leaves_no_run_folder_unless_asked(in_process, tmp_path, tiny_data):
    folder, checkpoint = user_folder_with_published_checkpoint(tmp_path)
    test = ("test", "--ckpt_path", str(checkpoint), "--data.data_dir", str(tiny_data))
    out = in_process(*test, cwd=folder).stdout
    assert [path.name for path in folder.iterdir()] == ["weights"]
    accuracy = re.search(r"^test accuracy: (\d+\.\d\d) % \(loss \d\.\d{4}\) of weights/lenet\.ckpt$", out, re.M)
    assert accuracy and "  not recorded: the checkpoint lies outside a run folder" in out
    out = in_process("validate", *test[1:], cwd=folder).stdout
    assert re.search(r"^validation accuracy: \d+\.\d\d % \(loss \d\.\d{4}\) of weights/lenet\.ckpt$", out, re.M)
    assert [path.name for path in folder.iterdir()] == ["weights"]

    asked = in_process(*test, "--trainer.logger.init_args.save_dir", "tensorboard_logs", cwd=folder).stdout
    record = folder / RUN / "metrics.json"
    assert f"  recorded in {RUN / 'metrics.json'}" in asked
    assert percent(json.loads(record.read_text())["test_acc"]) == f"{accuracy.group(1)} %"


def test_predicting_with_a_published_checkpoint_leaves_only_predictions_csv(in_process, tmp_path, tiny_data):
    folder, checkpoint = user_folder_with_published_checkpoint(tmp_path)
    Image.new("L", (28, 28), 0).save(folder / "black.png")
    predict = ("predict", "--ckpt_path", str(checkpoint), "--data.predict.path", "black.png")
    out = in_process(*predict, cwd=folder).stdout
    assert "predicted 1 image: " in out and "wrote predictions.csv" in out
    assert sorted(path.name for path in folder.iterdir()) == ["black.png", "predictions.csv", "weights"]

    out = in_process("predict", "--ckpt_path", str(checkpoint), "--data.data_dir", str(tiny_data), cwd=folder).stdout
    assert "predicted the class probabilities of the 40 test images with weights/lenet.ckpt" in out
    assert sorted(path.name for path in folder.iterdir()) == ["black.png", "predictions.csv", "weights"]


@pytest.mark.parametrize(
    ("config", "checkpoint"),
    [("lenet", "last"), ("fast", "last"), ("seed_efficientnet", "best"), ("efficientnet", "best")],
)
def test_the_next_test_command_takes_the_checkpoint_the_recipe_names(config, checkpoint):
    text = (REPO / "configs" / f"{config}.yaml").read_text()
    assert recipe_checkpoint([text], None) == checkpoint
    assert recipe_checkpoint(["seed_everything: 1\n"], "split") == "best"  # no word on it: validation decides
    assert recipe_checkpoint(["seed_everything: 1\n"], "test") == "last"
