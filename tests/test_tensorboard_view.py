"""TensorBoard as the comparison view: what its HPARAMS tab and its Scalars tab make of two runs' event files.

Two LeNet-5 fits on the small IDX files with different settings, the first also tested from a separate ``test``
process, are read back by TensorBoard's own hparams plugin, through the HTTP routes its HPARAMS tab calls
(``/experiment`` and ``/session_groups``), and by its EventAccumulator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from lightning.pytorch.trainer.states import TrainerFn
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams.hparams_plugin import HParamsPlugin
from werkzeug.test import Client
from werkzeug.wrappers import Response

from fmnist_lightning.commands.main import main
from fmnist_lightning.observe.hparams import comparable_settings
from support import REPO, write_dataset
from test_cli import cli, ok

COMMON = ("--config", str(REPO / "configs/lenet.yaml"), "--trainer.enable_progress_bar", "false")
FIT = ("--trainer.max_epochs", "1", "--run_metrics.latency", "false", "--run_metrics.activation_memory", "false")
# the second run's settings that differ from the first's (lenet.yaml: SGD lr 0.01, no augmentation, seed 1)
VARIED = {"augmentation.affine": True, "lr": 0.05, "seed": 7}
RESULTS = ["~hp/best_val_acc", "~hp/final_val_acc", "~hp/fit_time_s", "~hp/peak_rss_mb", "~hp/test_acc"]
INTERNAL = {"_class_path", "_instantiator", "files.cache_dir", "data_dir", "predict.path", "files.download"}
INTERNAL |= {"validation", "augmentation", "files", "predict"}  # groups are shown by option


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("view")
    write_dataset(folder / "fmnist")
    data = ("--data.data_dir", str(folder / "fmnist"), "--data.batch_size", "16")
    logger = ("--trainer.logger.init_args.save_dir", str(folder / "logs"))
    assert main(["fit", *COMMON, *data, *logger, *FIT]) == 0
    second = (
        "--data.augmentation.affine",
        "true",
        "--model.init_args.optimizer.init_args.lr",
        "0.05",
        "--seed_everything",
        "7",
    )
    assert main(["fit", *COMMON, *data, *logger, *FIT, *second]) == 0
    # the test accuracy arrives later, from a process of its own
    checkpoint = folder / "logs/LeNet5/version_0/checkpoints/last.ckpt"
    ok(cli("test", *COMMON, *data, *logger, "--ckpt_path", str(checkpoint), cwd=folder))
    return folder / "logs"


def hparams_tab(logdir: Path, route: str, request: dict[str, Any]) -> dict[str, Any]:
    """What TensorBoard's HPARAMS tab receives from ``/data/plugin/hparams/<route>`` for this log folder."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider)
    app = HParamsPlugin(context).get_plugin_apps()[f"/{route}"]
    response = Client(app, Response).post("/", data=json.dumps({"experimentName": "", **request}))
    assert response.status_code == 200, response.get_data(as_text=True)
    return json.loads(response.get_data())


@pytest.fixture(scope="module")
def experiment(logs: Path) -> dict[str, Any]:
    return hparams_tab(logs, "experiment", {"includeMetrics": True})


@pytest.fixture(scope="module")
def sessions(logs: Path) -> dict[str, dict[str, Any]]:
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    request = {"allowedStatuses": statuses, "colParams": [], "startIndex": 0, "sliceSize": 100}
    groups = hparams_tab(logs, "session_groups", request)["sessionGroups"]
    return {group["name"]: group for group in groups}


