"""Training logic shared by every architecture: loss, metrics, logging and optimisers; prediction on images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from PIL import Image
from torch import nn
from torch.optim.lr_scheduler import LinearLR, OneCycleLR, ReduceLROnPlateau, SequentialLR
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from fmnist_lightning.data import CLASS_NAMES, NUM_CLASSES, FashionMNISTDataModule, normalization, to_model_input
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.figures import confusion_matrix_figure, confusion_matrix_markdown, per_class_table, sample_grid
from fmnist_lightning.images import ImageSource, Invert, fashion_mnist_pixels

STAGES = ("train", "val", "test")
SAMPLES_PER_GRID = 32


@dataclass(frozen=True)
class Prediction:
    """An image's most probable class and its probability, and the three most probable classes."""

    class_index: int
    class_name: str
    probability: float
    top3: tuple[tuple[str, float], ...]

    def top3_text(self) -> str:
        """E.g. ``Shirt 0.61; T-shirt/top 0.22; Pullover 0.09``."""
        return "; ".join(f"{name} {probability:.2f}" for name, probability in self.top3)


def rank_classes(probabilities: torch.Tensor) -> list[Prediction]:
    """One ``Prediction`` per row of an N×10 tensor of class probabilities."""
    top = probabilities.detach().cpu().topk(3, dim=1)
    predictions = []
    for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        top3 = tuple((CLASS_NAMES[index], value) for index, value in zip(indices, values, strict=True))
        predictions.append(Prediction(indices[0], CLASS_NAMES[indices[0]], values[0], top3))
    return predictions


# the hooks around an optimizer step's backward pass and update, on callbacks and on the LightningModule alike
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def count_params(module: nn.Module) -> int:
    """Parameters plus BatchNorm running mean/variance: what Keras's ``count_params()`` reports."""
    buffers = sum(
        b.numel() for name, b in module.named_buffers() if name.rsplit(".", 1)[-1] in ("running_mean", "running_var")
    )
    return sum(p.numel() for p in module.parameters()) + buffers


