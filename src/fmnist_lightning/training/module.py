"""The LightningModule every architecture trains with: the network injected; loss, metrics, logging, optimisers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric

from fmnist_lightning.data.images import ImageSource, Invert
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.fashion_mnist import CLASS_NAMES, MEAN, STD
from fmnist_lightning.lightning_private import module_from_checkpoint, should_update_logs
from fmnist_lightning.networks.keras_layers import KerasRunningVar, RunningVarUpdate
from fmnist_lightning.training.old_checkpoints import INSTANTIATOR, saved_standardize
from fmnist_lightning.training.prediction import Prediction, predict_images

STAGES = ("train", "val", "test")


def count_params(module: nn.Module) -> int:
    """Parameters plus BatchNorm running mean/variance: what Keras's ``count_params()`` reports."""
    buffers = sum(
        b.numel() for name, b in module.named_buffers() if name.rsplit(".", 1)[-1] in ("running_mean", "running_var")
    )
    return sum(p.numel() for p in module.parameters()) + buffers


class FashionMNISTClassifier(L.LightningModule):
    """Trains any network (images N×1×28×28 → logits N×10) as the study trained its models; the models in
    ``fmnist_lightning.models`` are thin subclasses that pass their network as ``net``.

    Targets are one-hot or soft float vectors (Keras ``to_categorical``); the loss is the cross-entropy of the
    logits against them, which equals Keras's softmax output with ``categorical_crossentropy``.

    Args:
        net: The network (``fmnist_lightning.networks``); its layers are ``self.net``'s, so checkpoints hold
            ``net.*`` weights.
        standardize: Subtract Fashion-MNIST's training mean 0.2860 and divide by its std 0.3530 before the network
            (inputs are pixels scaled to [0, 1], exactly the study's x / 255.0). The model owns its normalisation,
            so a checkpoint, ``predict_images`` and an exported file need no word about it.
        optimizer: Built with the model's parameters, e.g. ``torch.optim.SGD`` with ``lr: 0.01`` in YAML.
        lr_scheduler: Optional, built with the optimizer; stepped every epoch, or every training step with
            ``scheduler_interval: step``. A ``OneCycleLR`` without ``total_steps`` gets the run's length in
            optimizer steps from the trainer (``training/schedules.py``) and is stepped every step.
        scheduler_monitor: The metric a ``ReduceLROnPlateau`` scheduler watches.
        scheduler_interval: ``epoch`` or ``step``.
        warmup: Scheduler intervals (epochs, or steps) over which the learning rate rises linearly from 1 % to the
            optimizer's, before ``lr_scheduler`` (which then starts its own schedule; set its length to the rest).
        bn_running_var: How training updates the running variance of the network's Keras-style BatchNorms, which
            evaluation uses: "keras", the batch's biased variance (÷ n) as Keras's BatchNormalization (the study
            configs set it); "torch", the unbiased one (÷ (n − 1)), as torch and this project's own recipes (the
            default: checkpoints evaluate the same under either). No effect on a network without them.
        tta_flip: Test-time augmentation in ``test`` and ``predict``: the mean of the class probabilities of each
            image and its mirror image.
    """

    def __init__(
        self,
        net: nn.Module,
        standardize: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_monitor: str = "val/loss",
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        warmup: int = 0,
        bn_running_var: RunningVarUpdate = "torch",
        tta_flip: bool = False,
    ) -> None:
        super().__init__()
        if warmup < 0:
            raise UserInputError(f"--model.init_args.warmup must be ≥ 0 scheduler intervals, got {warmup}")
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        self.net = net
        for layer in net.modules():  # the Keras-style BatchNorms (networks/keras_layers.py)
            if isinstance(layer, KerasRunningVar):
                layer.running_var_update = bn_running_var
        self.standardize = standardize
        # on the model's device with it (non-persistent: checkpoints keep only net.* weights), so standardising makes
        # no host-to-device copy per batch; shaped 1×1×1×1 as torchvision's normalize shapes its mean and std
        self.register_buffer("input_mean", torch.tensor(MEAN).view(1, 1, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(STD).view(1, 1, 1, 1), persistent=False)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.class_names = CLASS_NAMES
        self.example_input_array = torch.zeros(1, 1, 28, 28)
        for stage in STAGES:  # the epoch's mean loss and accuracy, synced across DDP ranks (see step_on_batch)
            setattr(self, f"{stage}_acc", MeanMetric(nan_strategy="disable"))
            setattr(self, f"{stage}_loss", MeanMetric(nan_strategy="disable"))
        self._epoch_sums: dict[str, torch.Tensor] = {}  # stage → (sum of losses, correct predictions)
        self._epoch_counts: dict[str, int] = {}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """What happens to the [0, 1] pixels before the network: the standardisation, if the model has one."""
        # torchvision's normalize, as the data pipeline applied it before the model owned it: the same arithmetic
        # (a division by a tensor; a division by a Python float is a multiplication by its reciprocal on CPU)
        return images.sub(self.input_mean).div_(self.input_std) if self.standardize else images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = self.preprocess(images)
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

    def step_on_batch(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's loss, accuracy and logits; adds the loss and the correct predictions to the epoch's sums."""
        images, targets = batch
        logits = self._evaluate(images, stage)
        loss = self.loss(logits, targets)
        labels = targets.argmax(dim=1)
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        # Lightning's self.log costs ~2 ms a call on a CPU (it moves its record to the device every time), and a
        # torchmetrics update ~0.15 ms (its wrapper, not its arithmetic): per step only the batch's loss and correct
        # count are summed on the device; the sums go into the torchmetrics means (which sync across DDP ranks) and
        # are logged once an epoch, the training step's own figures only on the steps the logger writes. Lightning's
        # usual way, torchmetrics objects updated and logged every step, trained LeNet-5 at 0.78× (0.72-0.83×) of
        # this speed on a 2-core CPU (benchmarks/epoch_metrics.py, docs/speed.md)
        batch_sums = torch.stack((loss.detach() * len(images), correct.to(loss.dtype)))
        self._epoch_sums[stage] = self._epoch_sums.get(stage, 0) + batch_sums
        self._epoch_counts[stage] = self._epoch_counts.get(stage, 0) + len(images)
        return loss, correct / len(images), logits

    def _log_epoch(self, stage: str, suffix: str = "") -> None:
        """The epoch's loss and accuracy over all its batches (and all DDP ranks: the metrics sync)."""
        sums, count = self._epoch_sums.pop(stage, None), self._epoch_counts.pop(stage, 0)
        if sums is None:  # no batches on this rank
            return
        for name, total in zip(("loss", "acc"), sums, strict=True):
            metric = getattr(self, f"{stage}_{name}")
            metric.update(total / count, count)
            self.log(f"{stage}/{name}{suffix}", metric, on_step=False, on_epoch=True, prog_bar=stage != "train")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The batch's loss, for one optimizer step."""
        loss, accuracy, _ = self.step_on_batch(batch, "train")
        # per step only on the steps the logger writes (each self.log moves its value to the device: ~2 ms); the
        # logger's own rule, which Lightning keeps private. Not prog_bar: Lightning would turn a progress-bar value
        # into a Python number after every later step of the epoch (a host sync on a GPU); the bar shows these from
        # the steps the logger writes (observe/progress.py)
        if should_update_logs(self.trainer):
            self.log("train/loss_step", loss)
            self.log("train/acc_step", accuracy)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # once an epoch, after its last training step (which may hold several optimizer steps: training/multi_step.py);
        # not in on_train_epoch_end: callbacks read the epoch's figures there before the model's hook runs
        if self.trainer.is_last_batch:
            self._log_epoch("train", suffix="_epoch")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The batch's logits, for callbacks that look at the predictions (``observe.evaluation``)."""
        return self.step_on_batch(batch, "val")[2].detach()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The batch's logits (with ``tta_flip``: the log of the mean probabilities), for callbacks."""
        return self.step_on_batch(batch, "test")[2].detach()

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities (the Keras model's softmax output)."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self._evaluate(images, "predict").softmax(dim=1)

    @classmethod
    def load_from_checkpoint(cls, *args: Any, **kwargs: Any) -> FashionMNISTClassifier:  # type: ignore[override]
        """Lightning's, for a checkpoint of an earlier version too: built through ``old_checkpoints.py``'s
        instantiator, which drops what the model no longer takes."""
        return super().load_from_checkpoint(*args, _instantiator=INSTANTIATOR, **kwargs)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> FashionMNISTClassifier:
        """``load_from_checkpoint`` of a checkpoint read already (``runs.checkpoints.read_checkpoint``'s), which is
        not read again, on the CPU."""
        return module_from_checkpoint(cls, checkpoint, _instantiator=INSTANTIATOR)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints from before the model owned its standardisation record it as the data module's setting."""
        self.standardize = saved_standardize(checkpoint)
        self.hparams["standardize"] = self.standardize

    def predict_images(self, images: Sequence[ImageSource] | ImageSource, invert: Invert = "auto") -> list[Prediction]:
        """Classes of image files or PIL images (``fmnist_lightning.training.prediction.predict_images``)."""
        return predict_images(self, images, invert)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> Any:
        from fmnist_lightning.training.schedules import configure_optimizers

        return configure_optimizers(self)  # the optimizer; the scheduler, its warm-up and its length (schedules.py)
