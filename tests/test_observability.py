"""What a run leaves to look at: TensorBoard scalars, figures, text and hparams, metrics.json, the curves, profiles.

One LeNet-5 run on the small IDX files (``fit`` for two epochs in the test's process, then ``test`` on its last
checkpoint in a process of its own, which adds to the run's record as a user's later command does) is read back
through TensorBoard's own EventAccumulator.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import Strategy
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from fmnist_lightning.commands.main import main
from fmnist_lightning.fashion_mnist import CLASS_NAMES
from fmnist_lightning.observe import run_metrics
from fmnist_lightning.observe.measures import compile_seconds
from support import REPO, run_in_process
from test_cli import cli, ok

TEST_IMAGES = 40  # the tiny_data fixture's test set, which lenet.yaml validates on
POSITIVE = (
    "parameters", "parameter_mb", "epochs", "fit_time_s", "seconds_per_epoch", "train_images_per_s",
    "time_to_first_batch_s", "training_span_s", "peak_rss_mb", "activation_peak_mb", "latency_ms_batch1",
    "latency_ms_batch256",
)  # fmt: skip
FRACTIONS = ("best_val_acc", "final_val_acc", "test_acc")


def run_lenet(folder: Path, data: Path, *extra: str) -> Path:
    common = ("--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(data), "--data.batch_size", "16",
              "--trainer.enable_progress_bar", "false", *extra)  # fmt: skip
    fit = ("--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "2", "--trainer.profiler", "simple")
    with pytest.MonkeyPatch.context() as patch:
        assert run_in_process(["fit", *common, *fit], folder, patch, cache_in_cwd=False) == 0
    ok(cli("test", *common, "--ckpt_path", "last", cwd=folder))
    return folder / "tensorboard_logs" / "LeNet5" / "version_0"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from support import write_dataset

    folder = tmp_path_factory.mktemp("run")
    write_dataset(folder / "fmnist")
    return run_lenet(folder, folder / "fmnist")


@pytest.fixture(scope="module")
def events(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_metrics_json_has_every_measure(run):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "LeNet5" and metrics["status"] == "finished" and metrics["device"] == "cpu"
    assert metrics["parameters"] == 61_706 and metrics["epochs"] == 2
    for key in POSITIVE:
        assert metrics[key] > 0, key
    for key in FRACTIONS:
        assert 0 <= metrics[key] <= 1, key
    assert len(metrics["epoch_times_s"]) == len(metrics["val_acc_by_epoch"]) == len(metrics["train_loss_by_epoch"]) == 2
    assert metrics["fit_time_s"] > sum(metrics["epoch_times_s"])
    assert metrics["best_val_acc"] == max(metrics["val_acc_by_epoch"])
    assert "cuda_peak_allocated_mb" not in metrics  # only on GPU
    # the timed span: from the first training batch, without the first batch's profiling or compiling (none here)
    assert metrics["training_span_s"] <= metrics["fit_time_s"] - metrics["time_to_first_batch_s"]
    assert metrics["compile_s"] == 0.0
    # the speed settings: the trainer's defaults, and lenet.yaml's
    assert metrics["precision"] == "32-true" and metrics["float32_matmul_precision"] == "highest"  # CPU: as torch's
    assert metrics["data_on_device"] is False and metrics["compile"] is False and metrics["compile_mode"] is None
    assert metrics["channels_last"] is True and metrics["steps_per_execution"] == 16


def test_scalars_cover_loss_accuracy_learning_rate_and_time(events, run):
    scalars = set(events.Tags()["scalars"])
    expected = {"train/loss_step", "train/acc_epoch", "val/loss", "val/acc", "train/lr-SGD", "~time/epoch_s",
                "~time/train_images_per_s", "test/acc"}  # fmt: skip
    assert expected <= scalars, expected - scalars
    figures = set(summary_events(run).Tags()["scalars"])  # the run's single figures (tests/test_tensorboard_view.py)
    assert {"~hp/fit_time_s", "~hp/peak_rss_mb", "~run/training_span_s"} <= figures
    assert "~run/steps_per_execution" not in figures  # measures, not settings
    assert [event.value for event in events.Scalars("train/lr-SGD")] == pytest.approx([0.01, 0.01])
    assert all(0 <= event.value <= 1 for event in events.Scalars("val/acc"))
    assert all(event.value > 0 for event in events.Scalars("~time/train_images_per_s"))
    test_acc = json.loads((run / "metrics.json").read_text())["test_acc"]
    assert events.Scalars("test/acc")[-1].value == pytest.approx(test_acc)


def decoded(events: EventAccumulator, tag: str) -> Image.Image:
    return Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string))


def test_confusion_matrices_as_images_and_text(events):
    for stage in ("val", "test"):
        image = decoded(events, f"{stage}/confusion_matrix")
        assert image.width > 500 and image.height > 300
    assert len(events.Images("val/confusion_matrix")) == 2  # every validation epoch
    table = events.Tensors("test/confusion_matrix/text_summary")[-1].tensor_proto.string_val[0].decode()
    counts = [[int(cell) for cell in line.split("|")[2:-1]] for line in table.splitlines()[2:]]
    assert len(counts) == 10 and sum(map(sum, counts)) == TEST_IMAGES
    per_class = events.Tensors("test/per_class/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert all(name in per_class for name in CLASS_NAMES) and "precision" in per_class
    supports = [int(line.split("|")[5]) for line in per_class.splitlines()[2:]]
    assert supports == [sum(row) for row in counts]


def test_grids_of_test_images(events):
    shown = [tag for tag in ("test/misclassified", "test/correct") if tag in events.Tags()["images"]]
    assert shown  # 40 predictions: at least one of the two kinds
    for tag in shown:
        grid = decoded(events, tag).convert("L")
        assert grid.width > 500
        assert len(grid.getcolors(maxcolors=256) or range(256)) > 100  # the images' grey levels, not a blank page


def summary_events(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run / "summary"), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_hparams_carry_the_results_and_the_graph_is_logged(events, run):
    summary = summary_events(run)
    content = summary.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["model"].string_value == "LeNet5"
    assert session.hparams["batch_size"].number_value == 16
    assert 0 <= summary.Scalars("~hp/test_acc")[-1].value <= 1
    assert events.Tags()["graph"]


def test_learning_curves_and_profiler_report_in_the_run_folder(run):
    with Image.open(run / "learning_curves.png") as curves:
        assert curves.width > 500 and len(curves.getcolors(maxcolors=100_000) or []) > 10  # drawn, not blank
    assert "run_training_epoch" in (run / "fit-profile.txt").read_text()


def test_compare_reads_the_real_run(run, tmp_path, monkeypatch):
    """``compare`` on what ``fit`` and ``test`` wrote (tests/test_compare.py covers many runs and broken ones)."""
    out = tmp_path / "reports"
    assert run_in_process(["compare", str(run.parents[1]), "--out", str(out)], tmp_path, monkeypatch) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    row = next(line for line in (out / "comparison.md").read_text().splitlines() if "LeNet5/version_0" in line)
    assert "| finished |" in row and f"| {100 * metrics['test_acc']:.2f} |" in row and "| 61,706 |" in row
    with Image.open(out / "comparison.png") as plot:
        assert plot.width > 300


def test_the_timed_span_and_the_device_measures(tiny_data, tmp_path, monkeypatch):
    """The span leaves out the first batch's profiling (made to take 0.5 s here), which ``fit_time_s`` includes; the
    latency is measured in ``on_train_end``, before Lightning's teardown moves a GPU run's model to the CPU, on the
    device the model trained on; a resumed fit adds its span; the trainer's precision is recorded."""
    events: list[tuple[str, str]] = []

    def slow_profiling(*args, **kwargs) -> float:
        time.sleep(0.5)
        return 1.0

    def latency(model, batch_size: int) -> float:
        events.append(("latency", model.device.type))
        return 1.0

    def teardown(strategy: Strategy) -> None:
        events.append(("teardown", strategy.root_device.type))
        strategy_teardown(strategy)

    strategy_teardown = Strategy.teardown
    monkeypatch.setattr(run_metrics, "activation_peak_mb", slow_profiling)
    monkeypatch.setattr(run_metrics, "inference_latency_ms", latency)
    monkeypatch.setattr(Strategy, "teardown", teardown)
    logs = tmp_path / "logs"
    args = ["fit", "--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(tiny_data)]
    args += ["--trainer.logger.init_args.save_dir", str(logs), "--trainer.enable_progress_bar", "false"]
    args += ["--data.batch_size", "16", "--trainer.precision", "bf16-mixed"]
    assert main([*args, "--trainer.max_epochs", "1"]) == 0
    record = logs / "LeNet5" / "version_0" / "metrics.json"
    first = json.loads(record.read_text())
    assert first["precision"] == "bf16-mixed"
    assert 0 < first["training_span_s"] <= first["fit_time_s"]
    assert first["fit_time_s"] - first["time_to_first_batch_s"] - first["training_span_s"] >= 0.5  # the profiling
    assert first["compile_s"] == 0.0
    assert events == [("latency", "cpu"), ("latency", "cpu"), ("teardown", "cpu")]

    events.clear()
    assert main([*args, "--trainer.max_epochs", "2", "--ckpt_path", "last"]) == 0
    resumed = json.loads(record.read_text())
    assert resumed["epochs"] == 2 and resumed["training_span_s"] > first["training_span_s"]
    assert resumed["training_span_s"] <= resumed["fit_time_s"] - first["fit_time_s"] + first["training_span_s"]
    assert events == [("latency", "cpu"), ("latency", "cpu"), ("teardown", "cpu")]


def test_compile_seconds_counts_torch_compile_time():
    """``compile_s``'s measure, on a function compiled by TorchDynamo alone (an Inductor compile of LeNet-5 takes
    about a minute on a 2-core CPU; the GPU tests cover a compiled fit)."""
    before = compile_seconds()
    compiled = torch.compile(lambda x: (x * 3).cos() + before, backend="eager")
    compiled(torch.rand(4))
    assert compile_seconds() > before >= 0.0


def test_the_documented_way_to_add_a_metric(tiny_data, tmp_path, monkeypatch):
    """docs/architecture.md's metric callback, run as written: its figure is sklearn's macro F1 of the final model's
    predictions on the validation images."""
    import sys

    from sklearn.metrics import f1_score

    from fmnist_lightning.commands.cli import FashionMNISTCLI
    from test_registry import architecture_example

    (tmp_path / "my_metrics.py").write_text(architecture_example("my_metrics.py"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("sys.argv", ["fmnist"])
    args = ["fit", "--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(tiny_data)]
    args += ["--trainer.max_epochs", "1", "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    args += ["--trainer.callbacks+=my_metrics.MacroF1", "--trainer.enable_progress_bar", "false"]
    try:
        cli = FashionMNISTCLI(args)
    finally:
        sys.modules.pop("my_metrics", None)
    images, targets = cli.datamodule.val_set.__getitems__(range(len(cli.datamodule.val_set)))
    with torch.no_grad():
        predicted = cli.model.eval()(images).argmax(dim=1)
    expected = f1_score(targets.argmax(dim=1).numpy(), predicted.numpy(), average="macro", labels=range(10))
    assert cli.trainer.callback_metrics["val/f1_macro"].item() == pytest.approx(expected, abs=1e-6)
