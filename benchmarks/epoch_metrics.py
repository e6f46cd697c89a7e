"""The model's epoch loss and accuracy as it keeps them against torchmetrics objects updated and logged every step.

Lightning's own way (lightning-hydra-template's ``MNISTLitModule``) updates a torchmetrics object with every batch
and passes it to ``self.log(..., on_epoch=True)`` every step; ``FashionMNISTClassifier.step_on_batch`` instead adds
the batch's loss and correct count to two sums on the device and hands them to its torchmetrics means once an epoch
(the figures are the same; both make no host read per step). This times the two in a real ``fit`` of the recipe's
config (LeNet-5 by default, validation off, ``--speed.compile false``), inside one process, interleaved (A, B, B, A,
…): training images per second from the end of the first tenth of the steps to the last. The figure is the median
over the pairs of the per-step way's speed over the model's, with its range; the module's comment cites it. Usage::

    python benchmarks/epoch_metrics.py --data-dir ../shared/data/fashion-mnist [--config configs/lenet.yaml]

The results replace this machine kind's ``benchmarks/results/epoch_metrics_<machine kind>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from interleaved_fits import fit_images_per_s, interleaved, ratio_over_pairs
from results_file import results_path, write_results
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from fmnist_lightning.models import LeNet5

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("epoch_sums", "per_step_torchmetrics")


class PerStepMetricsLeNet5(LeNet5):
    """LeNet-5 with Lightning's usual metrics: each batch updates a torchmetrics mean loss and accuracy, each logged
    with ``on_epoch=True`` every step (Lightning computes and resets them at the epoch's end)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.per_step_loss = MeanMetric()
        self.per_step_acc = MulticlassAccuracy(num_classes=10, average="micro", validate_args=False)

    def step_on_batch(self, batch: Any, stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, targets = batch
        logits = self._evaluate(images, stage)
        loss = self.loss(logits, targets)
        self.per_step_loss.update(loss.detach(), len(images))
        self.per_step_acc.update(logits.detach(), targets.argmax(dim=1))
        self.log(f"{stage}/loss", self.per_step_loss, on_step=False, on_epoch=True)
        self.log(f"{stage}/acc", self.per_step_acc, on_step=False, on_epoch=True)
        return loss, (logits.detach().argmax(dim=1) == targets.argmax(dim=1)).float().mean(), logits

    def _log_epoch(self, stage: str, suffix: str = "") -> None:
        """Lightning logs the epoch's figures from the metric objects."""


def fit_args(way: str, options: argparse.Namespace, logs: str) -> list[str]:
    args = ["--config", options.config, "--data.data_dir", options.data_dir, "--speed.compile", "false"]
    if way == "per_step_torchmetrics":
        args += ["--model.class_path", f"{__name__}.PerStepMetricsLeNet5"]
    args += ["--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0"]
    args += ["--trainer.limit_train_batches", str(options.train_steps)]
    return [*args, "--trainer.logger.init_args.save_dir", logs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--config", default=str(ROOT / "configs" / "lenet.yaml"))
    parser.add_argument("--train-steps", type=int, default=80, help="Lightning training steps per fit")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="results file (default: benchmarks/results/epoch_metrics_<kind>.json)")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    with tempfile.TemporaryDirectory() as logs:
        ways = {way: (lambda way=way: fit_images_per_s(fit_args(way, options, logs))) for way in WAYS}
        speeds = interleaved(ways, options.pairs)
    ratio = ratio_over_pairs(speeds["per_step_torchmetrics"], speeds["epoch_sums"])
    fields = {
        "config": options.config.rpartition("configs/")[2],
        "threads": options.threads,
        "train_steps_per_fit": options.train_steps,
        "per_step_over_epoch_sums_median": ratio["median"],
        "per_step_over_epoch_sums_range": ratio["range"],
        **{f"images_per_s_{way}": [round(s) for s in speeds[way]] for way in WAYS},
    }
    median, spread = fields["per_step_over_epoch_sums_median"], fields["per_step_over_epoch_sums_range"]
    print(f"per-step torchmetrics / epoch sums: median {median}× (range {spread})")
    out = Path(options.out) if options.out else results_path("epoch_metrics")
    write_results(out, "epoch_metrics.py", fields)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
