"""The cost of ``fit`` over a bare PyTorch loop, measured inside one ``fit`` process.

``throughput.py`` compares ``fit`` with a bare loop in separate processes, and on a shared VM two processes a minute
apart differ by more than the gap being measured. Here, after every Lightning training step of a real ``fit`` (the
model's config with its callbacks and logging), a bare-loop block of as many optimizer steps runs on the same model and
images, so a slow spell of the machine hits both alike. The figure is the median over these pairs of the bare block's
time per image against fit's (from the end of one bare block to the end of the next training step: Lightning's loop,
the loader, the hooks and the step), the first epoch left out as warm-up. The bare blocks train the model too, so the
run's accuracy means nothing. No augmentation. Usage::

    python benchmarks/fit_overhead.py --data-dir ../shared/data/fashion-mnist [--models lenet custom_cnn] [--epochs 4]

The results replace this machine kind's ``benchmarks/results/fit_overhead_<machine kind>.json`` (``results_file.py``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from results_file import results_path, write_results
from throughput import MODELS, ROOT, batch_size, steps_per_execution

from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.training.multi_step import training_batches


class InterleavedBareSteps(L.Callback):
    """After every training step, as many bare-loop optimizer steps on the same model; each timed per image."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images, self.targets = images, targets
        self.fit_s_per_image: list[float] = []
        self.bare_s_per_image: list[float] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.optimizer = pl_module.optimizer(pl_module.parameters())  # the config's optimizer, its own state

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.block_end: float | None = None  # the validation before an epoch is not training time

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step_end = time.perf_counter()
        sizes = [len(images) for images, _ in training_batches(batch)]
        images_in_step = sum(sizes)
        measured = trainer.current_epoch > 0 and self.block_end is not None
        if measured:
            self.fit_s_per_image.append((step_end - self.block_end) / images_in_step)
        start = time.perf_counter()
        for size in sizes:
            index = torch.randint(len(self.images), (size,))
            loss = F.cross_entropy(pl_module.net(self.images[index]), self.targets[index])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.block_end = time.perf_counter()
        if measured:
            self.bare_s_per_image.append((self.block_end - start) / images_in_step)


def measure(model: str, options: argparse.Namespace, logs: str) -> dict[str, Any]:
    config = ROOT / "configs" / f"{model}.yaml"
    steps = steps_per_execution(config)
    groups = math.ceil(options.images / (batch_size(config) * steps))
    cli = FashionMNISTCLI(
        [
            "--config", str(config), "--data.data_dir", options.data_dir, "--data.augmentation.affine", "false",
            "--trainer.max_epochs", str(options.epochs), "--trainer.limit_train_batches", str(groups),
            "--trainer.logger.init_args.save_dir", logs, "--run_metrics.latency", "false",
        ],
        run=False,
    )  # fmt: skip
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    bare = InterleavedBareSteps(*cli.datamodule.train_set.__getitems__(range(options.images)))
    cli.trainer.callbacks.append(bare)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    pairs = list(zip(bare.fit_s_per_image, bare.bare_s_per_image, strict=True))
    return {
        "steps_per_execution": steps,
        "pairs": len(pairs),
        "fit_over_bare": statistics.median(bare_s / fit_s for fit_s, bare_s in pairs),
        "fit_images_per_s": 1 / statistics.median(bare.fit_s_per_image),
        "bare_images_per_s": 1 / statistics.median(bare.bare_s_per_image),
        "device": cli.trainer.strategy.root_device.type,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=4, help="epochs per model; the first is left out as warm-up")
    parser.add_argument("--images", type=int, default=10_000, help="training images per epoch (≤ 60,000)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "fashion-mnist"))
    parser.add_argument(
        "--out",
        type=Path,
        help="the results file (default: results/fit_overhead_<machine kind>.json, which a rerun replaces)",
    )
    options = parser.parse_args()
    if options.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is warm-up")
    torch.set_num_threads(options.threads)
    results = {}
    with tempfile.TemporaryDirectory() as logs:
        for model in options.models:
            results[model] = measure(model, options, logs)
    print(f"\n{options.threads} threads, {options.epochs} epochs of {options.images:,} images a model\n")
    print("| model | fit / bare | pairs | fit images/s | bare images/s |\n|---|---:|---:|---:|---:|")
    for model, figures in results.items():
        print(
            f"| {model} | {figures['fit_over_bare']:.3f}× | {figures['pairs']} | {figures['fit_images_per_s']:,.0f} "
            f"| {figures['bare_images_per_s']:,.0f} |"
        )
    fields = {"threads": options.threads, "epochs": options.epochs, "images_per_epoch": options.images}
    device = next(iter(results.values()))["device"]
    out = options.out or results_path("fit_overhead", device)
    write_results(out, "fit_overhead.py", {**fields, "results": results}, device)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
