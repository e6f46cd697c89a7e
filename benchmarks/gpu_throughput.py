"""Training throughput on one GPU, three ways in one process: the GPU defaults, today's path and a bare loop.

For each config (``--configs``; the four study recipes and the project's ``fast``, ``efficientnet`` and ``best``):

- ``fit_gpu``: the project's ``fit`` with the GPU defaults, ``--config configs/<c>.yaml --config configs/gpu.yaml``
  (``configs/gpu_bf16.yaml``, which adds bf16 mixed precision, for the project's own recipes): the data on the
  device, TF32 matrix products, large evaluation batches;
- ``fit_today``: the same ``fit`` as it ran on a GPU before those defaults: ``--trainer.accelerator gpu
  --trainer.devices 1 --data.on_device false --speed.float32_matmul_precision highest``, the recipe's own
  precision;
- ``bare``: the plainest loop that does fit_gpu's work: the same model (built by the CLI from fit_gpu's arguments,
  with its channels-last and compile options and its TF32 setting), optimizer, precision (``torch.autocast`` to
  bfloat16 where the trainer's is ``bf16-mixed``) and batch size, batches gathered from tensors on the device; no
  validation, logging, weight averaging or schedule.

Both fits run in this process exactly as ``python -m fmnist_lightning fit`` runs them (``commands.main.main``), with
TensorBoard logging, checkpoints and a small validation each epoch; their figure is ``metrics.json``'s
``train_images_per_s_by_epoch``. The figure of a run is the median of its epochs after the first (which holds the
compile and the warm-up), then the median over ``--repeats``; each repeat runs config by config, the ways in turn
(reversed every other repeat), and each measurement starts from a reset compiler and torch's global settings as they
were. No augmentation, so that the three ways do the same work. The FLOPs of one training step (forward and
backward, by ``torch.utils.flop_counter``'s rules, a grouped convolution's weight gradient counted per group) give
FLOP per image and the fraction of the device's peak that ``bare`` and ``fit_gpu`` reach: the peak of the precision
in use (bf16, TF32 or FP32) from a table by GPU name, or ``--peak-tflops``. ``--accelerator cpu`` runs the same on
the CPU (``fit_gpu`` then the overlay with ``--trainer.accelerator cpu`` after it), so that the script can be tested
without a GPU. Usage::

    python benchmarks/gpu_throughput.py --data-dir ../shared/data/fashion-mnist [--configs lenet fast] [--epochs 4]

The results replace this machine kind's ``benchmarks/results/gpu_throughput_<machine kind>.json``
(``results_file.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import logging
import math
import re
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from results_file import results_path, write_results
from throughput import ROOT, batch_size, images_per_model, steady, steps_per_execution

CONFIGS = ("lenet", "brownlee", "custom_cnn", "seed_efficientnet", "fast", "efficientnet", "best")
OWN_RECIPES = ("fast", "efficientnet", "best")  # trained in bf16 mixed precision by their GPU overlay
WAYS = ("fit_gpu", "fit_today", "bare")
# fit_gpu against fit_today: the speed-up the GPU defaults must bring; fit_gpu against the bare loop: what fit may cost
TODAY_TARGET = {config: 10.0 if config in OWN_RECIPES else 5.0 for config in CONFIGS}
BARE_TARGET = 0.9
# dense peak TFLOP/s by GPU (a pattern of torch.cuda.get_device_name) and the precision of the arithmetic
PEAK_TFLOPS = {
    r"H100(?!.*PCIe)|H200": {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0},  # SXM
}
# the recipes' augmentation off, in all three ways (the bare loop has none)
NO_AUGMENTATION = ["--data.augmentation", "{affine: false, crop_padding: 0, hflip: false, erasing: 0}"]
NO_AUGMENTATION += ["--data.augmentation", "{mixup_alpha: 0, cutmix_alpha: 0}"]
# what a way ran with, kept in the results beside its figures (the fits' from their metrics.json)
SETTINGS = ("device", "precision", "float32_matmul_precision", "data_on_device", "channels_last", "compile")
SETTINGS += ("compile_mode", "steps_per_execution", "compile_s", "training_span_s")


def overlay(config: str) -> Path:
    return ROOT / "configs" / ("gpu_bf16.yaml" if config in OWN_RECIPES else "gpu.yaml")


def config_args(config: str, way: str, options: argparse.Namespace) -> list[str]:
    """The CLI arguments that make ``way`` of ``config``: the recipe, the overlay or today's settings, the data."""
    args = ["--config", str(ROOT / "configs" / f"{config}.yaml")]
    if way == "fit_today":
        args += ["--trainer.accelerator", options.accelerator, "--trainer.devices", "1", "--data.on_device", "false"]
        args += ["--speed.float32_matmul_precision", "highest"]
    else:  # fit_gpu, and the bare loop built from its arguments
        args += ["--config", str(overlay(config))]
        args += ["--trainer.accelerator", "cpu"] if options.accelerator == "cpu" else []
        for setting in options.set:  # a variant of the GPU defaults: compile, channels-last, ...
            key, _, value = setting.partition("=")
            args += [f"--{key}", value]
    return [*args, "--data.data_dir", options.data_dir, *NO_AUGMENTATION]


