"""``steps_per_execution``: K optimizer steps per Lightning training step, as Keras's option of that name.

Lightning's own work per training step (~1.5 ms on a CPU, which it cannot skip) is then shared by K steps: 20 %
faster for LeNet-5 and Brownlee's CNN on a 2-core CPU. The data module delivers K batches as one loader item and
splits them after the transfer (its ``batches_per_step``, linked to the model's option by the CLI); the model takes a
step on each, in manual optimization, with the same batches and updates as one at a time
(tests/test_speed_options.py). What Lightning does once per optimizer step is done here after each of the K: the
schedulers stepped every step, and weight averaging (Lightning's ``WeightAveraging``, EMA), which Lightning updates
once per training step (``on_train_batch_end``), updated after every step as with K = 1. A schedule sized by the
trainer (``OneCycleLR`` without ``total_steps``) gets the run's optimizer steps (``optimizer_steps``), where
Lightning's ``estimated_stepping_batches`` counts groups. Everything this needs lives here, the private Lightning
calls in ``fmnist_lightning.lightning_private``.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.optim.lr_scheduler import ReduceLROnPlateau

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.lightning_private import step_counted_without_hooks, training_step_index

# the hooks around an optimizer step's backward pass and update, on callbacks and on the LightningModule alike
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
Batch = tuple[torch.Tensor, torch.Tensor]


def training_batches(batch: Any) -> list[Batch]:
    """The (images, targets) batches of one Lightning training step: the list of K batches, or the one batch."""
    return batch if isinstance(batch, list) else [batch]


def batches_per_step(module: L.LightningModule) -> int:
    """The batches (optimizer steps) one Lightning training step takes: the model's ``steps_per_execution``."""
    return int(module.hparams.get("steps_per_execution", 1))


