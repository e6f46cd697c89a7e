"""The classifier's optimizer and learning-rate schedule: ``FashionMNISTClassifier.configure_optimizers``.

The config's scheduler is built with the optimizer, after ``warmup`` intervals of a linear ramp when asked. Two
schedules may leave their length to the trainer, which knows the run's:

- ``OneCycleLR`` without ``total_steps``: the run's optimizer steps, and it is stepped every step;
- ``CosineAnnealingLR`` without ``T_max`` (in a config: ``CosineAnnealingToEndLR``, whose ``T_max`` is optional):
  the rest of the run after the warm-up, ``max_epochs - warmup`` epochs, or with ``scheduler_interval: step`` the
  run's optimizer steps less the warm-up's, so that the learning rate reaches ``eta_min`` as the run ends.

The run's optimizer steps are ``multi_step.optimizer_steps``: Lightning's ``trainer.estimated_stepping_batches``,
or where a speed setting takes several optimizer steps per Lightning training step, their count.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, OneCycleLR, ReduceLROnPlateau, SequentialLR

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.training.multi_step import optimizer_steps


class CosineAnnealingToEndLR(CosineAnnealingLR):
    """torch's ``CosineAnnealingLR`` with an optional ``T_max``: left out, the classifier sets it to the rest of the
    run after the warm-up (see the module's docstring), so a config needs no hand-computed length.

    A class of its own because LightningCLI requires torch's required ``T_max`` in a config; torch's class built in
    Python without ``T_max`` (``functools.partial(CosineAnnealingLR)``) gets the same length.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_max: int | None = None,  # noqa: N803  (torch's name)
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        # torch reads T_max only from the first step on: a missing one is set before then (configure_optimizers)
        super().__init__(optimizer, T_max, eta_min, last_epoch)  # type: ignore[arg-type]


def configure_optimizers(module: L.LightningModule) -> Any:
    """What ``module.configure_optimizers`` returns: the optimizer alone, or with its scheduler's config."""
    optimizer = module.optimizer(module.parameters())
    warmup = module.hparams.warmup
    if module.lr_scheduler is None and not warmup:
        return optimizer
    interval = module.hparams.scheduler_interval
    scheduler = None
    if module.lr_scheduler is not None:
        scheduler, interval = build_scheduler(module, optimizer, interval)
    if warmup:
        if isinstance(scheduler, (OneCycleLR, ReduceLROnPlateau)):
            raise UserInputError(
                f"--model.init_args.warmup does not combine with {type(scheduler).__name__} "
                "(OneCycleLR warms up itself); use one or the other"
            )
        ramp = LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
        scheduler = ramp if scheduler is None else SequentialLR(optimizer, [ramp, scheduler], milestones=[warmup])
    scheduler_config = {"scheduler": scheduler, "interval": interval, "monitor": module.hparams.scheduler_monitor}
    return {"optimizer": optimizer, "lr_scheduler": scheduler_config}


def build_scheduler(module: L.LightningModule, optimizer: Optimizer, interval: str) -> tuple[Any, str]:
    """The config's scheduler over ``optimizer``, its length from the trainer where it has none; and its interval."""
    try:
        scheduler = module.lr_scheduler(optimizer)
    except ValueError as error:  # OneCycleLR without total_steps: the trainer knows the run's length
        if "total_steps" not in str(error):
            raise
        return module.lr_scheduler(optimizer, total_steps=optimizer_steps(module.trainer)), "step"
    except TypeError as error:  # torch's CosineAnnealingLR without T_max (built in Python)
        if "T_max" not in str(error):
            raise
        scheduler = None
    if scheduler is None or (isinstance(scheduler, CosineAnnealingLR) and scheduler.T_max is None):
        scheduler = module.lr_scheduler(optimizer, T_max=cosine_length(module, interval))
    return scheduler, interval


def cosine_length(module: L.LightningModule, interval: str) -> int:
    """A ``CosineAnnealingLR``'s ``T_max`` for the rest of the run after the warm-up, in scheduler intervals.

    At least 1: a run that ends within its warm-up never reaches the cosine, which steps once, into its first
    interval, as the warm-up ends (and a ``T_max`` of 0 would divide by zero there).
    """
    trainer = module.trainer
    if interval == "step":
        total, source = optimizer_steps(trainer), "--trainer.max_epochs or --trainer.max_steps"
    else:
        total, source = trainer.max_epochs, "--trainer.max_epochs"
    if total is None or total < 0 or math.isinf(total):
        raise UserInputError(
            f"CosineAnnealingLR without T_max takes its length from {source}, which this run does not set: "
            "set it, or give the scheduler's T_max"
        )
    return max(1, int(total) - module.hparams.warmup)