def batches_per_step(config: str, way: str) -> int:
    """The ``steps_per_execution`` a way runs with: the overlay's where it sets one (gpu_bf16.yaml), else the
    recipe's."""
    import yaml

    recipe = ROOT / "configs" / f"{config}.yaml"
    if way != "fit_today":
        settings = yaml.safe_load(overlay(config).read_text()).get("speed") or {}
        if "steps_per_execution" in settings:
            return settings["steps_per_execution"]
    return steps_per_execution(recipe)


def lightning_batches(config: str, way: str, images: int) -> int:
    """Lightning's training batches for ``images`` an epoch: ``steps_per_execution`` batches each."""
    return math.ceil(images / (batch_size(ROOT / "configs" / f"{config}.yaml") * batches_per_step(config, way)))


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """A measurement as if in a fresh process: compiler caches reset, torch's global settings restored after."""
    import torch

    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    torch._dynamo.reset()
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved[1:]
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# -- the three ways --------------------------------------------------------------------------------------------------
def run_fit(config: str, way: str, options: argparse.Namespace) -> dict[str, Any]:
    """``python -m fmnist_lightning fit`` in this process; its ``metrics.json``."""
    from fmnist_lightning.commands.main import main as fmnist

    batches = lightning_batches(config, way, options.images[config])
    with tempfile.TemporaryDirectory() as logs:
        command = [
            "fit", *config_args(config, way, options), "--trainer.max_epochs", str(options.epochs),
            "--trainer.limit_train_batches", str(batches), "--trainer.limit_val_batches", "2",
            "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", logs,
            "--run_metrics.latency", "false", "--run_metrics.activation_memory", "false",
        ]  # fmt: skip
        output = io.StringIO()  # the fit's closing summary
        with contextlib.redirect_stdout(output):
            status = fmnist(command)
        if status:
            raise SystemExit(f"{way} of {config} ended with status {status}:\n{output.getvalue()}")
        (metrics_file,) = Path(logs).glob("*/version_*/metrics.json")
        metrics = json.loads(metrics_file.read_text())
    recorded = {key: metrics[key] for key in SETTINGS if key in metrics}  # as far as this metrics.json has them
    return {"images_per_s_by_epoch": metrics["train_images_per_s_by_epoch"], **recorded}


