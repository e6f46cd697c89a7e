"""``steps_per_execution``: K optimizer steps per Lightning training step, as Keras's option of that name.

Lightning's own work per training step (~1.5 ms on a CPU, which it cannot skip) is then shared by K steps: 18 %
faster for LeNet-5 on a 2-core CPU (docs/speed.md). A speed setting (``--speed.steps_per_execution``,
``SpeedSettings``), set up here for a fit and removed after it, so that the model, the data module, the schedules, the
weight averaging and the figures are written for one batch a step and know nothing of it:

- Lightning's fit loop takes its training loader with K times the batch size (``regroup_loader``, the same
  shuffled order, and a plain ``BatchSampler`` that Lightning's DDP sampler injection handles as before), and the
  batch-transfer hook (the data module's ``on_after_batch_transfer``, or the model's) is wrapped to split each
  item into the K batches of the original loader first and then apply itself to each: the same batches and
  augmentation draws as K = 1, a short last batch dropped where the original loader drops it (``drop_last``).
- The model's own ``training_step`` (one batch, its loss returned for automatic optimization) is called on each of
  the K batches by a wrapper on the instance, which takes the optimizer step after each in manual optimization
  (``automatic_optimization`` is public), as Lightning's automatic optimization would (``take_steps``). What
  Lightning does once per optimizer step is done here after each of the K: the schedulers stepped every step, and
  weight averaging (Lightning's ``WeightAveraging``, EMA), which Lightning updates once per training step
  (``on_train_batch_end``), updated after every step as with K = 1.
- One step axis in TensorBoard: Lightning's loggers write at their count of training steps, which here counts
  optimizer steps, as with K = 1 (``take_steps``); ``log_every_n_steps`` counts optimizer steps too, with one write
  at most per training step.
- A schedule sized by the trainer asks ``optimizer_steps`` (Lightning's ``estimated_stepping_batches`` counts groups
  of K) and the progress bar ``batches_per_epoch`` and ``batches_done``: K = 1's figures without a setting.

The same batches and updates as one at a time: tests/test_speed_options.py. The private Lightning calls are in
``fmnist_lightning.lightning_private``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.lightning_private import (
    optimizer_step_counters,
    regroup_train_loaders,
    set_logger_step,
    should_update_logs,
    step_counted_without_hooks,
    training_step_index,
)

# the hooks around an optimizer step's backward pass and update, on callbacks and on the LightningModule alike
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
TRANSFER_HOOK = "on_after_batch_transfer"


def training_batches(batch: Any) -> list[Any]:
    """The batches of one Lightning training step: the list of K batches, or the one batch."""
    return batch if isinstance(batch, list) else [batch]


@dataclass
class StepsPerExecution:
    """K optimizer steps per Lightning training step in one fit: ``install`` sets it up, ``remove`` undoes it."""

    k: int
    plain: bool = False  # the steps go without Lightning's hook calls (``plain_steps_possible``)
    batch_size: int = 0  # the original training loader's, which a loader item holds K of
    drop_last: bool = False  # the original loader's: a short last batch of an epoch is dropped
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def regroup_loader(self, loader: Any) -> DataLoader:
        """The training loader with K batches an item: the same dataset, sampler (so the same shuffled order) and
        loading options; a short last item's batches are split after the transfer."""
        if type(loader) is not DataLoader or loader.batch_size is None:
            raise UserInputError(
                "--speed.steps_per_execution groups the batches of a torch DataLoader with a batch_size; this "
                f"training loader is a {type(loader).__name__}: set --speed.steps_per_execution 1"
            )
        self.batch_size, self.drop_last = loader.batch_size, loader.drop_last
        return DataLoader(
            loader.dataset,
            batch_size=self.k * loader.batch_size,
            sampler=loader.sampler,
            drop_last=False,
            collate_fn=loader.collate_fn,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            generator=loader.generator,
            prefetch_factor=loader.prefetch_factor,
            persistent_workers=loader.persistent_workers,
            pin_memory_device=loader.pin_memory_device,
        )

    def split(self, batch: Any) -> list[tuple[Any, ...]] | None:
        """A training item's batches as the original loader made them; None for what is not a tuple of tensors."""
        if not isinstance(batch, (tuple, list)) or not all(isinstance(part, torch.Tensor) for part in batch):
            return None
        pieces = list(zip(*(part.split(self.batch_size) for part in batch), strict=True))
        return [piece for piece in pieces if not self.drop_last or len(piece[0]) == self.batch_size]

    def start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """As fit starts, after ``configure_optimizers`` (so its scheduler configs are Lightning's automatic ones,
        with their monitored metric): the steps become the wrapper's."""
        module.automatic_optimization = False
        self.plain = plain_steps_possible(trainer, module)

    def end_epoch(self, trainer: L.Trainer) -> None:
        step_schedulers(trainer, "epoch")

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()


