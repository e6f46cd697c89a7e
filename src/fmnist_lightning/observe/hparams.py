"""The run's settings and single figures for TensorBoard's HPARAMS tab, where runs and sweep trials are compared.

Each run folder holds a sub-run, ``summary/``, with the run's comparable settings (a TensorBoard session, written
once when ``fit`` starts) and its single figures as scalars: the results under ``~hp/`` (best and final validation
accuracy, test accuracy, fit time, peak memory; a later ``test`` adds its accuracy from its own process), the other
figures under ``~run/`` (latency, throughput, memory, …; ``metrics.json`` has them all).

Why it is written this way (each checked against TensorBoard 2.21's hparams plugin):

- Booleans: torch's ``hparams`` summary tests ``isinstance(v, (int, float))`` before ``bool``, so a boolean became
  the number 0.0 or 1.0; TensorBoard's own ``summary_v2.hparams_pb`` keeps it a boolean (shown true/false).
- Which settings: the model's and data's hyperparameters as the CLI saved them also carry the CLI's bookkeeping
  (``_class_path``, ``_instantiator``) and file locations, and miss the optimizer (the model leaves it out of its
  hyperparameters), the trainer's epochs and precision and the seed. ``comparable_settings`` lists what changes a
  run's results, with class names for the model, optimizer and scheduler.
- No experiment declaration: the tab uses the first one it finds in the whole log folder for every run, so one
  run's columns would hide another model's settings. Without one it collects the settings of every run, and lists
  first those whose values differ between the runs shown (it shows five at first): a sweep's varied settings.
- The sub-run: the tab's metrics for a session are all the scalars of its run and of the runs below it. A session
  in the run folder itself would offer every curve as a column, and show the first five by name; in ``summary/`` the
  metrics are the run's figures, and the five results (``~hp/`` sorts before ``~run/``) are the ones shown.
- The ``~``: TensorBoard's Scalars and Time Series tabs order tag groups by name, and ``~`` sorts after ``train/``
  and ``val/``, so these one-point charts come after the learning curves (``observe/logger.py`` has the rest).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from torch.utils.tensorboard.summary import scalar
from torch.utils.tensorboard.writer import FileWriter

from fmnist_lightning.observe.evaluation import tensorboard_logger
from fmnist_lightning.training.speed import speed_settings_of

SUMMARY_RUN = "summary"  # the sub-run of a run folder that the HPARAMS tab reads
RESULTS = ("best_val_acc", "final_val_acc", "test_acc", "fit_time_s", "peak_rss_mb")  # under ~hp/, the rest ~run/
# where files are, and switches of predict only
NOT_COMPARED = frozenset(
    {"data_dir", "files.cache_dir", "predict.path", "pretrained_path", "files.download", "predict.invert"}
)
SCHEDULER_SETTINGS = ("scheduler_monitor", "scheduler_interval")  # no effect without a scheduler
# torch's switches of how an optimizer computes its step, not what the step is
OPTIMIZER_IMPLEMENTATION = frozenset({"foreach", "fused", "differentiable", "capturable", "maximize"})

Setting = bool | int | float | str


def tensorboard_value(value: Any) -> Setting | None:
    """A setting as the HPARAMS tab can show it: booleans, numbers and strings as they are, a list or tuple of them
    as text; None (an option left unset) and anything else (an object) are not shown."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, (bool, int, float, str)) for item in value):
        return str(tuple(value))
    return None


def _readable(settings: Mapping[str, Any], left_out: frozenset[str] | set[str]) -> dict[str, Setting]:
    shown = {key: tensorboard_value(value) for key, value in settings.items()}
    return {k: v for k, v in shown.items() if v is not None and not k.startswith("_") and k not in left_out}


