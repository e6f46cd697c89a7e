"""``compare`` on run folders the tests write: every kind of run gets its row, the files are real, errors are one
line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import pytest

from fmnist_lightning.commands.compare import compare_command
from fmnist_lightning.commands.main import main

LENET = {
    "model": "LeNet5",
    "status": "finished",
    "device": "cpu",
    "parameters": 61706,
    "parameter_mb": 0.2354,
    "epochs": 20,
    "fit_time_s": 120.5,
    "seconds_per_epoch": 6.025,
    "train_images_per_s": 10000.0,
    "peak_rss_mb": 812.3,
    "activation_peak_mb": 1.5,
    "latency_ms_batch1": 0.41,
    "latency_ms_batch256": 3.2,
    "best_val_acc": 0.8934,
    "final_val_acc": 0.8916,
    "test_acc": 0.8916,
}
CUSTOM = {**LENET, "model": "CustomCNN", "parameters": 225930, "fit_time_s": 2400.0, "test_acc": 0.9183}


def write_run(root: Path, run: str, metrics: dict | str | None) -> Path:
    folder = root / run
    folder.mkdir(parents=True)
    if metrics is not None:
        text = metrics if isinstance(metrics, str) else json.dumps(metrics)
        (folder / "metrics.json").write_text(text)
    return folder


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "tensorboard_logs"
    write_run(root, "CustomCNN/version_0", CUSTOM)
    write_run(root, "LeNet5/version_1", {"model": "LeNet5", "status": "running", "parameters": 61706, "epochs": 3})
    write_run(root, "LeNet5/version_0", LENET)
    write_run(root, "LeNet5/version_2", '{"model": "LeNet5", "status": ')  # cut short mid-write
    write_run(root, "BrownleeCNN/version_0", None)  # a run from before metrics.json
    return root


def md_rows(text: str) -> dict[str, dict[str, str]]:
    """The runs table's rows by run name, each by column header (the table before the study's section)."""
    table = text.split("## The study's own figures")[0]
    header, _, *rows = [
        [cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("|")
    ]
    return {cells[0]: dict(zip(header, cells, strict=True)) for cells in rows}


def test_every_run_gets_a_row_in_md_csv_and_stdout(runs_dir, tmp_path, capsys):
    out = tmp_path / "reports" / "new"
    assert compare_command([str(runs_dir), "--out", str(out)]) == 0

    text = (out / "comparison.md").read_text()
    rows = md_rows(text)
    assert list(rows) == [  # study order, then version
        "LeNet5/version_0",
        "LeNet5/version_1",
        "LeNet5/version_2",
        "BrownleeCNN/version_0",
        "CustomCNN/version_0",
    ]
    lenet = rows["LeNet5/version_0"]
    assert lenet["status"] == "finished"
    assert lenet["test acc (%)"] == "89.16" and lenet["best val acc (%)"] == "89.34"
    assert lenet["params"] == "61,706" and lenet["fit time (s)"] == "120.5" and lenet["images/s"] == "10,000"
    assert lenet["latency batch 256 (ms)"] == "3.20"
    assert rows["CustomCNN/version_0"]["test acc (%)"] == "91.83"
    running = rows["LeNet5/version_1"]
    assert running["status"] == "running or stopped" and running["epochs"] == "3" and running["test acc (%)"] == "—"
    broken = rows["LeNet5/version_2"]
    assert broken["status"] == "broken" and broken["model"] == "LeNet5" and broken["params"] == "—"
    assert "`LeNet5/version_2`: metrics.json unreadable" in text
    assert rows["BrownleeCNN/version_0"]["status"] == "no metrics"
    assert "88.510 % ± 0.348" in text and "5-fold validation mean" in text and "2623.94 s" in text

    with (out / "comparison.csv").open(newline="") as file:
        records = {record["run"]: record for record in csv.DictReader(file)}
    assert list(records) == list(rows)
    assert float(records["LeNet5/version_0"]["test_acc"]) == 0.8916  # fractions, as in metrics.json
    assert int(records["CustomCNN/version_0"]["parameters"]) == 225930
    assert [records[run]["status"] for run in rows] == ["finished", "running", "broken", "no_metrics", "finished"]
    assert records["LeNet5/version_1"]["test_acc"] == "" and records["BrownleeCNN/version_0"]["model"] == "BrownleeCNN"

    stdout = capsys.readouterr().out
    assert "| LeNet5/version_0 | LeNet5 | finished |" in stdout and str(out / "comparison.png") in stdout


def colored_pixels(png: Path) -> int:
    """Pixels of the run markers' colours; the text, axes and grid are black or grey."""
    rgb = matplotlib.image.imread(png)[..., :3]
    return int(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.2).sum())


def test_plot_is_a_png_with_a_marker_per_plotted_run(runs_dir, tmp_path):
    assert compare_command([str(runs_dir), "--out", str(tmp_path / "out")]) == 0
    png = tmp_path / "out" / "comparison.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(png).shape[:2] == (450, 700)
    assert colored_pixels(png) > 100


def test_single_run_and_single_model_folders(runs_dir, tmp_path):
    assert compare_command([str(runs_dir / "LeNet5" / "version_0"), "--out", str(tmp_path / "one")]) == 0
    assert list(md_rows((tmp_path / "one" / "comparison.md").read_text())) == ["LeNet5/version_0"]
    assert compare_command([str(runs_dir / "LeNet5"), "--out", str(tmp_path / "model")]) == 0
    rows = md_rows((tmp_path / "model" / "comparison.md").read_text())
    assert list(rows) == ["LeNet5/version_0", "LeNet5/version_1", "LeNet5/version_2"]


def test_no_plottable_run_still_writes_a_png(tmp_path):
    write_run(tmp_path / "logs", "LeNet5/version_0", {"model": "LeNet5", "status": "running"})
    assert compare_command([str(tmp_path / "logs"), "--out", str(tmp_path / "out")]) == 0
    png = tmp_path / "out" / "comparison.png"
    dark = (matplotlib.image.imread(png)[..., :3] < 0.5).all(axis=-1)
    assert colored_pixels(png) == 0
    assert dark[200:250, 200:500].sum() > 100 and not dark[:, :100].any()  # centred text, no axes


def test_missing_dir_is_a_one_line_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: RUNS_DIR not found: {tmp_path / 'nowhere'}\n"
    assert not (tmp_path / "out").exists()


def test_dir_without_runs_is_an_error_with_a_hint(tmp_path, capsys):
    (tmp_path / "logs" / "LeNet5").mkdir(parents=True)
    assert main(["compare", str(tmp_path / "logs"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run folders") and "fit --config configs/lenet.yaml" in err
