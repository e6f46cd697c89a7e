"""Checkpoints written by earlier versions of the project, read as the model takes its arguments now.

A run's own ``last.ckpt``, a published ``weights/*.ckpt`` or a user's file from before a change keeps working:
``load_from_checkpoint`` (and so ``fmnist_lightning.load``) builds the model through ``instantiate_current``, and
``--ckpt_path`` and resuming read the saved hyperparameters through ``current_hyperparameters``.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.cli import instantiate_module

from fmnist_lightning.lightning_private import allow_instantiator
from fmnist_lightning.old_keys import OLD_KEYS

# what load_from_checkpoint builds the model with, in place of the one the checkpoint names
INSTANTIATOR = f"{__name__}.instantiate_current"


def current_hyperparameters(hparams: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's saved model hyperparameters without those the model no longer takes (``old_keys.py``: the
    model's speed options, now ``--speed.*``)."""
    return {key: value for key, value in hparams.items() if f"model.init_args.{key}" not in OLD_KEYS}


def instantiate_current(cls: type, hparams: dict[str, Any]) -> Any:
    """The model of a checkpoint's hyperparameters as the model takes them now, built as Lightning builds it: by
    LightningCLI's ``instantiate_module`` for a checkpoint that names its class (LightningCLI's), else by the class.

    Lightning builds a model from the file's hyperparameters as they are, and the instantiator is the one step
    between its read of the file and the model that it lets a caller choose; so the file is read once, by Lightning.
    """
    hparams = current_hyperparameters(hparams)
    return instantiate_module(cls, hparams) if "_class_path" in hparams else cls(**hparams)


allow_instantiator(INSTANTIATOR)


def saved_standardize(checkpoint: dict[str, Any]) -> bool:
    """Whether a checkpoint's model standardises its inputs: its own hyperparameter, or in checkpoints written before
    the model owned it, the data module's ``standardize``."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if "standardize" in hparams:
        return bool(hparams["standardize"])
    return bool((checkpoint.get("datamodule_hyper_parameters") or {}).get("standardize"))