def _grouped_flat(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The data module's option groups as ``validation.fold``-style names, as the config writes them."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{option}": item for option, item in value.items()})
        else:
            flat[key] = value
    return flat


def comparable_settings(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Setting]:
    """What changes a run's results, by the names the config uses: the model class and its hyperparameters, the
    data module's (its groups' options as ``augmentation.hflip``), and during fit the optimizer class with its
    arguments (``lr``, ``momentum``, …), the scheduler class (with a warm-up, torch's ``LinearLR`` or
    ``SequentialLR`` that holds it), the trainer's length and precision and the seed. Left out: the CLI's
    bookkeeping (``_class_path``, ``_instantiator``), file locations, predict's options, a setting that mirrors
    another, and options left unset (None)."""
    fitting = trainer.state.fn == "fit"
    schedulers = trainer.lr_scheduler_configs if fitting else []
    left_out = set(NOT_COMPARED) | (set() if schedulers else set(SCHEDULER_SETTINGS))
    datamodule = trainer.datamodule
    settings: dict[str, Setting] = {
        "model": type(pl_module).__name__,
        **_readable(pl_module.hparams, left_out),
        **_readable(_grouped_flat(datamodule.hparams) if datamodule is not None else {}, left_out),
    }
    speed = speed_settings_of(trainer)
    if speed is not None:  # what the run's speed figures were measured with
        settings.update(_readable(speed.settings(), left_out))
    if not fitting:  # an evaluation of a checkpoint: the trainer's and optimizer's settings are not its training's
        return settings
    if trainer.optimizers:
        optimizer = trainer.optimizers[0]
        settings["optimizer"] = type(optimizer).__name__
        settings.update(_readable(optimizer.defaults, OPTIMIZER_IMPLEMENTATION))
    if schedulers:
        settings["lr_scheduler"] = type(schedulers[0].scheduler).__name__
    limit = trainer.limit_train_batches
    trainer_settings = {
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps if trainer.max_steps != -1 else None,
        "limit_train_batches": None if limit == 1.0 and isinstance(limit, float) else limit,  # 1.0: all, 1: one
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "precision": str(trainer.precision),
        # Lightning's seed_everything (the CLI's seed_everything) records the seed it set here
        "seed": int(os.environ["PL_GLOBAL_SEED"]) if "PL_GLOBAL_SEED" in os.environ else None,
    }
    settings.update(_readable(trainer_settings, set()))
    return settings


def _summary_folder(trainer: L.Trainer) -> tuple[Path, str] | None:
    """The run's ``summary/`` sub-run and the run's name under the log folder (``LeNet5/version_0``), on rank 0 with a
    TensorBoard logger; None elsewhere."""
    logger = tensorboard_logger(trainer)
    if logger is None:
        return None
    run = Path(logger.log_dir)
    return run / SUMMARY_RUN, os.path.relpath(run, logger.save_dir).replace(os.sep, "/")


def log_settings(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """Writes the run's settings as its HPARAMS session, once per run folder: a resumed fit or a later ``test`` finds
    them written (TensorBoard would read the first anyway)."""
    found = _summary_folder(trainer)
    if found is None or any(found[0].glob("events.out.tfevents.*")):
        return
    folder, run_name = found
    writer = FileWriter(str(folder))
    # trial_id: the session group's name, which the tab shows as the trial; the run's own, so that two runs with
    # the same settings stay two rows
    writer.add_summary(hparams_pb(comparable_settings(trainer, pl_module), trial_id=run_name))
    writer.close()


def log_figures(trainer: L.Trainer, figures: Mapping[str, Any]) -> None:
    """The run's single figures as scalars in its ``summary/`` sub-run: ``~hp/<result>`` for ``RESULTS``, which the
    HPARAMS tab shows, ``~run/<figure>`` for the other numbers; at the trainer's global step."""
    found = _summary_folder(trainer)
    numbers = {k: float(v) for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if found is None or not numbers:
        return
    writer = FileWriter(str(found[0]))
    for key, value in numbers.items():
        writer.add_summary(scalar(f"~hp/{key}" if key in RESULTS else f"~run/{key}", value), trainer.global_step)
    writer.close()