def batches_per_epoch(trainer: L.Trainer) -> int | float:
    """The training batches of an epoch, where Lightning counts its training steps (``num_training_batches``): with
    ``steps_per_execution`` K > 1 each holds K batches but the epoch's last, whose loader item holds the rest of the
    images, may hold fewer. ``inf`` for a loader without a length."""
    steps = trainer.num_training_batches
    k = batches_per_step(trainer.lightning_module)
    loader = trainer.train_dataloader
    if k == 1 or math.isinf(steps) or not hasattr(loader, "sampler") or not loader.batch_size:
        return steps * k
    groups = len(loader)  # a whole epoch's loader items; limit_train_batches may stop before the short last one
    if steps < groups:
        return steps * k
    # per DDP rank: the sampler's share; a drop_last loader's last item is whole
    last_images = min(len(loader.sampler) - (groups - 1) * loader.batch_size, loader.batch_size)
    return (groups - 1) * k + math.ceil(last_images / (loader.batch_size // k))


def optimizer_steps(module: L.LightningModule) -> int | float:
    """The run's optimizer steps, as Lightning's ``estimated_stepping_batches`` counts them with K = 1.

    With ``steps_per_execution`` K > 1 Lightning counts its training steps (groups of K): here an epoch counts its
    batches (``batches_per_epoch``: a short last group, ``limit_train_batches``), capped by ``max_steps``, which
    ``global_step`` (optimizer steps) meets. An endless run or a loader without a length: Lightning's figure
    (``max_steps``, or inf)."""
    trainer = module.trainer
    estimate = trainer.estimated_stepping_batches  # also sets up the train loader, so num_training_batches is known
    endless = trainer.max_epochs == -1 or math.isinf(trainer.num_training_batches)  # or a loader without a length
    if batches_per_step(module) == 1 or endless:
        return estimate
    total = batches_per_epoch(trainer) * max(trainer.max_epochs, 1)
    return min(total, trainer.max_steps) if trainer.max_steps != -1 else total


def take_steps(module: L.LightningModule, batches: Any, plain: bool) -> tuple[Any, Any]:
    """An optimizer step on each batch of a ``FashionMNISTClassifier``, as Lightning's automatic optimization would
    take it (``plain``: without Lightning's hook calls, see ``plain_steps_possible``); the last batch's loss and
    accuracy (None, None without a step)."""
    trainer = module.trainer
    optimizer = module.optimizers()
    averaging = [callback for callback in trainer.callbacks if isinstance(callback, WeightAveraging)]
    batches = training_batches(batches)
    loss = accuracy = None
    for index, batch in enumerate(batches):
        if 0 <= trainer.max_steps <= module.global_step:
            break
        loss, accuracy, _ = module.step_on_batch(batch, "train")
        optimizer.zero_grad(set_to_none=True)
        if plain:
            loss.backward()
            step_counted_without_hooks(optimizer)
        else:
            module.manual_backward(loss)
            optimizer.step()
        step_schedulers(module, "step")
        if averaging and index < len(batches) - 1:  # Lightning's own call after the training step does the last
            update_averages(module, averaging, loss, batch)
    return loss, accuracy


def update_averages(module: L.LightningModule, averaging: list[WeightAveraging], loss: Any, batch: Batch) -> None:
    """Weight averaging after an optimizer step within a training step, as Lightning does it after a training step.

    Lightning calls ``WeightAveraging.on_train_batch_end`` once per training step, which updates the average when
    ``global_step`` has moved on since its last update and ``should_update(step_idx=global_step - 1)`` agrees: called
    after every optimizer step, ``global_step`` is each step's, as with K = 1, and so are the updates (every step's,
    or ``update_every_n_steps``'); Lightning's own call after the group's last step then averages that step.
    """
    trainer = module.trainer
    outputs = {"loss": loss.detach()}  # what Lightning hands the hook in manual optimization
    for callback in averaging:
        callback.on_train_batch_end(trainer, module, outputs, batch, training_step_index(trainer))


def step_schedulers(module: L.LightningModule, interval: str) -> None:
    """What Lightning's automatic optimization does with the schedulers, which manual optimization leaves to us:
    each steps at its interval, ``ReduceLROnPlateau`` with its monitored metric (after the epoch's validation)."""
    trainer = module.trainer
    for config in trainer.lr_scheduler_configs:
        if config.interval != interval:
            continue
        if isinstance(config.scheduler, ReduceLROnPlateau):
            monitor = module.hparams.scheduler_monitor
            if monitor not in trainer.callback_metrics:
                raise UserInputError(
                    f"ReduceLROnPlateau watches {monitor}, which was not logged this epoch; set "
                    "--model.init_args.scheduler_monitor to a logged metric, e.g. val/loss"
                )
            config.scheduler.step(trainer.callback_metrics[monitor])
        else:
            config.scheduler.step()


def plain_steps_possible(module: L.LightningModule) -> bool:
    """Whether the K steps may skip Lightning's hook calls around the backward pass and the step.

    Lightning's manual_backward and LightningOptimizer.step call every callback's and the module's hooks around the
    backward pass and the step, Lightning's default no-ops included: ~0.4 ms an optimizer step on a CPU (Brownlee:
    3.27 against 3.00 ms for the backward, 0.92 against 0.77 ms for the step), 8-10 % of a LeNet-5 or Brownlee
    step. Where no hook does anything and neither precision nor strategy changes the backward or the step, the
    steps go without the wrappers. Decided once per fit (``on_fit_start``).
    """
    trainer = module.trainer
    hooked = [module, *trainer.callbacks]
    return (
        type(trainer.precision_plugin) is Precision
        and type(trainer.strategy) is SingleDeviceStrategy
        and not is_overridden("backward", module, L.LightningModule)
        and not any(is_overridden(hook, obj) for hook in STEP_HOOKS for obj in hooked)
    )


def check_data(steps_per_execution: int, datamodule: Any) -> None:
    """The data module must group as many batches per item as the model takes steps (the CLI links the two)."""
    grouped = datamodule.hparams.get("batches_per_step") if isinstance(datamodule, L.LightningDataModule) else None
    if grouped is not None and grouped != steps_per_execution:
        raise UserInputError(
            f"the model takes {steps_per_execution} optimizer steps per training step (steps_per_execution) but the "
            f"data module groups {grouped} batches per step (batches_per_step); set both alike"
        )
