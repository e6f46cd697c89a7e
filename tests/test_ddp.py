"""Lightning's DDP on CPU: two processes (gloo) train on disjoint shards, test to the single-process figure, and
leave one run folder. Real subprocesses, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from support import REPO, write_dataset
from test_cli import cli, ok

TRAIN_IMAGES, TEST_IMAGES = 96, 40  # divisible by 2 ranks × batch 16: no padding by the distributed sampler


def ddp_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A two-process command; launched again when its rendezvous port was taken before it could listen on it.

    Lightning picks MASTER_PORT by binding port 0 and closing it again; with the suite's other worker starting
    processes beside this one, another process can take that port first (EADDRINUSE, seen once in CI)."""
    for _ in range(3):
        result = cli(*args, cwd=cwd)
        if result.returncode == 0 or "EADDRINUSE" not in result.stderr:
            break
        if args[0] == "fit":  # the next launch makes the run folder afresh: version_0, as the tests expect
            shutil.rmtree(cwd / "tensorboard_logs", ignore_errors=True)
    return ok(result)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("ddp")
    write_dataset(folder / "data", num_train=TRAIN_IMAGES, num_test=TEST_IMAGES)
    record = json.dumps({"class_path": "record_sample_ids.RecordSampleIds", "init_args": {"folder": str(folder)}})
    common = ["--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(folder / "data")]
    common += ["--data.batch_size", "16", "--run_metrics.latency", "false", "--trainer.enable_progress_bar", "false"]
    common += ["--data.on_device", "true"]  # each rank gathers its shard's batches from its device's copy
    two_processes = [
        "--config",
        str(REPO / "configs/ddp.yaml"),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
    ]
    with pytest.MonkeyPatch.context() as patch:  # the subprocesses import the recording callback from tests/
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])))
        fit = ["fit", *common, *two_processes, "--trainer.max_epochs", "1", f"--trainer.callbacks+={record}"]
        ddp_cli(*fit, cwd=folder)
    one_step = tmp_path_factory.mktemp("ddp_one_step")  # lenet.yaml takes 8 steps per training step
    ddp_cli(*fit[:-1], "--speed.steps_per_execution", "1", cwd=one_step)
    run = folder / "tensorboard_logs" / "LeNet5" / "version_0"
    results = {}
    for name, processes in (("ddp", two_processes), ("single", [])):
        ddp_cli("test", *common, *processes, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), cwd=folder)
        results[name] = json.loads((run / "metrics.json").read_text())["test_acc"]
    one_step_run = one_step / "tensorboard_logs" / "LeNet5" / "version_0"
    return {"folder": folder, "run": run, "test_acc": results, "one_step_run": one_step_run}


def test_each_rank_trains_on_its_own_half(ddp):
    seen = [(ddp["folder"] / f"rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == TRAIN_IMAGES // 2
    assert not set(seen[0]) & set(seen[1]) and len(set(seen[0]) | set(seen[1])) == TRAIN_IMAGES


def test_ddp_test_accuracy_equals_a_single_process_test(ddp):
    assert ddp["test_acc"]["ddp"] == ddp["test_acc"]["single"]


def test_one_run_folder_one_set_of_checkpoints(ddp):
    runs: list[Path] = list(ddp["run"].parent.iterdir())
    assert runs == [ddp["run"]]
    assert sorted(p.name for p in (ddp["run"] / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len(list(ddp["run"].glob("events.out.tfevents.*"))) == 3  # fit, the DDP test, the single test


def test_the_test_confusion_matrix_counts_every_rank(ddp):
    """Each rank tests half the images; the synced matrix holds all of them, written once (by rank 0)."""
    events = EventAccumulator(str(ddp["run"]), size_guidance={"tensors": 0})
    events.Reload()
    for record in events.Tensors("test/confusion_matrix/text_summary"):
        table = record.tensor_proto.string_val[0].decode()
        assert sum(int(cell) for line in table.splitlines()[2:] for cell in line.split("|")[2:-1]) == TEST_IMAGES


def test_several_steps_per_training_step_sync_every_step_across_ranks(ddp):
    """lenet.yaml's steps_per_execution (each rank's 3 batches in one training step) trains the weights of one step
    per training step: the gradients are averaged across the ranks at every step, not once."""
    weights = [
        torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        for run in (ddp["run"], ddp["one_step_run"])
    ]
    assert weights[0].keys() == weights[1].keys()
    for name, weight in weights[0].items():
        assert torch.equal(weights[1][name], weight), name
