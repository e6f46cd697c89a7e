"""The benchmark scripts keep one results file per benchmark and machine kind, which a rerun replaces, and refuse
bad options before any measuring starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import results_file  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
"""
XEON = """vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx avx2 avx512f amx_tile
"""
EPYC_AVX2 = """vendor_id\t: AuthenticAMD
cpu family\t: 23
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2
"""
LAPTOP = """vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
flags\t\t: fpu sse2 avx avx2
"""


@pytest.mark.parametrize(
    ("cpuinfo", "kind"),
    [(ZEN4, "zen4"), (XEON, "xeon-avx512"), (EPYC_AVX2, "amd-epyc-avx2"), (LAPTOP, "intel-core-i7-8650u-avx2")],
)
def test_the_machine_kind_comes_from_the_cpu(cpuinfo: str, kind: str) -> None:
    assert results_file.cpu_kind(cpuinfo) == kind


def test_a_gpu_names_the_machine_kind() -> None:
    assert results_file.gpu_kind("NVIDIA H200") == "cuda-nvidia-h200"


def test_one_results_file_per_benchmark_and_machine_kind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BENCHMARK_RESULTS_DIR", str(tmp_path))
    kind = results_file.machine_kind()
    assert results_file.results_path("throughput") == tmp_path / f"throughput_{kind}.json"
    assert results_file.results_path("time_to_accuracy") == tmp_path / f"time_to_accuracy_{kind}.json"
    monkeypatch.delenv("BENCHMARK_RESULTS_DIR")
    assert results_file.results_path("fit_overhead") == BENCHMARKS / "results" / f"fit_overhead_{kind}.json"


def test_the_kept_results_are_one_file_per_benchmark_and_machine_kind() -> None:
    names = sorted(path.name for path in (BENCHMARKS / "results").iterdir())
    assert names, "benchmarks/results/ holds the current figures of docs/speed.md"
    for name in names:
        scheme = re.fullmatch(r"(throughput|fit_overhead|time_to_accuracy)_([a-z0-9-]+)\.json", name)
        assert scheme, f"{name}: not <benchmark>_<machine kind>.json"
        if scheme.group(1) == "time_to_accuracy":  # an entry per recipe in configs/
            entries = json.loads((BENCHMARKS / "results" / name).read_text())["entries"]
            assert all((BENCHMARKS.parent / "configs" / f"{config}.yaml").is_file() for config in entries), name


@pytest.fixture
def rerun_data(tmp_path: Path) -> Path:
    from support import write_dataset

    write_dataset(tmp_path / "fmnist", num_train=2048, num_test=64)
    return tmp_path / "fmnist"


def one_epoch_config(tmp_path: Path) -> Path:
    """configs/lenet.yaml, one epoch: time_to_accuracy.py measures a whole recipe."""
    config = tmp_path / "lenet_1epoch.yaml"
    text = (BENCHMARKS.parent / "configs" / "lenet.yaml").read_text()
    config.write_text(text.replace("max_epochs: 20", "max_epochs: 1"))
    assert config.read_text() != text
    return config


@pytest.mark.parametrize("script", ["throughput.py", "fit_overhead.py", "time_to_accuracy.py"])
def test_a_rerun_overwrites_its_machine_kinds_file(script: str, rerun_data: Path, tmp_path: Path) -> None:
    """The earlier results of this machine kind are replaced, written whole; other machine kinds' files stay."""
    results = tmp_path / "results"
    results.mkdir()
    kind = results_file.machine_kind()
    name = script.removesuffix(".py")
    options = {
        "throughput.py": ["--ways", "bare", "--models", "lenet", "--repeats", "1", "--epochs", "2", "--images", "128"],
        "fit_overhead.py": ["--models", "lenet", "--epochs", "2", "--images", "2048"],  # two steps of 16 batches
        "time_to_accuracy.py": ["--config", str(one_epoch_config(tmp_path)), "--seeds", "1", "--target", "0.5"],
    }[script]
    earlier = results / f"{name}_{kind}.json"
    if script == "time_to_accuracy.py":  # an entry per config: the rerun config's is replaced, another config's kept
        earlier.write_text('{"entries": {"lenet_1epoch": {"images_per_s": 1}, "fast": {"images_per_s": 3}}}\n')
    else:
        earlier.write_text('{"images_per_s": 1}\n')
    other_kind = results / f"{name}_another-machine.json"
    other_kind.write_text('{"images_per_s": 2}\n')
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--data-dir", str(rerun_data), *options],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, BENCHMARK_RESULTS_DIR=str(results)),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    record = json.loads(earlier.read_text())
    assert record["machine_kind"] == kind
    if script == "time_to_accuracy.py":
        assert record["entries"]["fast"] == {"images_per_s": 3}
        record = record["entries"]["lenet_1epoch"]
    assert record["command"].startswith(f"python benchmarks/{script}")
    assert "images_per_s" not in record or record["images_per_s"] != 1
    assert other_kind.read_text() == '{"images_per_s": 2}\n'
    assert sorted(path.name for path in results.iterdir()) == sorted([earlier.name, other_kind.name])


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
