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
    benchmarks = "|".join(path.stem for path in BENCHMARKS.glob("*.py") if path.stem != "results_file")
    for name in names:
        scheme = re.fullmatch(rf"({benchmarks})_([a-z0-9-]+)\.json", name)
        assert scheme, f"{name}: not <benchmark>_<machine kind>.json"
        if scheme.group(1) == "time_to_accuracy":  # an entry per recipe in configs/, with its overlays there
            entries = json.loads((BENCHMARKS / "results" / name).read_text())["entries"]
            configs = {config for entry in entries for config in entry.split(" + ")}
            assert all((BENCHMARKS.parent / "configs" / f"{config}.yaml").is_file() for config in configs), name


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


@pytest.mark.parametrize("script", ["throughput.py", "fit_overhead.py"])
def test_a_rerun_overwrites_its_machine_kinds_file(script: str, rerun_data: Path, tmp_path: Path) -> None:
    """The earlier results of this machine kind are replaced, written whole; other machine kinds' files stay
    (time_to_accuracy.py's, an entry per config: test_time_to_accuracy_keeps_an_entry_per_config_and_overlay)."""
    results = tmp_path / "results"
    results.mkdir()
    kind = results_file.machine_kind()
    name = script.removesuffix(".py")
    options = {
        "throughput.py": ["--ways", "bare", "--models", "lenet", "--repeats", "1", "--epochs", "2", "--images", "128"],
        "fit_overhead.py": ["--models", "lenet", "--epochs", "2", "--images", "2048"],  # two steps of 16 batches
    }[script]
    earlier = results / f"{name}_{kind}.json"
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


def lenet5_step_flop_per_image() -> int:
    """One LeNet-5 training step's FLOPs per image as ``torch.utils.flop_counter`` counts them, by hand: 2 per
    multiply-add of each convolution and matrix product (not the bias, activations, pooling or loss); backward, a
    convolution's weight gradient and input gradient each cost its forward, a dense layer's (two matrix products) too,
    and the first convolution has no input gradient (the images need none)."""
    conv1 = 2 * (6 * 28 * 28) * (1 * 5 * 5)  # 'same' padding: 6@28×28 outputs of 1×5×5 taps
    conv2 = 2 * (16 * 10 * 10) * (6 * 5 * 5)  # 16@10×10 from 6@14×14
    dense = 2 * (400 * 120 + 120 * 84 + 84 * 10)
    forward = conv1 + conv2 + dense
    backward = conv1 + 2 * conv2 + 2 * dense
    return forward + backward  # 2,263,920


def test_a_grouped_convolutions_weight_gradient_is_counted_per_group() -> None:
    """A depthwise convolution's step is three times its forward (output, input and weight gradients), where
    torch's own rule counts the weight gradient as if each output channel saw every input channel."""
    import torch
    from gpu_throughput import count_flops

    conv = torch.nn.Conv2d(8, 8, 3, groups=8, bias=False)
    images = torch.rand(2, 8, 10, 10, requires_grad=True)
    forward = 2 * 2 * (8 * 8 * 8) * (1 * 3 * 3)  # 2 images of 8@8×8 outputs, 1×3×3 taps each
    assert count_flops(lambda: conv(images)) == forward
    assert count_flops(lambda: conv(images).sum().backward()) == 3 * forward