def install(trainer: L.Trainer, module: L.LightningModule, k: int) -> StepsPerExecution:
    """Sets up K steps per training step for a fit (called from ``SpeedSettings.setup``, before Lightning asks for
    the training loader and the optimizers)."""
    if not module.automatic_optimization:
        raise UserInputError(
            "--speed.steps_per_execution takes the optimizer steps of a model with automatic optimization; this "
            "model takes its own (manual optimization): set --speed.steps_per_execution 1"
        )
    # Lightning refuses these with manual optimization, which its check before setup did not see
    if (trainer.gradient_clip_val or 0) > 0 or trainer.accumulate_grad_batches != 1:
        raise UserInputError(
            "--speed.steps_per_execution takes each optimizer step itself, without Lightning's gradient clipping or "
            "accumulation: set --speed.steps_per_execution 1, or leave out --trainer.gradient_clip_val and "
            "--trainer.accumulate_grad_batches"
        )
    steps = StepsPerExecution(k)
    steps._undo.append(regroup_train_loaders(trainer, steps.regroup_loader))

    # the object whose transfer hook Lightning calls (its _DataHookSelector's rule): the data module's if it has one
    datamodule = trainer.datamodule
    owner = datamodule if datamodule is not None and is_overridden(TRANSFER_HOOK, datamodule) else module
    transfer = getattr(owner, TRANSFER_HOOK)

    # plain functions on the instances, not bound methods of ``steps``: a deep copy of the model (weight averaging's)
    # shares them instead of copying the trainer they reach
    def on_after_batch_transfer(batch: Any, dataloader_idx: int) -> Any:
        pieces = steps.split(batch) if trainer.training else None
        if pieces is None:
            return transfer(batch, dataloader_idx)
        return [transfer(piece, dataloader_idx) for piece in pieces]

    step_on_batch = module.training_step

    def training_step(batch: Any, batch_idx: int) -> Any:
        return take_steps(trainer, module, steps, step_on_batch, training_batches(batch), batch_idx)

    training_step.steps_per_execution = steps  # type: ignore[attr-defined]  # for ``installed``
    wrappers = ((owner, TRANSFER_HOOK, on_after_batch_transfer), (module, "training_step", training_step))
    for target, name, wrapper in wrappers:
        setattr(target, name, wrapper)
        steps._undo.append(lambda target=target, name=name: delattr(target, name))
    steps._undo.append(lambda: leave_manual_optimization(trainer, module))
    return steps


def leave_manual_optimization(trainer: L.Trainer, module: L.LightningModule) -> None:
    """Back to automatic optimization after the fit, with its count of steps (``global_step``) the fit's."""
    module.automatic_optimization = True
    automatic, manual = optimizer_step_counters(trainer)
    automatic.load_state_dict(manual.state_dict())


