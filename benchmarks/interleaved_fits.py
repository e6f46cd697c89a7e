"""Two ways of running one recipe's ``fit`` timed inside one process, interleaved (A, B, B, A, …), as docs/speed.md
measures a choice: training images per second of each fit, and the second way's speed over the first's per pair."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import lightning as L

from fmnist_lightning.commands.cli import FashionMNISTCLI


class StepTimes(L.Callback):
    """The time at the end of each training step, and the images it took."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.marks: list[tuple[float, int]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_):
        images = sum(len(b[0]) for b in batch) if isinstance(batch, list) else len(batch[0])
        self.marks.append((time.perf_counter(), images))


def fit_images_per_s(args: list[str]) -> float:
    """A ``fit`` of these CLI arguments (the progress bar on, as a user runs it), timed from the end of its first
    tenth of training steps to its last: training images per second."""
    cli = FashionMNISTCLI([*args, "--trainer.callbacks+=interleaved_fits.StepTimes"], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    marks = next(c for c in cli.trainer.callbacks if isinstance(c, StepTimes)).marks
    start = len(marks) // 10
    return sum(images for _, images in marks[start + 1 :]) / (marks[-1][0] - marks[start][0])


def interleaved(ways: dict[str, Callable[[], float]], pairs: int) -> dict[str, list[float]]:
    """Each of the two ways measured ``pairs`` times, in turn, the order reversed every other pair."""
    speeds: dict[str, list[float]] = {way: [] for way in ways}
    for pair in range(pairs):
        for way in list(ways) if pair % 2 == 0 else reversed(ways):
            speeds[way].append(ways[way]())
        print(f"pair {pair}: " + ", ".join(f"{way} {speeds[way][-1]:.0f}" for way in ways) + " images/s")
    return speeds


def ratio_over_pairs(faster: list[float], slower: list[float]) -> dict[str, Any]:
    """The median of the per-pair ratios and their range."""
    ratios = [a / b for a, b in zip(faster, slower, strict=True)]
    return {"median": round(statistics.median(ratios), 3), "range": [round(min(ratios), 3), round(max(ratios), 3)]}
