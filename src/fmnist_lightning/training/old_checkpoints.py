"""Checkpoints written by earlier versions of the project, read as the model takes its arguments now.

A run's own ``last.ckpt``, a published ``weights/*.ckpt`` or a user's file from before a change keeps working:
``load``, ``--ckpt_path`` and resuming read the saved hyperparameters through here.
"""

from __future__ import annotations

from typing import Any

# the model's speed options until they became the SpeedSettings callback's (``--speed.*``, training/speed.py): how
# fast a run trained, not what the model is
MOVED_TO_SPEED_SETTINGS = frozenset({"channels_last", "compile", "compile_mode", "float32_matmul_precision"})


def current_hyperparameters(hparams: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's saved model hyperparameters without those the model no longer takes."""
    return {key: value for key, value in hparams.items() if key not in MOVED_TO_SPEED_SETTINGS}


def saved_standardize(checkpoint: dict[str, Any]) -> bool:
    """Whether a checkpoint's model standardises its inputs: its own hyperparameter, or in checkpoints written before
    the model owned it, the data module's ``standardize``."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if "standardize" in hparams:
        return bool(hparams["standardize"])
    return bool((checkpoint.get("datamodule_hyper_parameters") or {}).get("standardize"))
