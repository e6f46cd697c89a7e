"""Settings that moved (fmnist_lightning/old_keys.py), through the one table: both kinds of move in one command line
or config file, an old run folder's config read with its keys where they are now, and each config file read once
per command line. Each kind alone: tests/test_data_options.py (the data groups), tests/test_gpu_options.py (the
model's former speed settings)."""

from __future__ import annotations

import pytest
import yaml

from fmnist_lightning import old_keys
from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.runs import folders
from support import REPO

LENET = str(REPO / "configs" / "lenet.yaml")


def test_every_old_key_has_its_reason_and_no_new_key_is_old():
    assert {new.partition(".")[0] for new in old_keys.OLD_KEYS.values()} <= old_keys.WHY.keys()
    # a chain (a → b → c) would leave b's users with an error naming a key that moved again
    assert not old_keys.OLD_KEYS.keys() & set(old_keys.OLD_KEYS.values())


def test_old_flags_of_both_moves_are_renamed_with_a_warning_each():
    args = ["--data.validation", "kfold", "--model.init_args.compile=true", "--data.validation.fold", "1"]
    with pytest.warns(FutureWarning) as warned:
        renamed = old_keys.renamed_flags([*args, "--data.fold=2", "--data.validation={fold: 3}"])
    assert renamed == [
        "--data.validation.protocol", "kfold", "--speed.compile=true", "--data.validation.fold", "1",
        "--data.validation.fold=2", "--data.validation={fold: 3}",  # the group's flag, now
    ]  # fmt: skip
    assert [str(w.message) for w in warned] == [
        "--data.validation is now --data.validation.protocol",
        "--model.init_args.compile is now --speed.compile",
        "--data.fold is now --data.validation.fold",
    ]


def test_a_config_with_old_keys_of_both_moves_is_one_line_naming_each():
    config = {"model": {"init_args": {"compile": True}}, "data": {"validation": "kfold", "hflip": True}}
    with pytest.raises(UserInputError) as refused:
        old_keys.refuse_old_keys(config, "old.yaml")
    assert str(refused.value) == (
        "old.yaml: data.hflip is now data.augmentation.hflip, data.validation is now data.validation.protocol, "
        "model.init_args.compile is now speed.compile (the data options are grouped; docs/data.md; the speed "
        "settings are apart from the model; docs/cli.md)"
    )
    old_keys.refuse_old_keys({"data": {"validation": {"fold": 1}}, "speed": {"compile": True}}, "new.yaml")


def test_an_old_run_folders_config_is_read_with_its_keys_where_they_are_now():
    old = {
        "model": {"class_path": "LeNet5", "init_args": {"standardize": True, "compile": True}},
        "data": {"batch_size": 64, "validation": "kfold", "fold": 2, "hflip": True, "invert": "auto"},
    }
    assert old_keys.upgraded(old) == {
        "model": {"class_path": "LeNet5", "init_args": {"standardize": True}},
        "data": {
            "batch_size": 64,
            "validation": {"protocol": "kfold", "fold": 2},
            "augmentation": {"hflip": True},
            "predict": {"invert": "auto"},
        },
        "speed": {"compile": True},
    }
    assert old["data"]["validation"] == "kfold"  # the run's own config is left as it was
    now = {"data": {"validation": {"protocol": "test"}, "fold": 1}}  # a group's value under the group's name
    assert old_keys.upgraded(now) == {"data": {"validation": {"protocol": "test", "fold": 1}}}
    assert folders.recipe(old) == {
        "model.class_path": "LeNet5",
        "model.init_args.standardize": True,
        "data.batch_size": 64,
        "data.validation.protocol": "kfold",
        "data.validation.fold": 2,
        "data.augmentation.hflip": True,
    }


def test_each_config_file_is_read_once_per_command_line(tiny_data, tmp_path, monkeypatch):
    """Checked for old keys and asked whether it names a logger (a published checkpoint tested without one writes
    no run folder) from one read."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["fmnist"])
    monkeypatch.setattr(FashionMNISTCLI, "_run_subcommand", lambda self, subcommand: None)
    (tmp_path / "overlay.yaml").write_text("trainer:\n  max_epochs: 1\n")
    parsed = []
    safe_load = yaml.safe_load

    def counted(stream):
        parsed.append(stream)
        return safe_load(stream)

    monkeypatch.setattr("fmnist_lightning.commands.cli.yaml.safe_load", counted)
    args = ["test", "--config", LENET, "--config", "overlay.yaml", "--ckpt_path", str(REPO / "weights" / "lenet.ckpt")]
    cli = FashionMNISTCLI([*args, "--data.data_dir", str(tiny_data)])
    texts = [(REPO / "configs" / "lenet.yaml").read_text(), (tmp_path / "overlay.yaml").read_text()]
    assert sorted(text for text in parsed if text in texts) == sorted(texts)
    assert cli.config.test.trainer.logger is False
