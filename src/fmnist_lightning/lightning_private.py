"""Every private Lightning (and TensorBoard-writer) name the project uses, in one place, with why.

Each is a documented gap: Lightning has no public way to do the thing, and doing without costs measured speed or a
feature. They are tested (tests/test_lightning_private.py checks each against the installed Lightning), and the
project pins ``lightning>=2.6,<2.7`` while any remain, so a Lightning release that renames one fails the pin, not a
user's run. To remove one, replace its function body here with the public way and delete it from this list.

- ``should_update_logs``: the logger's rule for which training steps it writes; logging the per-step loss only on
  those saves ~2 ms a step on a CPU (``self.log`` moves its value to the device every call).
- ``step_counted_without_hooks``: ``LightningOptimizer``'s step without the hook calls around it, for
  ``steps_per_execution``'s optimizer steps where no hook does anything (8-10 % of a LeNet-5 step on a CPU).
- ``training_step_index``: the training step's ``batch_idx`` outside ``training_step``, for the weight-averaging
  hook that ``steps_per_execution`` calls after each of its optimizer steps, with what Lightning passes it.
- ``regroup_train_loaders``: the fit loop's source of training loaders, so that ``steps_per_execution`` gives
  Lightning a loader of K batches an item while the data module's own ``train_dataloader`` stays as it is (the
  EMA's batch-norm statistics read it).
- ``logger_step`` and ``set_logger_step``: Lightning's count of training steps, at which its loggers write the
  scalars; ``steps_per_execution`` makes it count optimizer steps, and the figures are written at it, so that a
  run has one step axis in TensorBoard.
- ``optimizer_step_counters``: Lightning counts ``global_step`` apart for automatic and manual optimization, which
  ``steps_per_execution`` switches to for a fit: the count goes on across the switch and across a run resumed with
  another ``steps_per_execution``.
- ``rewind_to_validation_start``: the validation loop's progress counters, so a run stopped during validation
  redoes that validation when resumed (Lightning would skip it).
- ``use_multi_average_fn`` and ``averaged_network``: Lightning's ``WeightAveraging`` passes a fixed-decay function
  to torch's ``AveragedModel`` and keeps the average private; the EMA with warm-up swaps in its own function and
  recomputes the average's batch-norm statistics.
- ``tensorboard_file_writer``: torch's ``SummaryWriter`` writes a raw event (the model graph that
  ``observe/graph.py`` traces with ``torch.fx``) only through its private file writer.
- ``jit_is_scripting``: Lightning's switch that lets a LightningModule be traced outside a Trainer (export).
- ``TrainerWithoutDuplicateBar``: ``LightningCLI._instantiate_trainer``, the one place where the CLI's default
  callbacks meet the config's, to leave the project's progress bar out when the config brings its own; and
  ``LightningCLI._parse_ckpt_path``, where LightningCLI reads a checkpoint's saved hyperparameters into the model's
  arguments, to take those of the file the CLI read already, translated where a model argument moved
  (``saved_model_hyperparameters``).
- ``allow_instantiator``: Lightning's allowlist of the functions a checkpoint may be built by
  (``_ALLOWED_INSTANTIATORS``, which its error names as the place to add one), for the one that builds a checkpoint
  of an earlier version (training/old_checkpoints.py) while Lightning reads the file.
- ``module_from_checkpoint``: Lightning's ``load_from_checkpoint`` after its read of the file (``_load_state``), for
  a checkpoint read already: ``fmnist_lightning.load`` reads the file once, with the safe reader.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ProgressBar, WeightAveraging
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.core import saving
from lightning.pytorch.core.module import _jit_is_scripting
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loops.progress import _BatchProgress
from lightning.pytorch.trainer.connectors.data_connector import _DataLoaderSource
from torch import nn


def should_update_logs(trainer: L.Trainer) -> bool:
    """Whether the loggers write this training step (``log_every_n_steps``, and the last step before a stop)."""
    return trainer._logger_connector.should_update_logs


def step_counted_without_hooks(optimizer: LightningOptimizer) -> None:
    """The wrapped optimizer's step, counted as Lightning counts one (``global_step``), without the hook calls."""
    optimizer._on_before_step()
    optimizer.optimizer.step()
    optimizer._on_after_step()


def training_step_index(trainer: L.Trainer) -> int:
    """The running training step's ``batch_idx`` (within the epoch), as Lightning passes it to the step's hooks."""
    return trainer.fit_loop.epoch_loop.batch_idx


class _RegroupedSource(_DataLoaderSource):
    """The fit loop's source of training loaders, each passed through ``regroup`` as Lightning asks for it (so
    under Lightning's capture of DataLoader arguments, which its DDP sampler injection re-instantiates them with)."""

    def __init__(self, source: _DataLoaderSource, regroup: Callable[[Any], Any]) -> None:
        super().__init__(source.instance, source.name)
        self.regroup = regroup

    def dataloader(self) -> Any:
        return self.regroup(super().dataloader())


