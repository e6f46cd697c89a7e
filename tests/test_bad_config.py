"""A mistyped or impossible config, or damaged data, is a short error naming the problem, before anything is written."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fmnist_lightning.commands.main import main
from support import REPO, error_line, idx_bytes


def fit(tiny_data: Path, logs: Path, *args: str) -> list[str]:
    base = ["fit", "--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(tiny_data)]
    return [*base, "--trainer.logger.init_args.save_dir", str(logs), "--trainer.max_epochs", "1", *args]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.class_path", "fmnist_lightning.models.LeNet6"], "has no attribute 'LeNet6'"),
        (["--model.init_args.dropuot", "0.3"], "Option 'dropuot' is not accepted"),
        (["--trainer.max_epohcs", "3"], "unrecognized arguments: --trainer.max_epohcs"),
    ],
)
def test_a_config_typo_is_refused_naming_the_key(tiny_data, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit:  # jsonargparse's own error, after the usage
        main(fit(tiny_data, tmp_path / "logs", *args))
    assert exit.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_an_impossible_optimizer_argument_is_a_one_line_error_before_the_run_folder(tiny_data, tmp_path, capsys):
    logs = tmp_path / "logs"
    assert main(fit(tiny_data, logs, "--model.init_args.optimizer.init_args.lr", "-0.01")) == 2
    line = error_line(capsys.readouterr().err)
    assert line == "error: --model.init_args.optimizer: Invalid learning rate: -0.01"
    assert not logs.exists()


def test_an_unwritable_log_folder_is_a_one_line_error(tiny_data, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the log folder's parent should be")
    logs = blocker / "logs"
    assert main(fit(tiny_data, logs)) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"error: --trainer.logger.init_args.save_dir {logs}: cannot write there (Not a directory)")
    assert blocker.read_text() == "a file where the log folder's parent should be"


def test_damaged_data_fails_before_the_run_folder_is_made(tiny_data, tmp_path, capsys):
    (tiny_data / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(40, 12, dtype=np.uint8))))
    logs = tmp_path / "logs"
    assert main(fit(tiny_data, logs)) == 2
    assert "t10k-labels holds 40 labels outside 0–9" in error_line(capsys.readouterr().err)
    assert not list(logs.rglob("version_*"))
