"""The lines that end ``fit``, ``validate``, ``test`` and ``predict``: what happened, where it is, what to run next.

The figures are the run's record (``RunMetrics``: what ``metrics.json`` holds); the CLI prints these lines on rank 0
after the command (``fmnist_lightning.commands.cli``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROGRAM = "python -m fmnist_lightning"
# a recipe's comments say which checkpoint to test: "... evaluated once, after fit: `test --ckpt_path last`"
RECIPE_CHECKPOINT = re.compile(r"\btest\b[^`\n]*?--ckpt_path (best|last)\b")


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def duration(seconds: float) -> str:
    """``42.3 s``, ``12 min 05 s`` or ``2 h 03 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def command_line(*words: str | Path) -> str:
    return " ".join(shlex.quote(str(word)) for word in words)


def recipe_checkpoint(config_texts: Sequence[str], validation: str | None) -> str:
    """``best`` or ``last``: the checkpoint a recipe tests, as its comments say (the last config that says so), else
    ``last`` where validation is the test set or a fold (choosing the best epoch would select on it), else ``best``."""
    said = [match for text in config_texts for match in RECIPE_CHECKPOINT.findall(comments(text))]
    if said:
        return said[-1]
    return "best" if validation == "split" else "last"


def comments(yaml_text: str) -> str:
    return "\n".join(line.split("#", 1)[1] for line in yaml_text.splitlines() if "#" in line)


def fit_lines(
    metrics: dict[str, Any],
    run_dir: Path | None,
    checkpoints: dict[str, Path],
    chosen: str,
    configs: Sequence[str],
    data_dir: str,
    save_dir: str | None,
) -> list[str]:
    """The summary of a fit: its status, epochs and time, final and best validation accuracy, the run folder, and
    the commands to run next (``test`` on the recipe's checkpoint, TensorBoard on the logs)."""
    epochs = metrics.get("epochs", 0)
    status = metrics.get("status", "finished")
    lines = [f"fit {status}: {epochs} epoch{'s' if epochs != 1 else ''} in {duration(metrics.get('fit_time_s', 0.0))}"]
    if "final_val_acc" in metrics:
        final, best = percent(metrics["final_val_acc"]), percent(metrics["best_val_acc"])
        lines.append(f"  validation accuracy: {final} after the last epoch, best {best}")
    else:
        lines.append("  validation accuracy: none (no validation ran)")
    if run_dir is not None:
        lines.append(f"  run folder: {run_dir}")
    checkpoint = checkpoints.get(chosen) or next(iter(checkpoints.values()), None)
    config_args = [word for config in configs for word in ("--config", config)]
    commands = []
    if checkpoint is not None:
        test = ("test", *config_args, "--ckpt_path", checkpoint, "--data.data_dir", data_dir)
        commands.append(f"{PROGRAM} {command_line(*test)}")
    else:
        lines.append("  no checkpoint was saved (checkpointing is off)")
    if save_dir is not None:
        commands.append(command_line("tensorboard", "--logdir", save_dir))
    if commands:
        lines += ["next:", *(f"  {command}" for command in commands)]
    return lines


def evaluation_lines(
    stage: str,
    figures: dict[str, float],
    checkpoint: str | None,
    record: Path | None,
    run_dir: Path | None,
) -> list[str]:
    """The summary of ``validate`` or ``test``: its accuracy and loss, and where they were recorded."""
    name = "validation" if stage == "validate" else "test"
    prefix = "val" if stage == "validate" else "test"
    if f"{prefix}_acc" not in figures:
        return [f"{stage}: no accuracy (no batches were evaluated)"]
    of = f" of {checkpoint}" if checkpoint else " of the untrained model"
    loss = f" (loss {figures[f'{prefix}_loss']:.4f})" if f"{prefix}_loss" in figures else ""
    lines = [f"{name} accuracy: {percent(figures[f'{prefix}_acc'])}{loss}{of}"]
    if record is not None:
        lines.append(f"  recorded in {record} ({prefix}_acc, {prefix}_loss) and the TensorBoard events beside it")
    elif run_dir is not None:
        lines.append(f"  logged to the TensorBoard events in {run_dir}")
    else:
        lines.append(
            "  not recorded: the checkpoint lies outside a run folder (to record it in a new one, add "
            "--trainer.logger.init_args.save_dir tensorboard_logs)"
        )
    return lines


def prediction_lines(images: int | None, checkpoint: str | None) -> list[str]:
    """``predict`` on the test set (the user's images print their own summary and predictions.csv)."""
    count = f"{images:,} " if images is not None else ""
    of = f" with {checkpoint}" if checkpoint else ""
    return [
        f"predicted the class probabilities of the {count}test images{of}; nothing was written",
        "  to classify your own images into predictions.csv: --data.predict.path FILE_OR_FOLDER",
    ]
