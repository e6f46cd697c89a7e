"""The DataModule's grouped options on the command line and in YAML, and the flat names they had before: renamed
on the command line, refused by name in a config file, translated in an old run folder's config.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.commands.main import main
from fmnist_lightning.data import Augmentation, DataFiles, PredictImages, Validation
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.runs import folders
from support import REPO

LENET = str(REPO / "configs/lenet.yaml")
CUSTOM_CNN = str(REPO / "configs/custom_cnn.yaml")
# a run folder's config.yaml `data:` as the CLI wrote it before the options were grouped (lenet.yaml's settings)
FLAT_DATA = {
    "data_dir": "data/", "batch_size": 64, "eval_batch_size": 1000, "validation": "test", "val_size": 0.1,
    "num_folds": 5, "fold": 0, "split_seed": 1, "kfold_shuffle": True, "augment": False, "crop_padding": 0,
    "hflip": False, "erasing": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "label_smoothing": 0.0,
    "num_workers": 0, "on_device": False, "download": True, "cache_dir": None, "predict_path": None, "invert": "auto",
}  # fmt: skip


@pytest.fixture
def parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["fmnist"])
    return lambda *args: FashionMNISTCLI(list(args), run=False)


def test_the_datamodule_takes_at_most_ten_arguments():
    import inspect

    from fmnist_lightning import FashionMNISTDataModule

    assert len(inspect.signature(FashionMNISTDataModule).parameters) <= 10


def test_a_groups_option_is_set_by_its_dotted_flag_and_the_rest_keep_the_config_s(parse):
    data = parse("--config", CUSTOM_CNN, "--data.validation.fold", "1", "--data.augmentation.hflip", "true").datamodule
    assert data.validation == Validation(protocol="kfold", num_folds=5, fold=1)  # custom_cnn.yaml's kfold kept
    assert data.augmentation == Augmentation(hflip=True)
    assert (data.files, data.predict) == (DataFiles(), PredictImages())


def test_a_config_that_gives_part_of_a_group_gets_the_defaults_for_the_rest(parse, tmp_path):
    (tmp_path / "part.yaml").write_text("data:\n  augmentation:\n    erasing: 0.25\n  validation:\n    val_size: 20\n")
    data = parse("--config", LENET, "--config", str(tmp_path / "part.yaml")).datamodule
    assert data.augmentation == Augmentation(erasing=0.25)
    assert data.validation == Validation(protocol="test", val_size=20)  # lenet.yaml's protocol, the overlay's size


def test_print_config_shows_every_option_of_every_group(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["fit", "--config", CUSTOM_CNN, "--data.validation.fold", "3", "--print_config"])
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert exit.value.code == 0
    assert data["validation"] == {
        "protocol": "kfold", "val_size": 0.1, "num_folds": 5, "fold": 3, "split_seed": 1, "kfold_shuffle": True
    }  # fmt: skip
    assert set(data["augmentation"]) == set(Augmentation.__dataclass_fields__)
    assert data["files"] == {"download": True, "cache_dir": None} and data["predict"] == {
        "path": None,
        "invert": "auto",
    }


def test_an_old_flag_still_works_and_warns_with_its_new_name(parse):
    with pytest.warns(FutureWarning) as warned:
        data = parse(
            "--config", LENET, "--data.validation", "kfold", "--data.fold", "2", "--data.augment=true"
        ).datamodule
    assert [str(w.message) for w in warned if " is now " in str(w.message)] == [
        "--data.validation is now --data.validation.protocol",
        "--data.fold is now --data.validation.fold",
        "--data.augment is now --data.augmentation.affine",
    ]
    assert (data.validation.protocol, data.validation.fold, data.augmentation.affine) == ("kfold", 2, True)


def test_an_old_key_in_a_config_file_is_a_one_line_error_naming_the_new_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old.yaml").write_text("data:\n  fold: 1\n  hflip: true\n")
    assert main(["fit", "--config", LENET, "--config", "old.yaml"]) == 2
    assert capsys.readouterr().err == (
        "error: old.yaml: data.fold is now data.validation.fold, data.hflip is now data.augmentation.hflip "
        "(the data options are grouped; docs/data.md)\n"
    )
    assert not (tmp_path / "tensorboard_logs").exists()


def test_a_run_folder_from_before_the_groups_is_found_by_its_recipe(parse, tmp_path):
    cli = parse("--config", LENET)
    written = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))  # as SaveConfigCallback writes it
    for version, changes in enumerate([{}, {"augment": True}]):  # lenet.yaml's data; the same with the warp on
        run = tmp_path / "logs" / "LeNet5" / f"version_{version}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").touch()
        (run / "config.yaml").write_text(yaml.safe_dump(written | {"data": FLAT_DATA | changes}))
    found = folders.resolve_checkpoint("last", tmp_path / "logs" / "LeNet5", "fit", folders.recipe(cli.config))
    assert found == tmp_path / "logs" / "LeNet5" / "version_0" / "checkpoints" / "last.ckpt"  # past the newer one
    affine = folders.recipe(parse("--config", LENET, "--data.augmentation.affine", "true").config)
    found = folders.resolve_checkpoint("last", tmp_path / "logs" / "LeNet5", "fit", affine)
    assert found.parent.parent.name == "version_1"
    (tmp_path / "logs" / "LeNet5" / "version_1" / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(UserInputError, match=r"version_0, differs in data\.augmentation\.affine"):
        folders.resolve_checkpoint("last", tmp_path / "logs" / "LeNet5", "fit", affine)
