"""Settings that moved, by their dotted names before and now: the one table that the command line, config files, old
run folders and old checkpoints are read through.

An old flag still works, with a FutureWarning naming the new one (command lines written before the move); a config
file that sets an old key is a one-line error naming the new key (jsonargparse's own would only say that the key is
not accepted); an old run folder's config.yaml is read with its keys moved, so that it compares with today's config.
A leaf module, so that the commands, run folders (``runs``) and checkpoints (``training``) share it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from fmnist_lightning.errors import UserInputError

# the model's speed options until they became the SpeedSettings callback's (``--speed.*``, training/speed.py): how
# fast a run trained, not what the model is
SPEED = ("channels_last", "compile", "compile_mode", "float32_matmul_precision", "steps_per_execution")
# the flat data options before they were grouped (issue 38) → where they are in data/options.py's groups now
DATA = {
    "validation": "validation.protocol",
    **{key: f"validation.{key}" for key in ("val_size", "num_folds", "fold", "split_seed", "kfold_shuffle")},
    "augment": "augmentation.affine",
    **{key: f"augmentation.{key}" for key in ("crop_padding", "hflip", "erasing", "mixup_alpha", "cutmix_alpha")},
    "label_smoothing": "augmentation.label_smoothing",
    "download": "files.download",
    "cache_dir": "files.cache_dir",
    "predict_path": "predict.path",
    "invert": "predict.invert",
}
# old dotted key → new dotted key
OLD_KEYS = (
    {f"model.init_args.{key}": f"speed.{key}" for key in SPEED}
    # the data module's batches per loader item, which followed the model's steps_per_execution
    | {"data.batches_per_step": "speed.steps_per_execution"}
    | {f"data.{old}": f"data.{new}" for old, new in DATA.items()}
)
# why a key moved, by the first part of its new key: the end of a config file's error
WHY = {
    "speed": "the speed settings are apart from the model; docs/cli.md",
    "data": "the data options are grouped; docs/data.md",
}
# An old key that names a group now is the old setting only with a value it took then: ``data.validation`` was the
# protocol's name (these three, then), and is the group of validation settings now
VALUES_BEFORE = {"data.validation": ("split", "test", "kfold")}
_ABSENT = object()


def renamed_flags(args: list[str]) -> list[str]:
    """The command line with old flags (``--model.init_args.compile``, ``--data.fold``, …) as the new ones, each with
    a FutureWarning naming it."""
    renamed = []
    for index, arg in enumerate(args):
        flag, equals, value = arg.partition("=")
        key = flag.removeprefix("--")
        given = value if equals else (args[index + 1] if index + 1 < len(args) else "")
        if flag.startswith("--") and key in OLD_KEYS and _is_old(key, given):
            new = f"--{OLD_KEYS[key]}"
            warnings.warn(f"{flag} is now {new}", FutureWarning, stacklevel=2)
            arg = new + equals + value
        renamed.append(arg)
    return renamed


def refuse_old_keys(config: Any, where: str) -> None:
    """A one-line error naming the new key of each old key that a config file (``where``, parsed: ``config``) sets."""
    old = old_keys_in(config)
    if old:
        moved = ", ".join(f"{key} is now {OLD_KEYS[key]}" for key in old)
        why = "; ".join(dict.fromkeys(WHY[OLD_KEYS[key].partition(".")[0]] for key in old))
        raise UserInputError(f"{where}: {moved} ({why})")


def upgraded(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config (an old run folder's config.yaml) with its old keys moved to the new ones, as nested dicts; where a
    config sets both, the new key keeps its value."""
    upgraded = _copy(config)
    moved = {}
    for key in old_keys_in(upgraded):
        parent, _, name = key.rpartition(".")
        moved[OLD_KEYS[key]] = _value(upgraded, parent).pop(name)
    for key, value in moved.items():
        *groups, name = key.split(".")
        holder = upgraded
        for group in groups:
            if not isinstance(holder.get(group), dict):
                holder[group] = {}
            holder = holder[group]
        holder.setdefault(name, value)
    return upgraded


def old_keys_in(config: Any) -> list[str]:
    """The old keys that a config sets, sorted."""
    return sorted(key for key in OLD_KEYS if _is_old(key, _value(config, key)))


def _is_old(key: str, value: Any) -> bool:
    return value is not _ABSENT and (key not in VALUES_BEFORE or value in VALUES_BEFORE[key])


def _value(config: Any, key: str) -> Any:
    """The value at a dotted key of nested mappings, or ``_ABSENT``."""
    for part in key.split("."):
        if not isinstance(config, Mapping) or part not in config:
            return _ABSENT
        config = config[part]
    return config


def _copy(config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _copy(value) if isinstance(value, Mapping) else value for key, value in config.items()}