def test_gpu_throughput_measures_three_ways_on_the_cpu(rerun_data: Path, tmp_path: Path) -> None:
    """``--accelerator cpu`` runs what the GPU run does (the overlay with the CPU put after it): three ways in one
    process, their ratios, and the FLOPs of a training step; no peak on a CPU."""
    out = tmp_path / "gpu_throughput.json"
    options = ["--accelerator", "cpu", "--configs", "lenet", "--epochs", "2", "--repeats", "1", "--images", "1024"]
    options += ["--set", "speed.channels_last=false"]  # a variant of the GPU defaults (lenet.yaml: true)
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "gpu_throughput.py"),
            "--data-dir",
            str(rerun_data),
            *options,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    record = json.loads(out.read_text())
    assert (
        record["command"].startswith("python benchmarks/gpu_throughput.py") and "--accelerator cpu" in record["command"]
    )
    assert record["device"] == "cpu"
    result = record["results"]["lenet"]
    rate = result["images_per_s"]
    assert set(rate) == {"fit_gpu", "fit_today", "bare"}
    assert all(value > 0 for value in rate.values())
    assert result["fit_gpu_over_fit_today"] == pytest.approx(rate["fit_gpu"] / rate["fit_today"])
    assert result["fit_gpu_over_bare"] == pytest.approx(rate["fit_gpu"] / rate["bare"])
    assert result["flop_per_image"] == lenet5_step_flop_per_image()
    assert (result["batch_size"], result["precision"], result["arithmetic"]) == (64, "32-true", "fp32")
    assert result["peak_tflops"] is None and result["peak_fraction"] == {"bare": None, "fit_gpu": None}
    assert set(result["targets"]) == {"fit_gpu >= 5x fit_today", "fit_gpu >= 0.9x bare"}
    for way, runs in record["runs"]["lenet"].items():  # one run of two epochs each
        assert len(runs) == 1 and len(runs[0]) == 2, way
    settings = record["settings"]["lenet"]
    assert settings["fit_gpu"]["data_on_device"] is True and settings["fit_today"]["data_on_device"] is False
    assert settings["fit_today"]["float32_matmul_precision"] == "highest"
    assert settings["fit_gpu"]["channels_last"] is False and settings["fit_today"]["channels_last"] is True
    assert "| config | batch | precision | fit_gpu images/s | fit_today images/s | bare images/s |" in done.stdout
    assert re.search(r"lenet +fit_gpu >= 0\.9x bare +(met|not met)", done.stdout)


def test_time_to_accuracy_keeps_an_entry_per_config_and_overlay(rerun_data: Path, tmp_path: Path) -> None:
    """``--overlay`` puts configs after the recipe's, and its entry is the recipe's with the overlays named: a rerun
    replaces that entry in this machine kind's file, the recipe's own entry stays, and so do other machine kinds'
    files. The time is training_span_s where metrics.json records it, else fit_time_s."""
    overlay = tmp_path / "cpu_overlay.yaml"
    overlay.write_text("trainer:\n  accelerator: cpu\ndata:\n  eval_batch_size: 32\n")
    results, logs = tmp_path / "results", tmp_path / "logs"
    results.mkdir()
    out = results / f"time_to_accuracy_{results_file.machine_kind()}.json"
    earlier = {"lenet_1epoch": {"images_per_s": 1}, "lenet_1epoch + cpu_overlay": {"images_per_s": 1}}
    out.write_text(json.dumps({"entries": earlier}) + "\n")
    other_kind = results / "time_to_accuracy_another-machine.json"
    other_kind.write_text('{"images_per_s": 2}\n')
    config = one_epoch_config(tmp_path)
    done = subprocess.run(
        [
            sys.executable, str(BENCHMARKS / "time_to_accuracy.py"), "--data-dir", str(rerun_data), "--config",
            str(config), "--overlay", str(overlay), "--seeds", "1", "--target", "0.5", "--logs", str(logs),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, BENCHMARK_RESULTS_DIR=str(results)),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert other_kind.read_text() == '{"images_per_s": 2}\n'
    assert sorted(path.name for path in results.iterdir()) == sorted([out.name, other_kind.name])
    record = json.loads(out.read_text())
    assert record["machine_kind"] == results_file.machine_kind()
    entries = record["entries"]
    assert entries["lenet_1epoch"] == {"images_per_s": 1}
    entry = entries["lenet_1epoch + cpu_overlay"]
    assert entry["command"].startswith("python benchmarks/time_to_accuracy.py")
    assert entry["overlays"] == [str(overlay)]
    (metrics_file,) = logs.glob("*/seed_1/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    (seed,) = entry["seeds"]
    timed = "training_span_s" if metrics.get("training_span_s") is not None else "fit_time_s"
    assert (entry["timed"], seed["timed"], seed["time_s"]) == (timed, timed, metrics[timed])
    assert entry["median_time_s"] == seed["time_s"] and seed["fit_time_s"] == metrics["fit_time_s"]
    for key in ("time_to_first_batch_s", "compile_s", "training_span_s"):
        assert seed[key] == metrics.get(key)
    assert "| seed | test accuracy | epochs | time | fit_time_s | to first batch | compile | process |" in done.stdout
    config_file = (metrics_file.parent / "config.yaml").read_text()
    assert "eval_batch_size: 32" in config_file  # the overlay's, after the recipe's
