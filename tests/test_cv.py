"""``cv``: the study's k-fold cross-validation, run in-process on 120 synthetic training images."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from sklearn.model_selection import KFold

from fmnist_lightning.commands.cv import cv_command, study_fold_accuracies, summary_line
from fmnist_lightning.commands.main import main
from fmnist_lightning.data import Validation
from fmnist_lightning.data.datamodule import FashionMNISTDataModule
from fmnist_lightning.models import LeNet5
from support import REPO, sample_ids, write_dataset

LENET = str(REPO / "configs" / "lenet.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
# seconds per fold on a busy 2-core machine: no sanity check, graph trace, latency or memory profile
FAST = [
    "--trainer.num_sanity_val_steps", "0",
    "--trainer.logger.init_args.log_graph", "false",
    "--run_metrics.latency", "false",
    "--run_metrics.activation_memory", "false",
]  # fmt: skip


def fit_args(root: Path) -> list[str]:
    data = [
        "--data.data_dir",
        str(root / "fmnist"),
        "--data.batch_size",
        "16",
        "--data.files.cache_dir",
        str(root / "cache"),
    ]
    return ["--config", LENET, *data, *QUIET, *FAST]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two cv runs into one reports/: 3 shuffled folds validated every epoch; then 2 unshuffled folds of 3 epochs
    validated every second epoch, so the fit's last validation scored the model of epoch 2, not the final one."""
    root = tmp_path_factory.mktemp("cv")
    write_dataset(root / "fmnist")
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.chdir(root)
        patch.setattr("sys.argv", ["fmnist"])  # LightningCLI warns when pytest's own arguments are there
        first = cv_command([*fit_args(root), "--folds", "3", "--trainer.max_epochs", "1"])
        first_files = {path.name: path.read_bytes() for path in (root / "reports").iterdir()}
        second_args = ["--folds", "2", "--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "2"]
        second_args += ["--data.validation.kfold_shuffle", "false"]
        second = cv_command([*fit_args(root), *second_args])
    return {"root": root, "codes": (first, second), "first_files": first_files, "stdout": stdout.getvalue()}


def summary(root: Path, stem: str) -> dict:
    return json.loads((root / "reports" / f"{stem}.json").read_text())


def test_fold_scores_and_their_summary(two_runs):
    root = two_runs["root"]
    assert two_runs["codes"] == (0, 0)
    result = summary(root, "cv_LeNet5")
    accuracies = result["fold_accuracies"]
    assert result["model"] == "LeNet5" and result["folds"] == 3 and len(accuracies) == 3
    assert all(0 <= accuracy <= 100 for accuracy in accuracies)
    assert result["mean"] == pytest.approx(np.mean(accuracies), abs=1e-9)
    assert result["std"] == pytest.approx(np.std(accuracies, ddof=0), abs=1e-9)
    assert result["seed_everything"] == 1 and result["split_seed"] == 1
    assert summary_line(accuracies) in two_runs["stdout"].splitlines()

    # one run folder per fold, each the fit of its own fold, with the model of the last epoch
    assert result["runs"] == [f"tensorboard_logs/LeNet5_cv/version_{k}" for k in range(3)]
    for k, (run, detail) in enumerate(zip(result["runs"], result["fold_details"], strict=True)):
        folds = yaml.safe_load((root / run / "config.yaml").read_text())["data"]["validation"]
        assert (folds["protocol"], folds["num_folds"], folds["fold"]) == ("kfold", 3, k)
        assert detail["val_images"] == 40 and detail["epochs"] == 1
        assert f"fold {k + 1}/3: {accuracies[k]:.3f} %  (run: {run})" in two_runs["stdout"]


def final_model_accuracy(run: Path, datamodule: FashionMNISTDataModule, epochs: int) -> float:
    """Accuracy (%) on the held-out fold of the weights the fit ended with (``last.ckpt`` of the last epoch)."""
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["epoch"] == epochs - 1
    model = LeNet5()
    model.load_state_dict(checkpoint["state_dict"])
    images, targets = datamodule.val_set.__getitems__(range(len(datamodule.val_set)))
    with torch.no_grad():
        return 100 * (model.eval()(images).argmax(1) == targets.argmax(1)).float().mean().item()


@pytest.mark.parametrize(
    ("stem", "scored_by"),
    [
        ("cv_LeNet5", "validation after the last training step"),
        ("cv_LeNet5.2", "extra validation of the final model after fit"),
    ],
)
def test_each_fold_scores_the_final_model(two_runs, make_datamodule, stem, scored_by):
    root = two_runs["root"]
    result = summary(root, stem)
    for detail in result["fold_details"]:
        assert detail["scored_by"] == scored_by
        folds = Validation("kfold", num_folds=result["folds"], fold=detail["fold"], kfold_shuffle=result["shuffle"])
        fold = make_datamodule(root / "fmnist", validation=folds)
        assert detail["accuracy"] == pytest.approx(
            final_model_accuracy(root / detail["run"], fold, detail["epochs"]), abs=1e-4
        )


def test_a_second_run_keeps_the_first_runs_files(two_runs):
    reports = two_runs["root"] / "reports"
    assert sorted(path.name for path in reports.iterdir()) == sorted(
        f"cv_LeNet5{suffix}.{ext}" for suffix in ("", ".2") for ext in ("json", "md", "png")
    )
    assert {name: (reports / name).read_bytes() for name in two_runs["first_files"]} == two_runs["first_files"]
    second = summary(two_runs["root"], "cv_LeNet5.2")
    assert second["folds"] == 2 and second["runs"] == [
        "tensorboard_logs/LeNet5_cv/version_3",
        "tensorboard_logs/LeNet5_cv/version_4",
    ]
    for stem, result in (("cv_LeNet5", summary(two_runs["root"], "cv_LeNet5")), ("cv_LeNet5.2", second)):
        markdown = (reports / f"{stem}.md").read_text()
        assert result["shuffle"] is (stem == "cv_LeNet5")
        folds = f"`KFold({result['folds']}, " + (
            "shuffle=True, random_state=1)`" if result["shuffle"] else "shuffle=False)` (in file order)"
        )
        assert f"Folds of {folds} over the training images" in markdown
        assert summary_line(result["fold_accuracies"]) in markdown and f"]({stem}.png)" in markdown
        for accuracy, run in zip(result["fold_accuracies"], result["runs"], strict=True):
            assert f"| {accuracy:.3f} | `{run}` |" in markdown
        with Image.open(reports / f"{stem}.png") as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 200
            image.verify()


@pytest.mark.parametrize("num_folds", [3, 5])
def test_folds_are_sklearns_kfold_disjoint_and_covering(tiny_data, make_datamodule, num_folds):
    all_ids = set(range(120))  # the synthetic training images' ids are their indices
    seen: set[int] = set()
    expected = KFold(num_folds, shuffle=True, random_state=1).split(np.zeros(120))
    for fold, (_, study_val) in enumerate(expected):
        module = make_datamodule(tiny_data, validation=Validation("kfold", num_folds=num_folds, fold=fold))
        val = sample_ids(module.val_set.images)
        train = set(sample_ids(module.train_set.images))
        assert sorted(val) == sorted(study_val)
        assert not seen & set(val) and not train & set(val) and train | set(val) == all_ids
        seen |= set(val)
    assert seen == all_ids


def test_summary_line_reproduces_the_studys_figures():
    assert summary_line(study_fold_accuracies("CustomCNN")) == "Accuracy: mean=91.835 std=0.519, n=5"
    assert summary_line(study_fold_accuracies("BrownleeCNN")) == "Accuracy: mean=88.510 std=0.348, n=5"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", LENET, "--folds", "1"], "--folds must be at least 2"),
        (["--config", LENET, "--folds", "five"], "argument --folds: invalid int value: 'five'"),
        (["--config", "configs/missing.yaml"], "--config configs/missing.yaml: no such file"),
        (["--trainer.max_epochs", "1"], "cv needs the recipe to cross-validate: --config"),
        (
            ["--config", LENET, "--data.validation.fold", "2"],
            "cv chooses the folds itself and trains each from scratch: drop",
        ),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["cv", *args]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and message in stderr
    assert list(tmp_path.iterdir()) == []  # no run and no report started


def test_a_failing_fold_names_itself_and_the_completed_runs(tmp_path, monkeypatch, capsys):
    write_dataset(tmp_path / "fmnist")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["fmnist"])
    setup = FashionMNISTDataModule.setup

    def fail_on_fold_1(self: FashionMNISTDataModule, stage: str | None = None) -> None:
        if self.validation.fold == 1:
            raise RuntimeError("disk full")
        setup(self, stage)

    monkeypatch.setattr(FashionMNISTDataModule, "setup", fail_on_fold_1)
    with pytest.raises(RuntimeError, match="disk full"):
        cv_command([*fit_args(tmp_path), "--folds", "3", "--trainer.max_epochs", "1"])
    stderr = capsys.readouterr().err
    assert "cv stopped in fold 2/3 (--data.validation.fold 1) by RuntimeError('disk full')" in stderr
    assert "completed: fold 1 " in stderr and "in tensorboard_logs/LeNet5_cv/version_0" in stderr
    assert list((tmp_path / "reports").iterdir()) == []