def regroup_train_loaders(trainer: L.Trainer, regroup: Callable[[Any], Any]) -> Callable[[], None]:
    """Makes the fit loop train on ``regroup(loader)`` for its training loaders; returns what undoes it."""
    loop = trainer.fit_loop
    source = loop._data_source
    loop._data_source = _RegroupedSource(source, regroup)

    def undo() -> None:
        loop._data_source = source

    return undo


def logger_step(trainer: L.Trainer) -> int:
    """The step at which Lightning's loggers write what is logged now (its count of training steps that stepped)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def set_logger_step(trainer: L.Trainer, step: int) -> None:
    """Sets that count: the step at which the loggers write next, and by which they decide whether to."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = step


def optimizer_step_counters(trainer: L.Trainer) -> tuple[Any, Any]:
    """Lightning's counts of optimizer steps in automatic and in manual optimization (``global_step`` reads the one
    of the model's mode): their totals, with ``completed``, ``state_dict`` and ``load_state_dict``."""
    loop = trainer.fit_loop.epoch_loop
    return (
        loop.automatic_optimization.optim_progress.optimizer.step.total,
        loop.manual_optimization.optim_step_progress.total,
    )


def rewind_to_validation_start(trainer: L.Trainer) -> None:
    """Makes a resumed fit run the interrupted validation again, whole.

    Lightning redoes a validation on resume only from its "restarted mid-evaluation" state (a checkpoint written
    inside a validation step: one batch started, none processed); from a checkpoint written between two batches it
    takes the validation as finished and goes on to the next epoch, which leaves that epoch unvalidated (no
    checkpoint choice, early-stopping check or learning-curve point). These counters are that state at the
    validation's first batch (a test fails if Lightning changes it).
    """
    progress: _BatchProgress = trainer.fit_loop.epoch_loop.val_loop.batch_progress
    done_before = progress.total.completed - progress.current.completed  # earlier validations of this epoch
    progress.reset_on_run()
    progress.current.ready = progress.current.started = 1
    progress.total.ready = progress.total.started = done_before + 1
    progress.total.processed = progress.total.completed = done_before


def use_multi_average_fn(callback: WeightAveraging, update: Callable[..., None]) -> None:
    """Makes the ``AveragedModel`` that ``callback`` builds average with ``update`` (torch's ``multi_avg_fn``)."""
    callback._kwargs.update(avg_fn=None, multi_avg_fn=update)


def averaged_network(callback: WeightAveraging) -> nn.Module | None:
    """The average's copy of the LightningModule, once fit has built it."""
    return callback._average_model.module if callback._average_model is not None else None


def tensorboard_file_writer(logger: TensorBoardLogger) -> Any:
    """The run's event-file writer, which takes raw events (a graph)."""
    return logger.experiment._get_file_writer()


@contextmanager
def jit_is_scripting() -> Iterator[None]:
    """Lets ``torch.jit.trace`` walk a LightningModule's attributes without a Trainer."""
    with _jit_is_scripting():
        yield


def allow_instantiator(path: str) -> None:
    """Lets ``load_from_checkpoint(..., _instantiator=path)`` build a model with the function at ``path``."""
    saving._ALLOWED_INSTANTIATORS.add(path)


def module_from_checkpoint(cls: type[L.LightningModule], checkpoint: dict[str, Any], **kwargs: Any) -> Any:
    """``cls.load_from_checkpoint`` of a checkpoint read already (``kwargs`` as there), on the CPU."""
    return saving._load_state(cls, checkpoint, **kwargs)


class TrainerWithoutDuplicateBar(LightningCLI):
    """LightningCLI that leaves its own progress-bar callback out when the config brings a bar or turns bars off."""

    def _instantiate_trainer(self, config: dict, callbacks: list[Callback]) -> L.Trainer:
        own_bar = any(isinstance(callback, ProgressBar) for callback in config.get("callbacks") or [])
        if own_bar or config.get("enable_progress_bar") is False:
            # `callbacks` are the CLI's own (its argument groups), not the config's trainer.callbacks
            callbacks = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
        return super()._instantiate_trainer(config, callbacks)

    def saved_model_hyperparameters(self, ckpt_path: str) -> dict[str, Any]:
        """A checkpoint's saved model hyperparameters as the model's arguments, read from the file as LightningCLI
        reads them (subclasses that read it already give theirs)."""
        return torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})

    def _parse_ckpt_path(self) -> None:
        """LightningCLI's own (Lightning 2.6), the hyperparameters passed through ``saved_model_hyperparameters``."""
        command = self.config.get("subcommand")
        ckpt_path = self.config[command].get("ckpt_path") if command else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = dict(self.saved_model_hyperparameters(ckpt_path))
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({command: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise
