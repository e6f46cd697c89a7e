"""What an evaluation leaves in TensorBoard: the confusion matrix (figure and text, per-class precision, recall
and F1) and grids of correctly and wrongly classified test images."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from fmnist_lightning.observe.figures import (
    confusion_matrix_figure,
    confusion_matrix_markdown,
    per_class_table,
    sample_grid,
)

SAMPLES_PER_GRID = 32


def tensorboard_logger(trainer: L.Trainer) -> TensorBoardLogger | None:
    """The run's TensorBoard logger on rank 0, where figures, text and hparams are written; None elsewhere."""
    if not trainer.is_global_zero:
        return None
    return next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)


def tensorboard_writer(trainer: L.Trainer) -> Any:
    """The TensorBoard writer on rank 0 (None with another logger, or none)."""
    logger = tensorboard_logger(trainer)
    return logger.experiment if logger is not None else None


def log_confusion_matrix(module: L.LightningModule, stage: str, matrix: torch.Tensor) -> None:
    """The epoch's (DDP-synced) confusion matrix as an image (counts and row-normalised) and as text, with
    per-class precision, recall and F1; only rank 0 writes."""
    writer = tensorboard_writer(module.trainer)
    if writer is None:
        return
    fitting = module.trainer.state.fn == "fit"
    title = f"{type(module).__name__} {stage}" + (f", epoch {module.current_epoch}" if fitting else "")
    # cell numbers cost ~1 s to draw: during fit only on the last epoch (the TEXT tab has them every epoch)
    numbers = not fitting or module.current_epoch + 1 >= (module.trainer.max_epochs or 0)
    writer.add_figure(f"{stage}/confusion_matrix", confusion_matrix_figure(matrix, title, numbers), module.global_step)
    writer.add_text(f"{stage}/confusion_matrix", confusion_matrix_markdown(matrix), module.global_step)
    writer.add_text(f"{stage}/per_class", per_class_table(matrix), module.global_step)


class TestSamples:
    """The first ``SAMPLES_PER_GRID`` correct and misclassified test images (of this rank's share), drawn as grids."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.kept: dict[bool, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {True: [], False: []}

    def add(self, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> None:
        if all(len(kept) >= SAMPLES_PER_GRID for kept in self.kept.values()):
            return
        probabilities = logits.detach().softmax(dim=1)
        correct = probabilities.argmax(dim=1) == labels
        for is_correct in (True, False):
            kept = self.kept[is_correct]
            room = SAMPLES_PER_GRID - len(kept)
            for index in correct.eq(is_correct).nonzero().flatten()[:room]:
                kept.append((images[index].cpu(), labels[index].cpu(), probabilities[index].cpu()))

    def log(self, module: L.LightningModule) -> None:
        writer = tensorboard_writer(module.trainer)
        if writer is None:
            return
        for is_correct, name in ((False, "misclassified"), (True, "correct")):
            if self.kept[is_correct]:
                images, labels, probabilities = (
                    torch.stack(column) for column in zip(*self.kept[is_correct], strict=True)
                )
                figure = sample_grid(images, labels, probabilities, f"{type(module).__name__}: {name} test images")
                writer.add_figure(f"test/{name}", figure, module.global_step)
