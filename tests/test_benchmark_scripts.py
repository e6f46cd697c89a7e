"""The benchmark scripts keep earlier results and refuse bad options before any measuring starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", ["throughput.py", "time_to_accuracy.py", "fit_overhead.py"])
def test_an_existing_results_file_is_refused_and_kept(script: str, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text('{"images_per_s": 1}\n')
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--out", str(results), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"{results} exists; give a new file name" in done.stderr
    assert results.read_text() == '{"images_per_s": 1}\n'


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (["20000", "resnet=60000"], "--images resnet=60000: no model 'resnet'"),
        (["lenet=70000"], "--images lenet=70000: give a number of training images from 1 to 60000"),
        (["lenet="], "--images lenet=: give a number of training images"),
    ],
)
def test_a_bad_images_count_is_refused_before_measuring(images: list[str], message: str, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "throughput.py"), "--images", *images, "--out", str(results)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert not results.exists()
