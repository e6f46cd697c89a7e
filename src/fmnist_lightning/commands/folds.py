"""One fold of k-fold cross-validation as an ordinary ``fit`` run, scored at the end of training: what ``cv`` runs
per fold and what ``sweep`` runs per fold of a k-fold objective (and, with the config's own validation, per trial).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser

from fmnist_lightning.commands.cli import FashionMNISTCLI, model_name, tensorboard_args
from fmnist_lightning.data.options import FOLD_FLAGS, kfold_args
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.old_keys import OLD_KEYS

# the options fit_fold sets for each fold (by their names now and before), and --ckpt_path, which would start a fold
# from trained weights
RESERVED = (*FOLD_FLAGS, *(f"--{old}" for old, new in OLD_KEYS.items() if f"--{new}" in FOLD_FLAGS), "--ckpt_path")


@dataclass
class FoldResult:
    """One fold's score: the accuracy (%) of the model at the end of training on the held-out fold."""

    fold: int  # --data.validation.fold, 0-based
    accuracy: float
    run: str
    scored_by: str  # the fit's validation after its last step, or an extra validation of the final model
    epochs: int
    val_images: int
    seconds: float


class _LastValidation(Callback):
    """Remembers the global step of the latest validation: the fit's ``val/acc`` scores the final model only when
    that validation ran after the last training step (not so with e.g. ``check_val_every_n_epoch`` > 1)."""

    def __init__(self) -> None:
        self.step: int | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.step = trainer.global_step


class FoldCLI(FashionMNISTCLI):
    """The project's CLI for one fold: runs named ``<Model>_cv`` and a record of when validation last ran."""

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        with warnings.catch_warnings():  # sys.argv holds the command's own line; the fold's arguments are in args
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        logger = tensorboard_args(config)
        if logger is not None and logger.name is None:
            logger.name = f"{model_name(config)}_cv"
        super().before_instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        self.last_validation = _LastValidation()
        trainer.callbacks.append(self.last_validation)
        return trainer


def fit_fold(passthrough: list[str], fold: int, folds: int) -> tuple[FoldResult, FoldCLI]:
    """Fit on all folds but ``fold``; score the final model (not a checkpoint) on ``fold``."""
    start = time.perf_counter()
    cli = FoldCLI(["fit", *passthrough, *kfold_args(folds, fold)])
    trainer = cli.trainer
    accuracy, scored_by = final_accuracy(cli)
    result = FoldResult(
        fold=fold,
        accuracy=100 * accuracy,
        run=str(trainer.log_dir),
        scored_by=scored_by,
        epochs=trainer.current_epoch,
        val_images=len(cli.datamodule.val_set),
        seconds=round(time.perf_counter() - start, 1),
    )
    return result, cli


def final_accuracy(cli: FoldCLI) -> tuple[float, str]:
    """The validation accuracy (a fraction) of the model at the end of a fold's fit, and how it was obtained: the
    fit's own validation when it ran after the last step, else one more validation (``sweep`` scores trials so)."""
    trainer = cli.trainer
    if cli.last_validation.step == trainer.global_step and "val/acc" in trainer.callback_metrics:
        return trainer.callback_metrics["val/acc"].item(), "validation after the last training step"
    metrics = trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    if not metrics or "val/acc" not in metrics[0]:
        raise UserInputError("no val/acc after validating the final model: is validation off (limit_val_batches)?")
    return metrics[0]["val/acc"], "extra validation of the final model after fit"