def test_the_hparams_are_the_comparable_settings_with_readable_values(experiment, sessions):
    infos = {info["name"]: info for info in experiment["hparamInfos"]}
    assert not INTERNAL & set(infos), INTERNAL & set(infos)
    expected_types = {
        "model": "STRING", "optimizer": "STRING", "lr": "FLOAT64", "momentum": "FLOAT64", "batch_size": "FLOAT64",
        "max_epochs": "FLOAT64", "augmentation.affine": "BOOL", "augmentation.hflip": "BOOL", "precision": "STRING",
        "seed": "FLOAT64", "steps_per_execution": "FLOAT64", "channels_last": "BOOL", "validation.protocol": "STRING",
    }  # fmt: skip
    assert {name: infos[name]["type"] for name in expected_types} == {
        name: f"DATA_TYPE_{kind}" for name, kind in expected_types.items()
    }
    # one row per run, named after its folder, with the values its config set
    assert set(sessions) == {"LeNet5/version_0", "LeNet5/version_1"}
    first, second = sessions["LeNet5/version_0"]["hparams"], sessions["LeNet5/version_1"]["hparams"]
    assert {key: first[key] for key in ("model", "optimizer", "lr", "batch_size", "max_epochs", "precision")} == {
        "model": "LeNet5", "optimizer": "SGD", "lr": 0.01, "batch_size": 16, "max_epochs": 1, "precision": "32-true",
    }  # fmt: skip
    assert (
        first["augmentation.affine"] is False and first["seed"] == 1 and first["channels_last"] is True
    )  # lenet.yaml's
    assert {key: second[key] for key in VARIED} == VARIED
    assert second["augmentation.affine"] is True  # a boolean, not 1.0


def test_the_settings_that_differ_come_first(experiment):
    """TensorBoard shows five settings at first: those that differ between the runs, then the rest by name."""
    names = [info["name"] for info in experiment["hparamInfos"]]
    assert names[: len(VARIED)] == sorted(VARIED)
    assert all(info["differs"] == (info["name"] in VARIED) for info in experiment["hparamInfos"])
    assert names[len(VARIED) :] == sorted(names[len(VARIED) :])


def test_the_results_are_the_metric_columns_shown(experiment, sessions, logs):
    metric_tags = [info["name"]["tag"] for info in experiment["metricInfos"]]
    assert metric_tags[:5] == RESULTS  # the tab shows the first five
    assert all(tag.startswith(("~hp/", "~run/")) for tag in metric_tags)  # no learning curve as a column
    for version, tested in ((0, True), (1, False)):
        record = json.loads((logs / f"LeNet5/version_{version}/metrics.json").read_text())
        values = {m["name"]["tag"]: m["value"] for m in sessions[f"LeNet5/version_{version}"]["metricValues"]}
        expected = {f"~hp/{key}": record[key] for key in ("best_val_acc", "final_val_acc", "fit_time_s")}
        expected |= {"~hp/test_acc": record["test_acc"]} if tested else {}
        assert {tag: values[tag] for tag in expected} == pytest.approx(expected)
        assert ("~hp/test_acc" in values) is tested
        assert values["~run/parameters"] == record["parameters"] == 61_706


def test_the_scalars_tab_opens_on_the_learning_curves(logs):
    """TensorBoard groups tags by the part before the first "/" and orders the groups by name: before ``train/``
    only the test's own result, no ``epoch`` staircase and no one-point charts."""
    run = EventAccumulator(str(logs / "LeNet5/version_0"))
    run.Reload()
    tags = run.Tags()["scalars"]
    assert "epoch" not in tags
    assert {"train/loss_epoch", "train/acc_epoch", "val/loss", "val/acc", "train/lr-SGD", "test/acc"} <= set(tags)
    groups = sorted({tag.split("/", 1)[0] for tag in tags})
    assert groups[: groups.index("train")] == ["test"]
    assert groups[groups.index("train") : groups.index("val") + 1] == ["train", "val"]
    summary = EventAccumulator(str(logs / "LeNet5/version_0/summary"))
    summary.Reload()
    assert set(RESULTS) <= set(summary.Tags()["scalars"])
    assert all(tag.split("/", 1)[0] > "val" for tag in summary.Tags()["scalars"])  # after the curves


@pytest.mark.parametrize(("limit", "shown"), [(1.0, None), (1, 1), (0.5, 0.5)])
def test_a_trainer_option_is_shown_where_set(limit, shown, monkeypatch):
    """``limit_train_batches`` 1.0 is every batch (Lightning's default, not shown), 1 is one batch; no seed set, none
    shown."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    trainer = L.Trainer(limit_train_batches=limit, max_epochs=3, logger=False, enable_progress_bar=False)
    trainer.state.fn = TrainerFn.FITTING
    settings = comparable_settings(trainer, L.LightningModule())
    assert settings.get("limit_train_batches") == shown and "seed" not in settings
    assert settings["max_epochs"] == 3 and settings["precision"] == "32-true"