def installed(trainer: L.Trainer) -> StepsPerExecution | None:
    """The running fit's ``StepsPerExecution``, if it takes several steps per training step."""
    module = trainer.lightning_module
    step = vars(module).get("training_step") if module is not None else None
    return getattr(step, "steps_per_execution", None)


def take_steps(
    trainer: L.Trainer,
    module: L.LightningModule,
    steps: StepsPerExecution,
    step_on_batch: Callable[[Any, int], Any],
    batches: list[Any],
    batch_idx: int,
) -> Any:
    """An optimizer step on each batch, with the model's own ``training_step`` for each, as Lightning's automatic
    optimization would take it (``plain``: without Lightning's hook calls, see ``plain_steps_possible``); the last
    step's loss (None without a step).

    During each, Lightning's count of training steps, at which its loggers write and by which they decide whether
    to (``log_every_n_steps``), is the step's index, as with K = 1, so the model logs the figures of the steps that
    K = 1 logs; after them, it is the last logged step's (so that Lightning writes it there) or the last step's.
    """
    optimizer = module.optimizers()
    if isinstance(optimizer, list):
        raise UserInputError("--speed.steps_per_execution takes the steps of one optimizer; this model has several")
    averaging = [callback for callback in trainer.callbacks if isinstance(callback, WeightAveraging)]
    loss = logged = None
    taken = False
    for index, batch in enumerate(batches):
        if 0 <= trainer.max_steps <= trainer.global_step:
            break
        set_logger_step(trainer, trainer.global_step)
        output = step_on_batch(batch, batch_idx)
        if should_update_logs(trainer):
            logged = trainer.global_step
        loss = output.get("loss") if isinstance(output, Mapping) else output
        if loss is None:  # as automatic optimization: no step for this batch
            continue
        optimizer.zero_grad(set_to_none=True)
        if steps.plain:
            loss.backward()
            step_counted_without_hooks(optimizer)
        else:
            module.manual_backward(loss)
            optimizer.step()
        taken = True
        step_schedulers(trainer, "step")
        if averaging and index < len(batches) - 1:  # Lightning's own call after the training step does the last
            update_averages(trainer, module, averaging, loss, batch)
    if taken or logged is not None:
        set_logger_step(trainer, logged if logged is not None else trainer.global_step - 1)
    return loss


def update_averages(
    trainer: L.Trainer, module: L.LightningModule, averaging: list[WeightAveraging], loss: Any, batch: Any
) -> None:
    """Weight averaging after an optimizer step within a training step, as Lightning does it after a training step.

    Lightning calls ``WeightAveraging.on_train_batch_end`` once per training step, which updates the average when
    ``global_step`` has moved on since its last update and ``should_update(step_idx=global_step - 1)`` agrees: called
    after every optimizer step, ``global_step`` is each step's, as with K = 1, and so are the updates (every step's,
    or ``update_every_n_steps``'); Lightning's own call after the group's last step then averages that step.
    """
    outputs = {"loss": loss.detach()}  # what Lightning hands the hook in manual optimization
    for callback in averaging:
        callback.on_train_batch_end(trainer, module, outputs, batch, training_step_index(trainer))


def step_schedulers(trainer: L.Trainer, interval: str) -> None:
    """What Lightning's automatic optimization does with the schedulers, which manual optimization leaves to us:
    each steps at its interval, ``ReduceLROnPlateau`` with its monitored metric (after the epoch's validation)."""
    for config in trainer.lr_scheduler_configs:
        if config.interval != interval:
            continue
        if config.reduce_on_plateau or isinstance(config.scheduler, ReduceLROnPlateau):
            monitor = config.monitor
            if monitor not in trainer.callback_metrics:
                raise UserInputError(
                    f"ReduceLROnPlateau watches {monitor}, which was not logged this epoch; set "
                    "--model.init_args.scheduler_monitor to a logged metric, e.g. val/loss"
                )
            config.scheduler.step(trainer.callback_metrics[monitor])
        else:
            config.scheduler.step()


