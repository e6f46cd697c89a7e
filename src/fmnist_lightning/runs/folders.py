"""The run-folder scheme: ``<save_dir>/<ModelName>/version_<N>/`` holds a run's config, events and checkpoints.

    tensorboard_logs/LeNet5/version_0/
        config.yaml              the fit's full config (later commands add config.<command>[.<k>].yaml)
        events.out.tfevents.*    TensorBoard scalars of fit, and of test/validate runs on its checkpoints
        hparams.yaml
        checkpoints/best.ckpt    best value of the monitored metric (``checkpoint.monitor``)
        checkpoints/last.ckpt    end of the latest epoch, for resuming

Lightning's ``ckpt_path="best"`` only works in the process that trained, so ``--ckpt_path`` also takes ``best``
or ``last`` (the newest run of the config's recipe that has that file), a run folder (its ``best.ckpt``; for
``fit``, its ``last.ckpt``) or a file. Runs of one model share its folder whatever their recipe (``lenet.yaml``, and
``lenet.yaml`` with ``plus.yaml``), so the keywords pick only a run whose model and data settings are the config's.
A checkpoint inside a run folder sends the command's logs there too, so ``fit --ckpt_path last`` resumes the same
run instead of starting a new version.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

from fmnist_lightning.data import options as data_options
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.safe_files import first_free_name, numbered
from fmnist_lightning.training.old_checkpoints import MOVED_TO_SPEED_SETTINGS, REMOVED_DATA_OPTIONS

KEYWORDS = ("best", "last")
# the trainer settings from which Lightning estimates a run's optimizer steps (and so a OneCycleLR's length)
RUN_LENGTH = ("max_epochs", "max_steps", "limit_train_batches", "accumulate_grad_batches", "devices", "num_nodes")
VERSION = re.compile(r"version_(\d+)")
# Settings that say where the data is, how fast to run or how to evaluate, not what a run trains: `best` and `last`
# find a run whatever their values (a run folder's config.yaml from before the speed settings left the model and the
# data module has them there)
NOT_RECIPE = frozenset(
    {"data_dir", "files", "num_workers", "on_device", "eval_batch_size", "predict", "tta_flip"}
    | MOVED_TO_SPEED_SETTINGS
    | REMOVED_DATA_OPTIONS.keys()
)


def recipe(config: Mapping[str, Any] | Namespace) -> dict[str, Any]:
    """What a run trains, from a command's config or a run's config.yaml: its model and data settings, flattened
    to ``{"model.init_args.optimizer.init_args.lr": 0.01, ...}``."""
    flat: dict[str, Any] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, Namespace):
            value = value.as_dict()
        if isinstance(value, Mapping):
            for key, item in value.items():
                if key not in NOT_RECIPE:
                    add(f"{prefix}.{key}", item)
        else:
            flat[prefix] = list(value) if isinstance(value, tuple) else value

    add("model", config.get("model"))
    data = config.get("data")
    # a run folder from before the data options were grouped has them flat: compared in their groups
    add("data", data_options.regrouped(data.as_dict() if isinstance(data, Namespace) else data))
    return flat


def run_versions(model_dir: Path) -> list[Path]:
    """Run folders of one model, oldest first."""
    runs = [p for p in model_dir.glob("version_*") if p.is_dir() and VERSION.fullmatch(p.name)]
    return sorted(runs, key=lambda p: int(p.name.split("_")[1]))


def resolve_checkpoint(ckpt_path: str, model_dir: Path, command: str, config_recipe: dict[str, Any]) -> Path:
    """The checkpoint file that ``--ckpt_path`` names, for ``command`` (fit resumes from ``last``); a keyword
    names the newest run trained with ``config_recipe``."""
    if ckpt_path in KEYWORDS:
        other_recipe = None
        for run in reversed(run_versions(model_dir)):
            candidate = run / "checkpoints" / f"{ckpt_path}.ckpt"
            if not candidate.is_file():
                continue
            differences = _recipe_differences(run, config_recipe)
            if not differences:
                return candidate
            other_recipe = other_recipe or (run, differences)
        if other_recipe is not None:
            run, differences = other_recipe
            if command == "fit":
                anyway = f"Resume it with its own config, --config {run / 'config.yaml'}"
            else:
                anyway = f"Pass its run folder ({run}) to use it anyway"
            raise UserInputError(
                f"--ckpt_path {ckpt_path}: no run under {model_dir}/ was trained with this config; the newest, "
                f"{run.name}, differs in {', '.join(differences)}. {anyway}"
            )
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


def _recipe_differences(run: Path, config_recipe: dict[str, Any]) -> list[str]:
    """The recipe settings in which the run's fit config (its config.yaml) and the command's config differ."""
    run_config = _fit_config(run)
    if run_config is None:
        return ["config.yaml (missing or unreadable)"]
    return _differences(recipe(run_config), config_recipe)


def _fit_config(run: Path) -> dict[str, Any] | None:
    try:
        return yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None


def _differences(run_settings: dict[str, Any], config_settings: dict[str, Any]) -> list[str]:
    # a setting only one side has was added to (or removed from) the project between the two
    keys = sorted(run_settings.keys() & config_settings.keys())
    differences = [key for key in keys if run_settings[key] != config_settings[key]]
    return differences[:3] + ([f"{len(differences) - 3} more"] if len(differences) > 3 else [])


def check_resume(checkpoint: Path, run: Path, config: Namespace) -> None:
    """Refuses to resume a run with a config that trains something else. Lightning would apply it by halves: the
    model's arguments come back from the checkpoint (LightningCLI), the optimizer's and scheduler's state too, but
    the data and trainer settings from the command, so a changed ``max_epochs`` cuts a one-cycle schedule short."""
    run_config = _fit_config(run)
    if run_config is None:  # nothing to compare with: resumed as Lightning resumes
        return
    differences = _differences(recipe(run_config), recipe(config))
    if _length_from_trainer(run_config):
        run_trainer = run_config.get("trainer") or {}
        lengths = {f"trainer.{key}": run_trainer.get(key) for key in RUN_LENGTH}
        differences += _differences(lengths, {f"trainer.{key}": config.trainer.get(key) for key in RUN_LENGTH})
    if differences:
        raise UserInputError(
            f"--ckpt_path {checkpoint}: {run} was trained with another config (it differs in "
            f"{', '.join(differences)}); resume it with its own, --config {run / 'config.yaml'}, or start a new run"
        )


def _length_from_trainer(config: Mapping[str, Any]) -> bool:
    """Whether the run's scheduler is a OneCycleLR sized by the trainer (``estimated_stepping_batches``)."""
    scheduler = ((config.get("model") or {}).get("init_args") or {}).get("lr_scheduler") or {}
    args = scheduler.get("init_args") or {}
    sized = args.get("total_steps") or (args.get("epochs") and args.get("steps_per_epoch"))
    return str(scheduler.get("class_path", "")).endswith("OneCycleLR") and not sized


def run_of_checkpoint(checkpoint: Path) -> tuple[Path, str, int] | None:
    """``(save_dir, name, version)`` when the checkpoint lies in ``<save_dir>/<name>/version_<N>/checkpoints/``."""
    folder = Path(os.path.normpath(checkpoint)).parent  # kept relative: ModelCheckpoint compares dirpaths as text
    match = VERSION.fullmatch(folder.parent.name)
    if folder.name != "checkpoints" or match is None:
        return None
    return folder.parent.parent.parent, folder.parent.parent.name, int(match.group(1))


def run_folder(checkpoint: Path) -> Path | None:
    """``<save_dir>/<name>/version_<N>/`` when the checkpoint lies in its ``checkpoints/``, else None."""
    run = run_of_checkpoint(checkpoint)
    return run[0] / run[1] / f"version_{run[2]}" if run else None


def free_config_name(log_dir: Path, command: str) -> str:
    """``config.yaml`` for a run's first command; later ones never overwrite it: ``config.<command>.yaml``, then
    ``config.<command>.2.yaml``, …"""
    names = itertools.chain(["config.yaml"], numbered(f"config.{command}.yaml", f"config.{command}.{{}}.yaml"))
    return first_free_name(log_dir, names).name
