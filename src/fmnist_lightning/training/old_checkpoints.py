"""Checkpoints written by earlier versions of the project, read as the model takes its arguments now.

A run's own ``last.ckpt``, a published ``weights/*.ckpt`` or a user's file from before a change keeps working:
``load``, ``--ckpt_path`` and resuming read the saved hyperparameters through here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Any

import torch

# the model's speed options until they became the SpeedSettings callback's (``--speed.*``, training/speed.py): how
# fast a run trained, not what the model is
MOVED_TO_SPEED_SETTINGS = frozenset(
    {"channels_last", "compile", "compile_mode", "float32_matmul_precision", "steps_per_execution"}
)
# the data module's options that followed a moved one (its batches per loader item, steps_per_execution's)
REMOVED_DATA_OPTIONS = {"batches_per_step": "speed.steps_per_execution"}


def current_hyperparameters(hparams: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's saved model hyperparameters without those the model no longer takes."""
    return {key: value for key, value in hparams.items() if key not in MOVED_TO_SPEED_SETTINGS}


def current_checkpoint(path: str | Path | IO[bytes], weights_only: bool | None = None) -> str | Path | IO[bytes]:
    """The checkpoint as ``load_from_checkpoint`` reads it: the file itself, or for a file of an earlier version an
    in-memory copy with its hyperparameters as the model takes them now (Lightning builds the model from the file's
    hyperparameters as they are, and has no hook to translate them)."""
    if not isinstance(path, (str, Path)):
        return path
    saved = torch.load(path, map_location="cpu", weights_only=True if weights_only is None else weights_only)
    hparams = saved.get("hyper_parameters") if isinstance(saved, dict) else None
    if not isinstance(hparams, dict) or not MOVED_TO_SPEED_SETTINGS & hparams.keys():
        return path
    saved["hyper_parameters"] = current_hyperparameters(hparams)
    copy = io.BytesIO()
    torch.save(saved, copy)
    copy.seek(0)
    return copy


def saved_standardize(checkpoint: dict[str, Any]) -> bool:
    """Whether a checkpoint's model standardises its inputs: its own hyperparameter, or in checkpoints written before
    the model owned it, the data module's ``standardize``."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if "standardize" in hparams:
        return bool(hparams["standardize"])
    return bool((checkpoint.get("datamodule_hyper_parameters") or {}).get("standardize"))