def plain_steps_possible(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether the K steps may skip Lightning's hook calls around the backward pass and the step.

    Lightning's manual_backward and LightningOptimizer.step call every callback's and the module's hooks around the
    backward pass and the step, Lightning's default no-ops included: ~0.4 ms an optimizer step on a CPU (Brownlee:
    3.27 against 3.00 ms for the backward, 0.92 against 0.77 ms for the step), 8-10 % of a LeNet-5 or Brownlee
    step. Where no hook does anything and neither precision nor strategy changes the backward or the step, the
    steps go without the wrappers. Decided once per fit (``on_fit_start``).
    """
    hooked = [module, *trainer.callbacks]
    return (
        type(trainer.precision_plugin) is Precision
        and type(trainer.strategy) is SingleDeviceStrategy
        and not is_overridden("backward", module, L.LightningModule)
        and not any(is_overridden(hook, obj) for hook in STEP_HOOKS for obj in hooked)
    )


def carry_step_count(trainer: L.Trainer) -> None:
    """A run resumed with another ``steps_per_execution`` (1 against more) goes on counting its optimizer steps.

    Lightning counts ``global_step`` apart for automatic and manual optimization, and reads the counter of the mode
    the model is in: the checkpoint's count moves into that counter when it is still at 0 (``on_train_start``,
    after the checkpoint is restored)."""
    automatic, manual = optimizer_step_counters(trainer)
    now, other = (automatic, manual) if trainer.lightning_module.automatic_optimization else (manual, automatic)
    if now.completed == 0 and other.completed > 0:
        now.load_state_dict(other.state_dict())


def batches_per_epoch(trainer: L.Trainer) -> int | float:
    """The training batches (optimizer steps) of an epoch; Lightning's ``num_training_batches`` counts its training
    steps, which with K > 1 hold K batches but the epoch's last, which may hold fewer. ``inf`` for a loader without
    a length."""
    steps = trainer.num_training_batches
    grouped = installed(trainer)
    if grouped is None:
        return steps
    loader = trainer.train_dataloader
    if math.isinf(steps) or not hasattr(loader, "sampler") or not loader.batch_size:
        return steps * grouped.k
    groups = len(loader)  # a whole epoch's loader items; limit_train_batches may stop before the short last one
    if steps < groups:
        return steps * grouped.k
    # per DDP rank: the sampler's share; the last item's images make its batches, a short one dropped with drop_last
    last_images = len(loader.sampler) - (groups - 1) * loader.batch_size
    last = last_images // grouped.batch_size if grouped.drop_last else math.ceil(last_images / grouped.batch_size)
    return (groups - 1) * grouped.k + last


def batches_done(trainer: L.Trainer, batch_idx: int, batch: Any) -> int:
    """The training batches of the epoch done after the training step ``batch_idx`` that took ``batch``."""
    grouped = installed(trainer)
    return batch_idx * (grouped.k if grouped is not None else 1) + len(training_batches(batch))


def optimizer_steps(trainer: L.Trainer) -> int | float:
    """The run's optimizer steps, as Lightning's ``estimated_stepping_batches`` counts them with K = 1.

    With K > 1 Lightning counts its training steps (groups of K): here an epoch counts its batches
    (``batches_per_epoch``: a short last group, ``limit_train_batches``), capped by ``max_steps``, which
    ``global_step`` (optimizer steps) meets. An endless run or a loader without a length: Lightning's figure
    (``max_steps``, or inf)."""
    estimate = trainer.estimated_stepping_batches  # also sets up the train loader, so num_training_batches is known
    endless = trainer.max_epochs == -1 or math.isinf(trainer.num_training_batches)  # or a loader without a length
    if installed(trainer) is None or endless:
        return estimate
    total = batches_per_epoch(trainer) * max(trainer.max_epochs, 1)
    return min(total, trainer.max_steps) if trainer.max_steps != -1 else total