class FashionMNISTClassifier(L.LightningModule):
    """Base of every model: subclasses set ``self.net`` (images N×1×28×28 → logits N×10) and nothing else.

    Targets are one-hot or soft float vectors (Keras ``to_categorical``); the loss is the cross-entropy of the
    logits against them, which equals Keras's softmax output with ``categorical_crossentropy``.

    Args:
        optimizer: Built with the model's parameters, e.g. ``torch.optim.SGD`` with ``lr: 0.01`` in YAML.
        lr_scheduler: Optional, built with the optimizer; stepped every epoch, or every training step with
            ``scheduler_interval: step``. A ``OneCycleLR`` without ``total_steps`` gets the run's length from the
            trainer (``estimated_stepping_batches``) and is stepped every step.
        scheduler_monitor: The metric a ``ReduceLROnPlateau`` scheduler watches.
        scheduler_interval: ``epoch`` or ``step``.
        warmup: Scheduler intervals (epochs, or steps) over which the learning rate rises linearly from 1 % to the
            optimizer's, before ``lr_scheduler`` (which then starts its own schedule; set its length to the rest).
        channels_last: Train in channels-last memory (NHWC), faster for the convolutions on CPU and GPU. The
            study's batch norm keeps exact batch statistics in that layout (``ExactBatchNorm2d``), and so Keras
            parity.
        compile: ``torch.compile`` the network (``nn.Module.compile``: checkpoints keep their keys).
        tta_flip: Test-time augmentation in ``test`` and ``predict``: the mean of the class probabilities of each
            image and its mirror image.
        steps_per_execution: Optimizer steps per Lightning training step (Keras's ``steps_per_execution``): the
            training loader delivers this many batches at a time and ``training_step`` takes a step on each, the
            same batches and updates as one at a time. Lightning's own work per training step (~1.5 ms on a CPU,
            which Lightning cannot skip) is then shared by them: 20 % faster for LeNet-5 and Brownlee's CNN on a
            2-core CPU. Lightning then counts a group as one batch: in ``log_every_n_steps``, ``val_check_interval``,
            ``limit_train_batches`` and the step axis of the scalars in TensorBoard (``global_step``, ``max_steps``,
            checkpoints and the figures count optimizer steps). Schedulers are stepped as Lightning steps them; a
            ``OneCycleLR`` needs its ``total_steps``. Lightning refuses gradient clipping and accumulation with it,
            and weight averaging (EMA), which acts once per training step, is refused too.
    """

    net: nn.Module

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_monitor: str = "val/loss",
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        warmup: int = 0,
        channels_last: bool = False,
        compile: bool = False,
        tta_flip: bool = False,
        steps_per_execution: int = 1,
    ) -> None:
        super().__init__()
        if warmup < 0:
            raise UserInputError(f"--model.init_args.warmup must be ≥ 0 scheduler intervals, got {warmup}")
        if steps_per_execution < 1:
            raise UserInputError(f"--model.init_args.steps_per_execution must be ≥ 1, got {steps_per_execution}")
        # Lightning steps the optimizer once per training step; several steps per training step are manual
        self.automatic_optimization = steps_per_execution == 1
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.class_names = CLASS_NAMES
        self.example_input_array = torch.zeros(1, 1, 28, 28)
        for stage in STAGES:  # the epoch's mean loss and accuracy, synced across DDP ranks (see _step)
            setattr(self, f"{stage}_acc", MeanMetric(nan_strategy="disable"))
            setattr(self, f"{stage}_loss", MeanMetric(nan_strategy="disable"))
        self._epoch_sums: dict[str, torch.Tensor] = {}  # stage → (sum of losses, correct predictions)
        self._epoch_counts: dict[str, int] = {}
        self.val_confmat = MulticlassConfusionMatrix(NUM_CLASSES)
        self.test_confmat = MulticlassConfusionMatrix(NUM_CLASSES)
        self.confusion_matrices: dict[str, torch.Tensor] = {}
        # whether the inputs were standardised in training (--data.standardize), for predict_images
        self.standardized_inputs = False
        self._plain_steps = False  # set when fit starts

    def setup(self, stage: str) -> None:
        if self.hparams.channels_last:  # idempotent: setup runs again for every Trainer stage
            self.net.to(memory_format=torch.channels_last)
        if self.hparams.compile and not getattr(self, "_compiled", False):
            # one graph per input shape: fit meets a few (the summary's single image, the training and evaluation
            # batches, the epochs' last batches), and torch's default turns dynamic at the second shape, whose
            # kernels were ~5 % slower a step here (SeedEfficientNet: 14-18 % faster than eager against 8-10 %)
            self.net.compile(dynamic=False)
            self._compiled = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():  # TensorBoard's graph (a jit trace) cannot trace through a compiled module
            return self.net.forward(images)
        return self.net(images)

    def _evaluate(self, images: torch.Tensor, stage: str) -> torch.Tensor:
        """Logits; with ``tta_flip`` in test and predict, the log of the mean probabilities of image and mirror."""
        logits = self(images)
        if self.hparams.tta_flip and stage in ("test", "predict"):
            return ((logits.softmax(dim=1) + self(images.flip(-1)).softmax(dim=1)) / 2).log()
        return logits

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Keras's softmax output with ``categorical_crossentropy``, computed from the logits (log-softmax).

        Exact where Keras, given probabilities, clips them to [1e-7, 1 − 1e-7] (tests/parity/test_loss_parity.py).
        """
        return F.cross_entropy(logits, targets, reduction=reduction)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's loss and number of correct predictions; adds them to the epoch's sums."""
        images, targets = batch
        logits = self._evaluate(images, stage)
        loss = self.loss(logits, targets)
        labels = targets.argmax(dim=1)
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        # Lightning's self.log costs ~2 ms a call on a CPU (it moves its record to the device every time), and a
        # torchmetrics update ~0.15 ms (its wrapper, not its arithmetic): per step only the batch's loss and correct
        # count are summed on the device; the sums go into the torchmetrics means (which sync across DDP ranks) and
        # are logged once an epoch, the training step's own figures only on the steps the logger writes
        batch_sums = torch.stack((loss.detach() * len(images), correct.to(loss.dtype)))
        self._epoch_sums[stage] = self._epoch_sums.get(stage, 0) + batch_sums
        self._epoch_counts[stage] = self._epoch_counts.get(stage, 0) + len(images)
        if stage != "train":
            getattr(self, f"{stage}_confmat").update(logits, labels)
        if stage == "test":
            self._keep_test_samples(images, labels, logits)
        return loss, correct / len(images)

    def _log_epoch(self, stage: str, suffix: str = "") -> None:
        """The epoch's loss and accuracy over all its batches (and all DDP ranks: the metrics sync)."""
        sums, count = self._epoch_sums.pop(stage, None), self._epoch_counts.pop(stage, 0)
        if sums is None:  # no batches on this rank
            return
        for name, total in zip(("loss", "acc"), sums, strict=True):
            metric = getattr(self, f"{stage}_{name}")
            metric.update(total / count, count)
            self.log(f"{stage}/{name}{suffix}", metric, on_step=False, on_epoch=True, prog_bar=stage != "train")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        """One optimizer step, or with ``steps_per_execution`` > 1 one on each batch of the list ``batch``."""
        loss, accuracy = self._step(batch, "train") if self.automatic_optimization else self._manual_steps(batch)
        # per step only on the steps the logger writes (each self.log moves its value to the device: ~2 ms); the
        # logger's own rule, which Lightning keeps private
        if loss is not None and self.trainer._logger_connector.should_update_logs:
            self.log("train/loss_step", loss, prog_bar=True)
            self.log("train/acc_step", accuracy, prog_bar=True)
        if self.trainer.is_last_batch:  # here, not in on_train_epoch_end: callbacks read it before that hook
            self._log_epoch("train", suffix="_epoch")
        return loss

    def _manual_steps(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[Any, Any]:
        """An optimizer step on each batch, as Lightning's automatic optimization would take it; the last batch's
        loss and accuracy (None, None without a step)."""
        optimizer = self.optimizers()
        loss = accuracy = None
        for batch in batches:
            if 0 <= self.trainer.max_steps <= self.global_step:
                break
            loss, accuracy = self._step(batch, "train")
            optimizer.zero_grad(set_to_none=True)
            if self._plain_steps:  # on_fit_start says when, and why
                loss.backward()
                # what LightningOptimizer.step does around the step in manual optimization: count it (global_step)
                optimizer._on_before_step()
                optimizer.optimizer.step()
                optimizer._on_after_step()
            else:
                self.manual_backward(loss)
                optimizer.step()
            self._step_schedulers("step")
        return loss, accuracy

    def _step_schedulers(self, interval: str) -> None:
        """What Lightning's automatic optimization does with the schedulers, which manual optimization leaves to us:
        each steps at its interval, ``ReduceLROnPlateau`` with its monitored metric (after the epoch's validation)."""
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != interval:
                continue
            if isinstance(config.scheduler, ReduceLROnPlateau):
                monitor = self.hparams.scheduler_monitor
                if monitor not in self.trainer.callback_metrics:
                    raise UserInputError(
                        f"ReduceLROnPlateau watches {monitor}, which was not logged this epoch; set "
                        "--model.init_args.scheduler_monitor to a logged metric, e.g. val/loss"
                    )
                config.scheduler.step(self.trainer.callback_metrics[monitor])
            else:
                config.scheduler.step()

    def on_train_epoch_end(self) -> None:
        if not self.automatic_optimization:
            self._step_schedulers("epoch")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities (the Keras model's softmax output)."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self._evaluate(images, "predict").softmax(dim=1)

    def check_callbacks(self, callbacks: Sequence[L.Callback]) -> None:
        """Refuses weight averaging with ``steps_per_execution`` > 1: it would average once per K optimizer steps."""
        averaging = [type(c).__name__ for c in callbacks if isinstance(c, WeightAveraging)]
        if averaging and not self.automatic_optimization:
            raise UserInputError(
                f"{averaging[0]} averages once per training step, and --model.init_args.steps_per_execution "
                f"{self.hparams.steps_per_execution} makes that several optimizer steps; set it to 1"
            )

    def on_fit_start(self) -> None:
        self.check_callbacks(self.trainer.callbacks)
        # Lightning's manual_backward and LightningOptimizer.step call every callback's and the module's hooks around
        # the backward pass and the step, Lightning's default no-ops included: ~0.4 ms an optimizer step on a CPU
        # (Brownlee: 3.27 against 3.00 ms for the backward, 0.92 against 0.77 ms for the step), 8-10 % of a LeNet-5
        # or Brownlee step. Where no hook does anything and neither precision nor strategy changes the backward or
        # the step, the steps of steps_per_execution take them without the wrappers.
        hooked = [self, *self.trainer.callbacks]
        self._plain_steps = (
            type(self.trainer.precision_plugin) is Precision
            and type(self.trainer.strategy) is SingleDeviceStrategy
            and not is_overridden("backward", self, L.LightningModule)
            and not any(is_overridden(hook, obj) for hook in STEP_HOOKS for obj in hooked)
        )
        datamodule = self.trainer.datamodule
        if isinstance(datamodule, FashionMNISTDataModule):
            self.standardized_inputs = datamodule.hparams.standardize

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.standardized_inputs = bool((checkpoint.get("datamodule_hyper_parameters") or {}).get("standardize"))

    def predict_images(self, images: Sequence[ImageSource] | ImageSource, invert: Invert = "auto") -> list[Prediction]:
        """Classes of image files or PIL images, converted as ``predict --data.predict_path`` converts them
        (``fmnist_lightning.images``) and normalised as this model was trained; in eval mode whatever its mode.

        Raises ``UnreadableImageError`` (a ``UserInputError``) naming the first image that cannot be read.
        """
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        if not images:
            return []
        pixels = torch.stack([fashion_mnist_pixels(image, invert) for image in images])
        batch = to_model_input(pixels, normalization(self.standardized_inputs)).to(self.device)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                probabilities = self.predict_step(batch, 0)
        finally:
            self.train(was_training)
        return rank_classes(probabilities)

    def _finish_confusion_matrix(self, stage: str) -> None:
        """Logs the epoch's confusion matrix as an image (counts and row-normalised) and as text, with per-class
        precision, recall and F1; the metric syncs across DDP ranks, only rank 0 writes."""
        confmat = getattr(self, f"{stage}_confmat")
        matrix = confmat.compute()  # synced across DDP ranks
        confmat.reset()
        if self.trainer.sanity_checking:
            return
        self.confusion_matrices[stage] = matrix.cpu()
        writer = self._tensorboard()
        if writer is not None:
            fitting = self.trainer.state.fn == "fit"
            title = f"{type(self).__name__} {stage}" + (f", epoch {self.current_epoch}" if fitting else "")
            # cell numbers cost ~1 s to draw: during fit only on the last epoch (the TEXT tab has them every epoch)
            numbers = not fitting or self.current_epoch + 1 >= (self.trainer.max_epochs or 0)
            figure = confusion_matrix_figure(matrix, title, numbers)
            writer.add_figure(f"{stage}/confusion_matrix", figure, self.global_step)
            writer.add_text(f"{stage}/confusion_matrix", confusion_matrix_markdown(matrix), self.global_step)
            writer.add_text(f"{stage}/per_class", per_class_table(matrix), self.global_step)

    def _tensorboard(self) -> Any:
        """The TensorBoard writer on rank 0 (None with another logger, or none)."""
        logger = tensorboard_logger(self.trainer)
        return logger.experiment if logger is not None else None

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        self._finish_confusion_matrix("val")

    def on_test_epoch_start(self) -> None:
        self.test_samples: dict[bool, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {True: [], False: []}

    def _keep_test_samples(self, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> None:
        """The first ``SAMPLES_PER_GRID`` correct and misclassified test images (of this rank's share)."""
        if all(len(kept) >= SAMPLES_PER_GRID for kept in self.test_samples.values()):
            return
        probabilities = logits.detach().softmax(dim=1)
        correct = probabilities.argmax(dim=1) == labels
        for is_correct in (True, False):
            kept = self.test_samples[is_correct]
            room = SAMPLES_PER_GRID - len(kept)
            for index in correct.eq(is_correct).nonzero().flatten()[:room]:
                kept.append((images[index].cpu(), labels[index].cpu(), probabilities[index].cpu()))

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        self._finish_confusion_matrix("test")
        writer = self._tensorboard()
        if writer is None:
            return
        for is_correct, name in ((False, "misclassified"), (True, "correct")):
            if self.test_samples[is_correct]:
                images, labels, probabilities = (
                    torch.stack(column) for column in zip(*self.test_samples[is_correct], strict=True)
                )
                figure = sample_grid(images, labels, probabilities, f"{type(self).__name__}: {name} test images")
                writer.add_figure(f"test/{name}", figure, self.global_step)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        warmup = self.hparams.warmup
        if self.lr_scheduler is None and not warmup:
            return optimizer
        interval = self.hparams.scheduler_interval
        scheduler = None
        if self.lr_scheduler is not None:
            try:
                scheduler = self.lr_scheduler(optimizer)
            except ValueError as error:  # OneCycleLR without total_steps: the trainer knows the run's length
                if "total_steps" not in str(error):
                    raise
                if not self.automatic_optimization:  # the trainer counts groups of steps
                    raise UserInputError(
                        f"--model.init_args.steps_per_execution {self.hparams.steps_per_execution}: OneCycleLR "
                        "needs its total_steps then (or set steps_per_execution to 1)"
                    ) from None
                scheduler = self.lr_scheduler(optimizer, total_steps=self.trainer.estimated_stepping_batches)
                interval = "step"
        if warmup:
            if isinstance(scheduler, (OneCycleLR, ReduceLROnPlateau)):
                raise UserInputError(
                    f"--model.init_args.warmup does not combine with {type(scheduler).__name__} "
                    "(OneCycleLR warms up itself); use one or the other"
                )
            ramp = LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
            scheduler = ramp if scheduler is None else SequentialLR(optimizer, [ramp, scheduler], milestones=[warmup])
        scheduler_config = {"scheduler": scheduler, "interval": interval}
        if self.automatic_optimization:  # the monitored value is for Lightning, which steps no scheduler otherwise
            scheduler_config["monitor"] = self.hparams.scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": scheduler_config}


def tensorboard_logger(trainer: L.Trainer) -> TensorBoardLogger | None:
    """The run's TensorBoard logger on rank 0, where figures, text and hparams are written; None elsewhere."""
    if not trainer.is_global_zero:
        return None
    return next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)
