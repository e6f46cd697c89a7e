"""The run-folder scheme: ``<save_dir>/<ModelName>/version_<N>/`` holds a run's config, events and checkpoints.

    tensorboard_logs/LeNet5/version_0/
        config.yaml              the fit's full config (later commands add config.<command>[.<k>].yaml)
        events.out.tfevents.*    TensorBoard scalars of fit, and of test/validate runs on its checkpoints
        hparams.yaml
        checkpoints/best.ckpt    best value of the monitored metric (``checkpoint.monitor``)
        checkpoints/last.ckpt    end of the latest epoch, for resuming

Lightning's ``ckpt_path="best"`` only works in the process that trained, so ``--ckpt_path`` also takes ``best``
or ``last`` (the newest run of the config's model that has that file), a run folder (its ``best.ckpt``; for
``fit``, its ``last.ckpt``) or a file. A checkpoint inside a run folder sends the command's logs there too, so
``fit --ckpt_path last`` resumes the same run instead of starting a new version.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from fmnist_lightning import models
from fmnist_lightning.errors import UserInputError

KEYWORDS = ("best", "last")
INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"  # lets load_from_checkpoint build the recorded class
VERSION = re.compile(r"version_(\d+)")


def run_versions(model_dir: Path) -> list[Path]:
    """Run folders of one model, oldest first."""
    runs = [p for p in model_dir.glob("version_*") if p.is_dir() and VERSION.fullmatch(p.name)]
    return sorted(runs, key=lambda p: int(p.name.split("_")[1]))


def resolve_checkpoint(ckpt_path: str, model_dir: Path, command: str) -> Path:
    """The checkpoint file that ``--ckpt_path`` names, for ``command`` (fit resumes from ``last``)."""
    if ckpt_path in KEYWORDS:
        for run in reversed(run_versions(model_dir)):
            candidate = run / "checkpoints" / f"{ckpt_path}.ckpt"
            if candidate.is_file():
                return candidate
        raise UserInputError(
            f"--ckpt_path {ckpt_path}: no run under {model_dir}/ has checkpoints/{ckpt_path}.ckpt; "
            "train one with `fit` first, or pass a checkpoint file or run folder"
        )
    path = Path(ckpt_path)
    if path.is_dir():
        name = "last" if command == "fit" else "best"
        candidate = path / "checkpoints" / f"{name}.ckpt"
        if not candidate.is_file():
            raise UserInputError(f"--ckpt_path {ckpt_path}: run folder has no checkpoints/{name}.ckpt")
        return candidate
    if not path.is_file():
        raise UserInputError(f"--ckpt_path {ckpt_path}: no such file; pass a .ckpt file, a run folder, best or last")
    return path


def read_checkpoint(checkpoint: Path, command: str, config_class_path: str) -> dict[str, Any]:
    """The checkpoint's contents (memory-mapped, so a large file costs little), after the checks that turn
    Lightning's tracebacks for a damaged or unsuitable file into one line."""
    where = f"--ckpt_path {checkpoint}"
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise UserInputError(
            f"{where}: not a readable checkpoint, truncated or not a torch file ({type(error).__name__}); copy it "
            "again, or pass the run's other checkpoint (best or last)"
        ) from None
    if not isinstance(saved, dict) or not {"state_dict", "pytorch-lightning_version"} <= saved.keys():
        raise UserInputError(
            f"{where}: not a Lightning checkpoint; a Keras model of the study converts with convert-keras"
        )
    class_path = (saved.get("hyper_parameters") or {}).get("_class_path", "")
    module, _, name = class_path.rpartition(".")
    model_class = getattr(models, name, None) if module == models.__name__ else None
    if not (isinstance(model_class, type) and issubclass(model_class, models.FashionMNISTClassifier)):
        raise UserInputError(
            f"{where}: a checkpoint of {class_path or 'an unnamed model'}, not of this project's models; pass one "
            "written by fit, publish or convert-keras"
        )
    if command == "fit":
        if "optimizer_states" not in saved:
            raise UserInputError(f"{where}: holds weights only (published or converted); fit resumes a run's last.ckpt")
        if class_path != config_class_path:
            raise UserInputError(
                f"{where}: a {name} checkpoint, but the config trains {config_class_path.rpartition('.')[2]}; "
                "resume with the config the run was trained with (its config.yaml)"
            )
    return saved


def run_of_checkpoint(checkpoint: Path) -> tuple[Path, str, int] | None:
    """``(save_dir, name, version)`` when the checkpoint lies in ``<save_dir>/<name>/version_<N>/checkpoints/``."""
    folder = Path(os.path.normpath(checkpoint)).parent  # kept relative: ModelCheckpoint compares dirpaths as text
    match = VERSION.fullmatch(folder.parent.name)
    if folder.name != "checkpoints" or match is None:
        return None
    return folder.parent.parent.parent, folder.parent.parent.name, int(match.group(1))


def free_config_name(log_dir: Path, command: str) -> str:
    """``config.yaml`` for a run's first command; later ones never overwrite it."""
    candidates = ["config.yaml", f"config.{command}.yaml"] + [f"config.{command}.{k}.yaml" for k in range(2, 10_000)]
    return next(name for name in candidates if not (log_dir / name).exists())
