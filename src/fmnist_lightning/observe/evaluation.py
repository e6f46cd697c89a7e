"""What an evaluation leaves in TensorBoard: the confusion matrix (figure and text, per-class precision, recall
and F1) and grids of correctly and wrongly classified test images, drawn by the ``EvaluationFigures`` callback."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassConfusionMatrix

from fmnist_lightning.fashion_mnist import NUM_CLASSES
from fmnist_lightning.lightning_private import logger_step
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
    step = logger_step(module.trainer)  # the step of the scalars logged with them (val/acc, …): one step axis
    writer.add_figure(f"{stage}/confusion_matrix", confusion_matrix_figure(matrix, title, numbers), step)
    writer.add_text(f"{stage}/confusion_matrix", confusion_matrix_markdown(matrix), step)
    writer.add_text(f"{stage}/per_class", per_class_table(matrix), step)


class TestSamples:
    """The first ``per_grid`` correct and misclassified test images (of this rank's share), drawn as grids."""

    __test__ = False  # not a pytest class

    def __init__(self, per_grid: int = SAMPLES_PER_GRID) -> None:
        self.per_grid = per_grid
        self.kept: dict[bool, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {True: [], False: []}

    def add(self, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> None:
        if all(len(kept) >= self.per_grid for kept in self.kept.values()):
            return
        probabilities = logits.detach().softmax(dim=1)
        correct = probabilities.argmax(dim=1) == labels
        for is_correct in (True, False):
            kept = self.kept[is_correct]
            room = self.per_grid - len(kept)
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
                writer.add_figure(f"test/{name}", figure, logger_step(module.trainer))


class EvaluationFigures(L.Callback):
    """The confusion matrix of every validation and test epoch, synced across DDP ranks, and the test's sample grids,
    drawn into TensorBoard from the logits that the model's ``validation_step`` and ``test_step`` return.

    A callback rather than part of the model, so that how a run is observed is configured apart from what it trains
    (``--figures.confusion_matrix false``, ``--figures.test_samples 0``) and the model holds no figure code.

    Args:
        confusion_matrix: Draw the validation and test confusion matrices.
        test_samples: How many correct and how many misclassified test images each grid shows (0: no grids).
    """

    def __init__(self, confusion_matrix: bool = True, test_samples: int = SAMPLES_PER_GRID) -> None:
        if test_samples < 0:
            raise ValueError(f"--figures.test_samples must be ≥ 0, got {test_samples}")
        self.confusion_matrix = confusion_matrix
        self.test_samples = test_samples
        # validate_args off: the labels and logits are the model's own, and torchmetrics' checks of them read values
        # on the host (a device sync every batch on a GPU)
        self.matrices = {
            stage: MulticlassConfusionMatrix(NUM_CLASSES, validate_args=False) for stage in ("val", "test")
        }
        self.samples = TestSamples(test_samples)

    def _count(self, stage: str, pl_module: L.LightningModule, outputs: Any, batch: Any) -> torch.Tensor:
        labels = batch[1].argmax(dim=1)
        if self.confusion_matrix:
            self.matrices[stage].update(outputs, labels)
        return labels

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.matrices["val"].to(pl_module.device)

    # Lightning's hooks, each with (trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_):
        self._count("val", pl_module, outputs, batch)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.matrices["test"].to(pl_module.device)
        self.samples = TestSamples(self.test_samples)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_):
        labels = self._count("test", pl_module, outputs, batch)
        if self.test_samples:
            self.samples.add(batch[0], labels, outputs)

    def _finish(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.confusion_matrix:
            return
        matrix = self.matrices[stage].compute()  # a collective under DDP: every rank computes
        self.matrices[stage].reset()
        if not trainer.sanity_checking:
            log_confusion_matrix(pl_module, stage, matrix)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish("test", trainer, pl_module)
        if self.test_samples:
            self.samples.log(pl_module)
