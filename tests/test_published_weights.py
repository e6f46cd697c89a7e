"""The weights in ``weights/``: each file matches its model card, loads, and (on the real data) scores its card."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from fmnist_lightning import UserInputError, load
from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.commands.publish import measure_test_accuracy, publish, sha256
from fmnist_lightning.models import count_params
from fmnist_lightning.weights import read_card
from support import REPO

WEIGHTS = sorted((REPO / "weights").glob("*.ckpt"))
STUDY_CONFIGS = ("lenet", "brownlee", "custom_cnn", "seed_efficientnet")
STUDY_WEIGHTS = [path for path in WEIGHTS if path.stem.removesuffix("_plus") in STUDY_CONFIGS]  # fast to evaluate


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


@pytest.mark.real_data
@pytest.mark.parametrize("path", STUDY_WEIGHTS, ids=lambda path: path.stem)
def test_published_study_weights_score_their_cards_test_accuracy(real_data, path):
    assert measure_test_accuracy(path, real_data) == pytest.approx(card_of(path)["test_accuracy"], abs=1e-6)


def publish_options(checkpoint: Path, data: Path, out_dir: Path) -> argparse.Namespace:
    return argparse.Namespace(
        checkpoint=checkpoint, name="tiny", config="configs/lenet.yaml", data_dir=data, title=None, out_dir=out_dir
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
