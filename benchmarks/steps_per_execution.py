"""``steps_per_execution`` K against 1 in a real ``fit``, inside one process, the two ways interleaved (K, 1, 1, K, …).

Each way is a fit of the recipe's own config for ``--images`` training images (validation off, ``--speed.compile
false`` for both, so that neither pays for compiling), timed from the end of its first tenth of training steps to its
last: training images per second. The figure is the median over the pairs of K's speed over 1's, with its range:
what decides whether the option earns its complexity (docs/speed.md, issue 38's > 10 %). Usage::

    python benchmarks/steps_per_execution.py --data-dir ../shared/data/fashion-mnist [--config configs/lenet.yaml]

The results replace this machine kind's ``benchmarks/results/steps_per_execution_<machine kind>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from results_file import results_path, write_results

from fmnist_lightning.commands.cli import FashionMNISTCLI

ROOT = Path(__file__).resolve().parents[1]


class StepTimes(L.Callback):
    """The time at the end of each training step, and the images it took."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.marks: list[tuple[float, int]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_):
        images = sum(len(b[0]) for b in batch) if isinstance(batch, list) else len(batch[0])
        self.marks.append((time.perf_counter(), images))


def images_per_s(config: str, k: int, options: argparse.Namespace, logs: str) -> float:
    args = ["--config", config, "--data.data_dir", options.data_dir, "--speed.compile", "false"]
    args += ["--speed.steps_per_execution", str(k), "--trainer.max_epochs", "1"]
    args += ["--trainer.limit_train_batches", str(options.images // options.batch_size // k)]
    args += ["--trainer.limit_val_batches", "0", "--trainer.logger.init_args.save_dir", logs]
    args += [f"--trainer.callbacks+={__name__}.StepTimes"]  # the progress bar on, as a user runs it
    cli = FashionMNISTCLI(args, run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    marks = next(c for c in cli.trainer.callbacks if isinstance(c, StepTimes)).marks
    start = len(marks) // 10
    return sum(images for _, images in marks[start + 1 :]) / (marks[-1][0] - marks[start][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--config", default=str(ROOT / "configs" / "lenet.yaml"))
    parser.add_argument("--k", type=int, default=16, help="steps_per_execution against 1 (default 16, lenet.yaml's)")
    parser.add_argument("--batch-size", type=int, default=64, help="the config's batch size (lenet.yaml: 64)")
    parser.add_argument("--images", type=int, default=81_920, help="training images per fit")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="results file (default: benchmarks/results/steps_per_execution_<kind>.json)")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    speeds: dict[int, list[float]] = {options.k: [], 1: []}
    with tempfile.TemporaryDirectory() as logs:
        for pair in range(options.pairs):
            for k in (options.k, 1) if pair % 2 == 0 else (1, options.k):
                speeds[k].append(images_per_s(options.config, k, options, logs))
            print(f"pair {pair}: K={options.k} {speeds[options.k][-1]:.0f}, K=1 {speeds[1][-1]:.0f} images/s")
    ratios = [a / b for a, b in zip(speeds[options.k], speeds[1], strict=True)]
    fields = {
        "config": options.config.rpartition("configs/")[2],
        "k": options.k,
        "threads": options.threads,
        "images_per_fit": options.images,
        "speedup_median": round(statistics.median(ratios), 3),
        "speedup_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "images_per_s_k": [round(s) for s in speeds[options.k]],
        "images_per_s_1": [round(s) for s in speeds[1]],
    }
    print(f"K={options.k} / K=1: median {fields['speedup_median']}× (range {fields['speedup_range']})")
    out = Path(options.out) if options.out else results_path("steps_per_execution")
    write_results(out, "steps_per_execution.py", fields)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
