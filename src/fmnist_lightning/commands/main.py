"""``python -m fmnist_lightning COMMAND``: one dispatcher, one way errors end a command.

Nothing heavy is imported here: ``--help`` and ``models`` answer without torch, and each command imports what it
needs when it runs. A ``UserInputError`` from any command ends it with its one-line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from fmnist_lightning.errors import UserInputError

# Lightning's commands, run through LightningCLI (fmnist_lightning.commands.cli)
LIGHTNING_COMMANDS = {
    "fit": "train a model (--config configs/<model>.yaml); --ckpt_path last resumes its newest run",
    "validate": "evaluate a checkpoint on the validation set",
    "test": "evaluate a checkpoint on the official 10k test set (--ckpt_path best|last|FILE|RUN_DIR)",
    "predict": "class probabilities on the test images, or your own with --data.predict.path FILE_OR_DIR",
}
# the project's commands: name → (what it does, "module:function" taking the arguments and returning the status)
PROJECT_COMMANDS = {
    "models": ("list the models, their parameter counts and published weights", "models_list:models_command"),
    "convert-keras": ("convert a trained Keras model of the study into a checkpoint", "convert_keras:convert_command"),
    "compare": ("compare runs side by side: reports/comparison.md, .csv, .png", "compare:compare_command"),
    "cv": ("k-fold cross-validation of a recipe on the study's folds: mean ± std, box plot", "cv:cv_command"),
    "sweep": ("grid or search over config keys with Optuna, workers sharing one storage", "sweep:sweep_command"),
    "publish": ("publish a run's checkpoint into weights/ with a model card", "publish:publish_command"),
    "export": (
        "export a checkpoint as ONNX or TorchScript (probabilities from [0, 1] pixels)",
        "export:export_command",
    ),
}


class CommandParser(argparse.ArgumentParser):
    """A project command's own options (``cv``, ``sweep``), whose errors end the command as every bad input does:
    ``error: <command>: ...`` and exit status 2, not argparse's usage text."""

    def __init__(self, command: str, **kwargs: Any) -> None:
        super().__init__(prog=f"python -m fmnist_lightning {command}", allow_abbrev=False, **kwargs)
        self.command = command

    def error(self, message: str) -> NoReturn:
        raise UserInputError(f"{self.command}: {message}")


def usage() -> str:
    lines = [
        "usage: python -m fmnist_lightning COMMAND [options]   (or: fmnist COMMAND ...)",
        "",
        "Lightning commands:",
    ]
    lines += [f"  {name:<13} {text}" for name, text in LIGHTNING_COMMANDS.items()]
    lines += ["", "Project commands:"]
    lines += [f"  {name:<13} {text}" for name, (text, _) in PROJECT_COMMANDS.items()]
    lines += [
        "",
        "`COMMAND --help` lists a command's options; `fit --config configs/lenet.yaml --print_config` shows a config.",
    ]
    return "\n".join(lines)


def project_command(name: str) -> Callable[[list[str]], int]:
    module, _, function = PROJECT_COMMANDS[name][1].partition(":")
    return getattr(importlib.import_module(f"fmnist_lightning.commands.{module}"), function)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m fmnist_lightning`` and ``fmnist``; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    try:
        if args[0] in PROJECT_COMMANDS:
            return project_command(args[0])(args[1:])
        from fmnist_lightning.commands.cli import lightning_command

        return lightning_command(argv)  # None: LightningCLI reads sys.argv itself
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