def run_bare(config: str, options: argparse.Namespace) -> dict[str, Any]:
    """fit_gpu's model, optimizer, precision and batches in the plainest loop: no Lightning, logging or validation."""
    import torch

    from fmnist_lightning.commands.cli import FashionMNISTCLI
    from fmnist_lightning.training.speed import speed_settings_of

    cli = FashionMNISTCLI([*config_args(config, "fit_gpu", options), "--trainer.logger", "false"], run=False)
    model, data, device = cli.model, cli.datamodule, cli.trainer.strategy.root_device
    precision = str(cli.trainer.precision)
    if precision not in ("32-true", "bf16-mixed"):
        raise SystemExit(f"{config}: the bare loop knows precisions 32-true and bf16-mixed, not {precision}")
    torch.manual_seed(cli.config.seed_everything or 0)
    data.prepare_data()
    data.setup("fit")  # on the device with the overlay's on_device
    size = data.hparams.batch_size
    per_step = batches_per_step(config, "bare")
    count = min(lightning_batches(config, "bare", options.images[config]) * size * per_step, len(data.train_set))
    images, targets = (tensor.to(device) for tensor in data.train_set.__getitems__(range(count)))
    model.to(device)
    model.train()
    flop_per_image = step_flops(model, images[:size], targets[:size]) / size  # eager, before the model compiles
    speed = speed_settings_of(cli.trainer)  # the config's channels_last, compile and its mode, TF32 on CUDA
    speed.setup(cli.trainer, model, "fit")

    def autocast() -> contextlib.AbstractContextManager:  # what Lightning's bf16-mixed does around a step
        bf16 = precision == "bf16-mixed"
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    optimizer = model.optimizer(model.parameters())
    throughput = []
    for _ in range(options.epochs):
        synchronize(device)
        start = time.perf_counter()
        order = torch.randperm(count, device=device)
        for first in range(0, count, size):
            index = order[first : first + size]
            with autocast():
                loss = model.loss(model._evaluate(images[index], "train"), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
        throughput.append(count / (time.perf_counter() - start))
    return {
        "images_per_s_by_epoch": throughput,
        "device": device.type,
        "precision": precision,
        "float32_matmul_precision": speed.float32_matmul_precision,
        "flop_per_image": flop_per_image,
        "batch_size": size,
    }


def step_flops(model: Any, images: Any, targets: Any) -> int:
    """The FLOPs of one training step's forward and backward pass (``count_flops``)."""
    flop = count_flops(lambda: model.loss(model(images), targets).backward())
    model.zero_grad(set_to_none=True)
    return flop


def count_flops(run: Any) -> int:
    """The FLOPs of ``run()`` as ``torch.utils.flop_counter`` counts them (2 per multiply-add of convolutions and matrix
    products), but for a grouped convolution's weight gradient, which torch's rule counts as if ungrouped (``groups``
    times too many: a depthwise convolution's by its channels); here, as many as the convolution's forward."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

    def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                           _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:  # fmt: skip
        flop = 0
        if output_mask[0]:  # the input gradient, as torch counts it: a transposed convolution of the output's
            flop += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
        if output_mask[1]:  # the weight gradient: the forward's multiply-adds (w_shape holds the channels per group)
            flop += conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
        return flop

    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop})
    with counter:
        run()
    return counter.get_total_flops()


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(config: str, way: str, options: argparse.Namespace) -> dict[str, Any]:
    with isolated():
        return run_bare(config, options) if way == "bare" else run_fit(config, way, options)


# -- peaks, figures, the table ---------------------------------------------------------------------------------------
def arithmetic(precision: str, float32_matmul_precision: str, device: str) -> str:
    """The arithmetic a run's matrix products get: bf16, tf32 (float32 on a GPU with TF32 allowed) or fp32."""
    if precision.startswith("bf16"):
        return "bf16"
    return "tf32" if device.startswith("cuda") and float32_matmul_precision != "highest" else "fp32"


def peak_tflops(device: str, kind: str, override: float | None) -> float | None:
    """The device's dense peak for ``kind`` of arithmetic: ``--peak-tflops``, else the table; None on a CPU."""
    if override is not None:
        return override
    if not device.startswith("cuda"):
        return None
    import torch

    name = torch.cuda.get_device_name()
    return next((peaks[kind] for pattern, peaks in PEAK_TFLOPS.items() if re.search(pattern, name)), None)


def figures(config: str, runs: dict[str, list[list[float]]], bare: dict[str, Any], peak: float | None) -> dict:
    """A config's results: the ways' images/s, their ratios, FLOP per image, the fractions of the peak, targets."""
    images_per_s = {way: statistics.median(steady(run) for run in by_way) for way, by_way in runs.items()}
    over_today = images_per_s["fit_gpu"] / images_per_s["fit_today"]
    over_bare = images_per_s["fit_gpu"] / images_per_s["bare"]
    flop = bare["flop_per_image"]
    return {
        "batch_size": bare["batch_size"],
        "precision": bare["precision"],
        "float32_matmul_precision": bare["float32_matmul_precision"],
        "arithmetic": arithmetic(bare["precision"], bare["float32_matmul_precision"], bare["device"]),
        "images_per_s": images_per_s,
        "fit_gpu_over_fit_today": over_today,
        "fit_gpu_over_bare": over_bare,
        "flop_per_image": flop,
        "peak_tflops": peak,
        "peak_fraction": {
            way: images_per_s[way] * flop / (peak * 1e12) if peak else None for way in ("bare", "fit_gpu")
        },
        "targets": {
            f"fit_gpu >= {TODAY_TARGET[config]:g}x fit_today": over_today >= TODAY_TARGET[config],
            f"fit_gpu >= {BARE_TARGET:g}x bare": over_bare >= BARE_TARGET,
        },
    }


def percent(fraction: float | None) -> str:
    return "—" if fraction is None else f"{fraction:.1%}"


def table(results: dict[str, dict[str, Any]]) -> str:
    header = ["config", "batch", "precision", "fit_gpu images/s", "fit_today images/s", "bare images/s"]
    header += ["fit_gpu / fit_today", "fit_gpu / bare", "FLOP/image", "% of peak: bare", "% of peak: fit_gpu"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---|" + "---:|" * (len(header) - 3)]
    for config, result in results.items():
        rate = result["images_per_s"]
        row = [config, str(result["batch_size"]), f"{result['precision']} ({result['arithmetic']})"]
        row += [f"{rate[way]:,.0f}" for way in WAYS]
        row += [f"{result['fit_gpu_over_fit_today']:.2f}×", f"{result['fit_gpu_over_bare']:.2f}×"]
        row += [f"{result['flop_per_image'] / 1e6:,.1f} M"]
        row += [percent(result["peak_fraction"][way]) for way in ("bare", "fit_gpu")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def target_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for config, result in results.items():
        for target, met in result["targets"].items():
            lines.append(f"{config:<18} {target:<28} {'met' if met else 'not met'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu", help="cpu: a check of the script")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is left out as warm-up")
    parser.add_argument("--repeats", type=int, default=2, help="runs per config and way; the median is reported")
    parser.add_argument(
        "--images",
        nargs="+",
        default=["60000"],
        metavar="[CONFIG=]N",
        help="training images per epoch (≤ 60,000; at most the recipe's training split)",
    )
    parser.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s (default: a table by GPU name)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a CLI setting added to fit_gpu and the bare loop, to measure a variant of the GPU defaults, e.g. "
        "speed.compile=true (repeatable; write such a run to its own --out)",
    )
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "fashion-mnist"))
    parser.add_argument(
        "--out",
        type=Path,
        help="the results file (default: results/gpu_throughput_<machine kind>.json, which a rerun replaces)",
    )
    options = parser.parse_args()
    options.images = images_per_model(options.images, parser, CONFIGS)
    if any("=" not in setting or setting.startswith("-") for setting in options.set):
        parser.error(f"--set takes KEY=VALUE without leading dashes, e.g. speed.compile=true: {options.set}")
    if options.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is warm-up")
    import lightning  # noqa: F401  (sets its loggers' levels as it is imported)
    import torch

    if options.accelerator == "gpu" and not torch.cuda.is_available():
        parser.error("--accelerator gpu: no CUDA GPU here (--accelerator cpu checks the script on the CPU)")
    for name in ("lightning.pytorch", "lightning.fabric"):  # "GPU available: …" and the like, once per fit
        logging.getLogger(name).setLevel(logging.WARNING)
    # the CLI is given its arguments in this process, while sys.argv holds this script's
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    runs: dict[str, dict[str, list[list[float]]]] = {config: {way: [] for way in WAYS} for config in options.configs}
    bare: dict[str, dict[str, Any]] = {}
    settings: dict[str, dict[str, dict[str, Any]]] = {config: {} for config in options.configs}
    device = "cpu"
    for repeat in range(options.repeats):
        for config in options.configs:
            for way in WAYS if repeat % 2 == 0 else reversed(WAYS):  # a slow spell early or late hits all ways
                result = measure(config, way, options)
                runs[config][way].append(result.pop("images_per_s_by_epoch"))
                settings[config][way] = {key: result[key] for key in SETTINGS if key in result}
                if way == "bare":
                    bare[config] = result
                    device = result["device"]
                print(
                    f"repeat {repeat + 1} {config:<18} {way:<9} {steady(runs[config][way][-1]):10,.0f} images/s",
                    flush=True,
                )
    peaks = {
        config: peak_tflops(
            device,
            arithmetic(bare[config]["precision"], bare[config]["float32_matmul_precision"], device),
            options.peak_tflops,
        )
        for config in options.configs
    }
    results = {config: figures(config, runs[config], bare[config], peaks[config]) for config in options.configs}
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    images = ", ".join(f"{config} {options.images[config]:,}" for config in options.configs)
    print(f"\n{name}: {options.epochs} epochs per run ({images} images each), median of {options.repeats} runs\n")
    print(table(results))
    print("\ntargets:\n" + "\n".join(target_lines(results)))
    fields = {
        "accelerator": options.accelerator,
        "device_name": name,
        "epochs": options.epochs,
        "images_per_epoch": {config: options.images[config] for config in options.configs},
        "repeats": options.repeats,
        "results": results,
        "settings": settings,  # each way's precision, TF32 and data placement as its last run recorded them
        "runs": runs,
    }
    out = options.out or results_path("gpu_throughput", device)
    write_results(out, "gpu_throughput.py", fields, device)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
