"""Weight EMA with timm's decay warm-up: Lightning's ``EMAWeightAveraging`` made to work from the first epoch."""

from __future__ import annotations

import itertools
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

from fmnist_lightning.lightning_private import averaged_network, use_multi_average_fn


def ema_decay(updates: int, decay: float) -> float:
    """timm's EMA warm-up (``ModelEmaV3``, power 3/4): the decay rises from 0 towards ``decay`` with the updates."""
    return min(decay, 1 - (1 + updates) ** -0.75)


class EMAWithWarmup(EMAWeightAveraging):
    """Lightning's weight EMA with timm's decay warm-up, and batch-norm statistics that fit the averaged weights.

    A fixed decay of 0.999 still gives the random initial weights 65 % of the average after 430 steps (one epoch of
    EfficientNet at batch 128), so the first epochs validate and checkpoint a near-random network; with the
    warm-up the average follows the weights early and settles to ``decay`` over the run. Lightning's callback has
    no warm-up and timm's ``ModelEmaV3`` is not a callback: this passes the warm-up as the averaging function.

    The average of the batch-norm running statistics is not the statistics of the averaged weights: while the
    weights still move fast the two part, and SeedEfficientNet's average validated at chance for 4 epochs of a run
    whose weights trained at 87 % (its averaged checkpoint: 89.7 % with batch statistics, 9.7 % with its running
    ones). With ``bn_batches`` the averaged network's statistics are computed afresh on that many training batches
    (torch's ``swa_utils.update_bn``; Lightning leaves this to the user) before it is validated, and so before
    the checkpoints that follow a validation and the copy at the end of fit: the data module's training batches.
    """

    def __init__(self, decay: float = 0.999, bn_batches: int = 0, **kwargs: Any) -> None:
        @torch.no_grad()
        def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
            weight = 1 - ema_decay(int(updates), decay)
            if averaged[0].is_floating_point():
                torch._foreach_lerp_(averaged, current, weight)
            else:  # integer buffers (BatchNorm's batch counter), as torch's own EMA does them
                for average, value in zip(averaged, current, strict=True):
                    average.copy_(average * (1 - weight) + value * weight)

        super().__init__(decay=decay, **kwargs)
        # the parent hands its fixed-decay avg_fn to torch's AveragedModel through _kwargs; swap in the warm-up (a
        # test fails if Lightning renames this)
        use_multi_average_fn(self, update)
        self.bn_batches = bn_batches

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        average = averaged_network(self)
        if self.bn_batches and average is not None and trainer.datamodule is not None:
            # on forked random state: the loader's shuffle and the network's dropout here leave training's draws as
            # they were, so bn_batches changes what is validated, never what is trained
            with torch.random.fork_rng(devices=[pl_module.device] if pl_module.device.type == "cuda" else []):
                loader = trainer.datamodule.train_dataloader()
                batches = (trainer.strategy.batch_to_device(batch)[0] for batch in loader)
                # fast_dev_run is "a check on one batch": one batch here too
                count = 1 if trainer.fast_dev_run else self.bn_batches
                torch.optim.swa_utils.update_bn(itertools.islice(batches, count), average)
        super().on_validation_epoch_start(trainer, pl_module)
