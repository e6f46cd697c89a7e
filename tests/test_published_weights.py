"""The weights in ``weights/``: each file matches its model card, loads, and (on the real data) scores its card.

The score is re-measured independently of the code that wrote the card (``publish.measure_test_accuracy``: the
data module, the Trainer's test loop, the model's own standardisation and flip TTA): plain torch over the raw IDX
test files, replaying what the checkpoint records, and compared with the card as a count of the 10,000 images.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch

from fmnist_lightning import UserInputError, load
from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.commands.main import main
from fmnist_lightning.commands.publish import measure_test_accuracy, publish, sha256
from fmnist_lightning.models import LeNet5, count_params
from fmnist_lightning.weights import read_card
from support import REPO, read_idx

WEIGHTS = sorted((REPO / "weights").glob("*.ckpt"))
STUDY_CONFIGS = ("lenet", "brownlee", "custom_cnn", "seed_efficientnet")
STUDY_WEIGHTS = [path for path in WEIGHTS if path.stem.removesuffix("_plus") in STUDY_CONFIGS]
TEST_SET_SIZE = 10_000
# Fashion-MNIST's training-pixel mean and std (of x / 255) as the project publishes them (docs/data.md, the models'
# ``standardize`` option): written out here, not imported from fmnist_lightning.fashion_mnist, so that a change to
# the package's constants shows up as a miss against the cards rather than moving both sides at once.
PUBLISHED_MEAN, PUBLISHED_STD = 0.2860, 0.3530


def card_of(path: Path) -> dict:
    return read_card(path.with_suffix(".md"))


def test_the_four_study_models_are_published():
    assert set(STUDY_CONFIGS) <= {path.stem for path in STUDY_WEIGHTS}


@pytest.mark.parametrize("path", WEIGHTS, ids=lambda path: path.stem)
def test_published_file_matches_its_card_and_loads(path):
    card = card_of(path)
    assert card["file"] == path.name and sha256(path) == card["sha256"]
    assert path.stat().st_size < 25 * 2**20  # small enough for git
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in checkpoint and "loops" not in checkpoint  # evaluation only
    model = load(path)
    assert type(model).__name__ == card["model"] and count_params(model) == card["parameters"]
    # its config, or the configs it composes (a study config and overlays: configs/lenet.yaml, configs/plus.yaml)
    configs = card["config"] if isinstance(card["config"], list) else [card["config"]]
    assert all((REPO / config).is_file() for config in configs) and 0 < card["test_accuracy"] <= 1
    assert all(f"--config {config}" in card["fit_command"] for config in configs)


def test_each_way_of_loading_a_checkpoint_reads_the_file_once(tiny_data, tmp_path, monkeypatch):
    """``load``, ``load_from_checkpoint`` and ``test --ckpt_path`` (the safe read, then Lightning's restore of the
    run from the file, Lightning's own), with a checkpoint from before the speed settings left the model."""
    old = REPO / "weights" / "lenet_plus.ckpt"
    assert {"channels_last", "compile"} <= torch.load(old, weights_only=True, mmap=True)["hyper_parameters"].keys()
    reads = []
    torch_load = torch.load

    def counted(file, *args, **kwargs):
        reads.append(file)
        return torch_load(file, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    model = load(old)
    assert len(reads) == 1 and not model.training and model.standardize
    assert torch.equal(LeNet5.load_from_checkpoint(old).net[0].weight, model.net[0].weight)
    assert len(reads) == 2
    monkeypatch.chdir(tmp_path)
    args = ["test", "--config", str(REPO / "configs/lenet.yaml"), "--ckpt_path", str(old)]
    assert main([*args, "--data.data_dir", str(tiny_data), "--trainer.enable_progress_bar", "false"]) == 0
    assert len(reads) == 4


@pytest.fixture(scope="module")
def raw_test_set(real_data) -> tuple[torch.Tensor, torch.Tensor]:
    """The official test set straight from its gzipped IDX files: N×1×28×28 pixels x / 255 (float32), labels."""
    images = read_idx(real_data / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(real_data / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (TEST_SET_SIZE, 28, 28) and labels.shape == (TEST_SET_SIZE,)
    pixels = torch.from_numpy(images.copy()).unsqueeze(1).float() / 255
    return pixels, torch.from_numpy(labels.astype("int64"))


def card_correct_count(card: Path) -> int:
    """The card's test accuracy as a count of the 10,000 test images, read from its text (the YAML line and the
    percentage in the prose, which must agree)."""
    text = card.read_text()
    accuracy = float(re.search(r"^test_accuracy: ([0-9.]+)$", text, re.MULTILINE).group(1))
    count = round(accuracy * TEST_SET_SIZE)
    assert abs(accuracy * TEST_SET_SIZE - count) < 1e-6, f"{card.name}: {accuracy} is not a count of 10,000"
    percent = re.search(r"\*\*Test accuracy\*\*: ([0-9.]+) %", text).group(1)
    assert percent == f"{count / 100:.2f}", f"{card.name}: {percent} % in the text, {accuracy} in the YAML"
    return count


def independent_correct_count(path: Path, pixels: torch.Tensor, labels: torch.Tensor) -> int:
    """Correct predictions of a checkpoint on the test set, evaluated by hand: the network the project's loader
    builds (its weights checked against the file's), the preprocessing the checkpoint's hyperparameters record
    (standardisation, EfficientNet's input size, flip TTA, channels-last), batches of 500."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    # the model's own ``standardize``; checkpoints written before the model owned it record the data module's
    standardize = hparams.get("standardize", (checkpoint.get("datamodule_hyper_parameters") or {}).get("standardize"))
    tta_flip = bool(hparams.get("tta_flip", False))
    input_size = hparams.get("input_size", 28)  # EfficientNet's option: upsampled (bilinear) before the network
    # a speed setting, replayed as recorded: 1.5-1.7× faster here for WideResNet and EfficientNet-B0 on 2 CPU threads;
    # the counts are the same either way (measured: every checkpoint, both memory formats)
    memory_format = torch.channels_last if hparams.get("channels_last") else torch.contiguous_format
    net = load(path).net.eval().to(memory_format=memory_format)
    weights = net.state_dict()
    assert weights.keys() == {key.removeprefix("net.") for key in checkpoint["state_dict"]}
    assert all(torch.equal(weights[key.removeprefix("net.")], value) for key, value in checkpoint["state_dict"].items())
    if standardize:
        pixels = (pixels - PUBLISHED_MEAN) / PUBLISHED_STD
    correct = 0
    with torch.inference_mode():
        for images, targets in zip(pixels.split(500), labels.split(500), strict=True):
            if input_size != 28:  # per batch: 10,000 upsampled images would take gigabytes
                images = torch.nn.functional.interpolate(images, size=input_size, mode="bilinear", align_corners=False)
            images = images.contiguous(memory_format=memory_format)
            probabilities = net(images).softmax(dim=1)
            if tta_flip:  # the mean of the probabilities of image and mirror; halving it changes no argmax
                probabilities = probabilities + net(images.flip(-1)).softmax(dim=1)
            correct += int((probabilities.argmax(dim=1) == targets).sum())
    return correct


@pytest.mark.real_data
@pytest.mark.parametrize("path", WEIGHTS, ids=lambda path: path.stem)
def test_published_weights_score_their_cards_test_accuracy(raw_test_set, path):
    """Exactly the card's count: measured 0 images apart for every checkpoint, in either memory format, so float
    nondeterminism leaves nothing to allow for.
    The slowest: EfficientNet-B0 106 s and WideResNet 93 s with flip TTA, 264 s for all 12 on a busy 2-core
    machine (contiguous instead of channels-last: 332 s and 161 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        correct = independent_correct_count(path, *raw_test_set)
    finally:
        torch.set_num_threads(threads)
    assert correct == card_correct_count(path.with_suffix(".md")), f"{path.name}: {correct} of 10,000 correct"


# Issue 31's targets for the two models beyond the study, on the official test set. The card's count is the file's
# (test_published_weights_score_their_cards_test_accuracy re-measures every file against it, independently).
TARGETS = {"best": 0.955, "efficientnet": 0.945}


@pytest.mark.xfail(
    strict=True,
    reason="issue 31: the recipes that aim at these (configs/best_gpu.yaml, configs/efficientnet_gpu.yaml) need a GPU "
    "session (scripts/gpu/train_seeds.py); the published files are the CPU-trained 94.61 % and 93.54 %",
)
@pytest.mark.parametrize("name", TARGETS)
def test_best_and_efficientnet_reach_issue_31s_targets(name):
    assert card_correct_count(REPO / "weights" / f"{name}.md") >= TARGETS[name] * TEST_SET_SIZE


def publish_options(checkpoint: Path, data: Path, out_dir: Path) -> argparse.Namespace:
    return argparse.Namespace(
        checkpoint=checkpoint,
        name="tiny",
        config="configs/lenet.yaml",
        data_dir=data,
        title=None,
        out_dir=out_dir,
        seed_run=[],
    )


def test_publish_writes_a_small_file_and_a_card_and_never_overwrites(tiny_data, tmp_path):
    logs = tmp_path / "logs"
    args = ["fit", "--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(tiny_data)]
    args += [
        "--model.init_args.standardize",
        "true",
        "--trainer.max_epochs",
        "1",
        "--trainer.logger.init_args.save_dir",
        str(logs),
    ]
    FashionMNISTCLI(args)
    (last,) = logs.rglob("last.ckpt")
    card = publish(publish_options(last, tiny_data, tmp_path / "weights"))
    published = tmp_path / "weights" / "tiny.ckpt"
    assert card == read_card(tmp_path / "weights" / "tiny.md") and card["sha256"] == sha256(published)
    assert {"optimizer_states", "loops", "callbacks"} <= set(torch.load(last, weights_only=False))
    assert not {"optimizer_states", "loops", "callbacks"} & set(torch.load(published, weights_only=True))
    assert card["epochs"] == 1 and card["seed"] == 1 and card["model"] == "LeNet5"
    assert card["test_accuracy"] == pytest.approx(measure_test_accuracy(last, tiny_data), abs=1e-6)
    before = published.read_bytes()
    with pytest.raises(UserInputError, match="already exists"):
        publish(publish_options(last, tiny_data, tmp_path / "weights"))
    assert published.read_bytes() == before
    # test without --config evaluates with the checkpoint's own preprocessing (standardised here)
    args = ["test", "--ckpt_path", str(published), "--data.data_dir", str(tiny_data)]
    cli = FashionMNISTCLI([*args, "--trainer.logger.init_args.save_dir", str(tmp_path / "test_logs")])
    assert cli.model.standardize is True  # the model's own setting now, not the data module's
    assert cli.trainer.callback_metrics["test/acc"].item() == pytest.approx(card["test_accuracy"], abs=1e-6)


def test_publish_refuses_a_file_that_is_not_a_checkpoint(tiny_data, tmp_path):
    run = tmp_path / "logs" / "LeNet5" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    (run / "config.yaml").write_text("seed_everything: 1\n")
    broken = run / "checkpoints" / "last.ckpt"
    broken.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(UserInputError, match="not a readable checkpoint"):
        publish(publish_options(broken, tiny_data, tmp_path / "weights"))
    assert not (tmp_path / "weights" / "tiny.ckpt").exists()


@pytest.mark.parametrize("missing", ["metrics.json", "config.yaml"])
def test_publish_names_the_run_file_it_lacks(tiny_data, tmp_path, missing):
    run = tmp_path / "logs" / "LeNet5" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    (run / "config.yaml").write_text("seed_everything: 1\n")
    (run / missing).unlink()
    checkpoint = run / "checkpoints" / "last.ckpt"
    checkpoint.write_bytes(b"never read")
    with pytest.raises(UserInputError, match=f"{missing} is missing or unreadable"):
        publish(publish_options(checkpoint, tiny_data, tmp_path / "weights"))
    assert checkpoint.read_bytes() == b"never read" and not (tmp_path / "weights").exists()


def test_publish_records_overlays_overrides_and_the_spread_over_seeds(tiny_data, tmp_path):
    """A run sized on the command line (here 1 epoch where the configs say 20) is reproduced by its card's command;
    other seeds' runs of the same recipe are each scored by an evaluator that is not publish's, and their mean and
    sample std are the card's; a run of another recipe is refused as a seed, before anything is written."""
    configs = ["configs/lenet.yaml", "configs/plus.yaml"]
    quick = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--data.validation.val_size", "0.2"]

    def fit(seed: int, *extra: str) -> Path:
        logs = tmp_path / f"logs_{seed}"
        args = ["fit", *(arg for config in configs for arg in ("--config", str(REPO / config)))]
        FashionMNISTCLI(
            [
                *args,
                "--data.data_dir",
                str(tiny_data),
                "--seed_everything",
                str(seed),
                *quick,
                *extra,
                "--trainer.logger.init_args.save_dir",
                str(logs),
                "--trainer.enable_progress_bar",
                "false",
            ]
        )
        (best,) = logs.rglob("best.ckpt")
        return best

    runs = {seed: fit(seed) for seed in (1, 2, 3)}
    other_recipe = fit(4, "--model.init_args.optimizer.init_args.lr", "0.5")
    options = argparse.Namespace(
        checkpoint=runs[1], name="tiny", config=configs, data_dir=tiny_data, title=None, out_dir=tmp_path / "weights"
    )
    with pytest.raises(UserInputError, match=r"different recipe .*optimizer\.init_args\.lr"):
        publish(argparse.Namespace(**{**vars(options), "seed_run": [runs[2], other_recipe]}))
    assert not (tmp_path / "weights" / "tiny.ckpt").exists()

    card = publish(argparse.Namespace(**{**vars(options), "seed_run": [runs[2], runs[3]]}))
    pixels = torch.from_numpy(read_idx(tiny_data / "t10k-images-idx3-ubyte.gz").copy()).unsqueeze(1).float() / 255
    labels = torch.from_numpy(read_idx(tiny_data / "t10k-labels-idx1-ubyte.gz").astype("int64"))
    expected = {seed: independent_correct_count(path, pixels, labels) / len(labels) for seed, path in runs.items()}
    assert card["seed_test_accuracy"] == pytest.approx(expected, abs=1e-6)
    values = list(expected.values())
    mean = sum(values) / 3
    assert card["seed_mean"] == pytest.approx(mean, abs=1e-6)
    assert card["seed_std"] == pytest.approx((sum((v - mean) ** 2 for v in values) / 2) ** 0.5, abs=1e-6)
    assert card["config"] == configs and card["precision"] == "32-true"
    assert card["config_sha256"] == {config: sha256(REPO / config) for config in configs}
    assert "--config configs/lenet.yaml --config configs/plus.yaml --seed_everything 1" in card["fit_command"]
    # the run's settings as its config.yaml recorded them (limit_train_batches 2, which CI's full run wrote as 2.0)
    assert " --trainer.max_epochs 1 " in card["fit_command"]
    assert re.search(r" --trainer\.limit_train_batches 2(\.0)? ", card["fit_command"])
    assert "--data.validation.val_size 0.2 " in card["fit_command"]  # a recipe setting of the command line
    text = (tmp_path / "weights" / "tiny.md").read_text()
    assert f"mean {100 * mean:.2f} %" in text and "`configs/lenet.yaml` + `configs/plus.yaml`" in text
