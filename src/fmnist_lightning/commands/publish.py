"""``publish``: a trained checkpoint as a small file in ``weights/`` with a model card beside it.

The published file keeps what ``test`` and ``predict`` need (weights, the model's and the data's hyperparameters)
and drops the optimizer, scheduler, loop and callback state that only resuming a fit needs, which is most of a
checkpoint's size. The card (``<name>.md``) starts with a YAML block that the tests read: the file's sha256, its test
accuracy (measured here, on the CPU in float32, on the official test set, from the published file itself), the seed,
the epochs, where and how long it trained (device, precision, wall time), the configs with their sha256 and the exact
commands that reproduce it, and, given other seeds' runs of the same recipe (``--seed_run``), their accuracies with
mean and spread.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import statistics
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from fmnist_lightning.data.datamodule import FashionMNISTDataModule
from fmnist_lightning.data.options import DataFiles
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.observe.record import METRICS_FILE, UnreadableRecordError, load_run_metrics
from fmnist_lightning.runs import checkpoints, folders
from fmnist_lightning.runs.loading import load
from fmnist_lightning.safe_files import write_atomically
from fmnist_lightning.training.module import FashionMNISTClassifier, count_params
from fmnist_lightning.weights import WEIGHTS_DIR

KEPT = (
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "state_dict",
    "hparams_name",
    "hyper_parameters",
    "datamodule_hparams_name",
    "datamodule_hyper_parameters",
)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def measure_test_accuracy(path: Path, data_dir: Path) -> float:
    """Accuracy of a checkpoint on the official 10k test set, with the preprocessing it was trained with."""
    return accuracy_on_test_set(load(path), data_dir)


def accuracy_on_test_set(model: FashionMNISTClassifier, data_dir: Path) -> float:
    """A loaded checkpoint's accuracy on the official 10k test set; the model standardises its inputs itself, as it
    was trained to (``model.standardize``)."""
    data = FashionMNISTDataModule(str(data_dir), files=DataFiles(download=False))
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (results,) = trainer.test(model, datamodule=data, verbose=False)
    return results["test/acc"]


def slim_checkpoint(source: Path) -> dict[str, Any]:
    """The evaluation part of ``source``, read by the one safe loader (weights only, a registered model): publishing
    once ran a pickled payload here, and a published file is what others load next."""
    checkpoint = checkpoints.read_checkpoint(source, str(source))
    slim = {key: checkpoint[key] for key in KEPT if key in checkpoint}
    slim["hyper_parameters"] = {**slim["hyper_parameters"], "_instantiator": checkpoints.INSTANTIATOR}
    return slim


def card_text(card: dict[str, Any], title: str) -> str:
    accuracy = 100 * card["test_accuracy"]
    configs = card["config"] if isinstance(card["config"], list) else [card["config"]]
    return "\n".join(
        [
            "---",
            yaml.safe_dump(card, sort_keys=False, width=1000).rstrip(),
            "---",
            f"# {title}",
            "",
            f"- **Test accuracy**: {accuracy:.2f} % on the official 10,000-image test set (measured from this file, "
            "on the CPU in float32).",
            f"- **Model**: `{card['model']}`, {card['parameters']:,} parameters (Keras's count).",
            f"- **Training**: {' + '.join(f'`{config}`' for config in configs)}, seed {card['seed']}, "
            f"{card['epochs']} epochs, {card['fit_wall_time_s']:,.0f} s of fit (device: {card['trained_on']}"
            + (f", precision {card['precision']}" if "precision" in card else "")
            + ").",
            seeds_line(card),
            f"- **sha256**: `{card['sha256']}`",
            "",
            "Reproduce and evaluate:",
            "",
            "```bash",
            card["fit_command"],
            card["test_command"],
            f"python -m fmnist_lightning test --ckpt_path weights/{card['file']} --data.data_dir DATA_DIR",
            "```",
            "",
        ]
    )


def publish_command(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fmnist_lightning publish",
        description="Publish a run's checkpoint into weights/ with a model card (test accuracy measured here).",
    )
    parser.add_argument("checkpoint", type=Path, help="the checkpoint to publish, inside its run folder")
    parser.add_argument("--name", required=True, help="the published name, e.g. the config's: lenet")
    parser.add_argument(
        "--config",
        required=True,
        action="append",
        help="the config the run was trained with, for the card; repeat it for overlays, in the fit's order",
    )
    parser.add_argument(
        "--seed_run",
        type=Path,
        action="append",
        default=[],
        help="a checkpoint of another seed of the same recipe (repeatable): its test accuracy goes on the card with "
        "the seeds' mean and spread",
    )
    parser.add_argument("--data_dir", type=Path, required=True, help="the four Fashion-MNIST files")
    parser.add_argument("--title", help="the card's heading (default: the model's class name)")
    parser.add_argument("--out_dir", type=Path, default=WEIGHTS_DIR)
    options = parser.parse_args(args)
    card = publish(options)  # a UserInputError ends the command in main: `error: ...`, exit 2
    print(f"wrote {options.out_dir / card['file']} ({100 * card['test_accuracy']:.2f} % test) and its card")
    return 0


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The fit's config.yaml beside its checkpoints, which the card is made from."""
    path = run_dir / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        data = None
    if not isinstance(data, dict):
        raise _missing(path)
    return data


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's metrics.json (``observe.record``, its one reader), which the card is made from."""
    try:
        return load_run_metrics(run_dir)
    except (FileNotFoundError, UnreadableRecordError):
        raise _missing(run_dir / METRICS_FILE) from None


def _missing(path: Path) -> UserInputError:
    return UserInputError(
        f"{path} is missing or unreadable; publish needs the metrics.json and config.yaml that fit writes "
        "into the run folder (a run stopped before fit started has none)"
    )


def publish(options: argparse.Namespace) -> dict[str, Any]:
    target, card_path = options.out_dir / f"{options.name}.ckpt", options.out_dir / f"{options.name}.md"
    for path in (target, card_path):
        if path.exists():
            raise UserInputError(f"{path} already exists; remove it first to publish a new {options.name}")
    run_dir = run_folder(options.checkpoint, "publish")
    metrics, config = read_metrics(run_dir), read_run_config(run_dir)
    slim = slim_checkpoint(options.checkpoint)  # refused before anything is written
    options.out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(target, lambda file: torch.save(slim, file))
    try:
        card = make_card(options, target, slim, metrics, config)
    except BaseException:
        target.unlink()  # published whole, with its card, or not at all
        raise
    card_path.write_text(card_text(card, options.title or card["model"]))
    return card


def run_folder(checkpoint: Path, option: str) -> Path:
    """The run folder a checkpoint was written into, whose config.yaml and metrics.json describe it."""
    run = folders.run_folder(checkpoint)
    if run is None:
        raise UserInputError(f"{option} {checkpoint} is not inside a run folder (<save_dir>/<Model>/version_N/)")
    return run


def make_card(
    options: argparse.Namespace, target: Path, slim: dict[str, Any], metrics: dict[str, Any], config: dict[str, Any]
) -> dict[str, Any]:
    model = load(target)
    checkpoint_name = options.checkpoint.stem
    configs = [options.config] if isinstance(options.config, str) else list(options.config)
    config_args = " ".join(f"--config {path}" for path in configs)
    overrides = reproducing_overrides(configs, config)
    fit = f"python -m fmnist_lightning fit {config_args} --seed_everything {config['seed_everything']}"
    accuracy = round(accuracy_on_test_set(model, options.data_dir), 6)
    card = {
        "file": target.name,
        "model": type(model).__name__,
        "parameters": count_params(model),
        "config": configs[0] if len(configs) == 1 else configs,
        "config_sha256": {path: sha256(Path(path)) for path in configs},
        "checkpoint": checkpoint_name,
        "test_accuracy": accuracy,
        "seed": config["seed_everything"],
        "epochs": metrics["epochs"],
        "global_step": slim["global_step"],
        "fit_wall_time_s": round(metrics["fit_time_s"], 1),
        "trained_on": metrics.get("device_name", metrics.get("device", "unknown")),
        "precision": metrics.get("precision", (config.get("trainer") or {}).get("precision", "32-true")),
        "fit_command": " ".join([fit, *overrides, "--data.data_dir DATA_DIR"]),
        "test_command": f"python -m fmnist_lightning test {config_args} --data.data_dir DATA_DIR "
        f"--ckpt_path {checkpoint_name}",
        "sha256": sha256(target),
    }
    if options.seed_run:
        card.update(seed_accuracies(options, config, accuracy))
    return card


def reproducing_overrides(configs: list[str], run_config: dict[str, Any]) -> list[str]:
    """The command-line settings, beyond the configs, that the run trained with (``--trainer.max_epochs 47`` from a
    run sized to a time budget): its recipe and run length where they differ from what the configs parse to."""
    from fmnist_lightning.commands.cli import FashionMNISTCLI  # parses the configs as fit does (imports the CLI)

    parsed = FashionMNISTCLI([arg for path in configs for arg in ("--config", path)], run=False).config
    ran, given = _settings(run_config), _settings(parsed)
    return [f"--{key} {_cli_value(ran[key])}" for key in sorted(ran.keys() & given.keys()) if ran[key] != given[key]]


def _settings(config: Any) -> dict[str, Any]:
    trainer = config.get("trainer") or {}
    return {**folders.recipe(config), **{f"trainer.{key}": trainer.get(key) for key in folders.RUN_LENGTH}}


def _cli_value(value: Any) -> str:
    if isinstance(value, (bool, type(None))):
        return {True: "true", False: "false", None: "null"}[value]
    return shlex.quote(str(value) if isinstance(value, (str, int, float)) else yaml.safe_dump(value).strip())


def seed_accuracies(options: argparse.Namespace, config: dict[str, Any], accuracy: float) -> dict[str, Any]:
    """Other seeds of the published run's recipe (``--seed_run``), each measured as the published file is: their
    test accuracies, with the mean and the sample standard deviation over all of them."""
    seeds, published = {config["seed_everything"]: accuracy}, _settings(config)
    for checkpoint in options.seed_run:
        seed_config = read_run_config(run_folder(checkpoint, "--seed_run"))
        differences = sorted(key for key, value in _settings(seed_config).items() if published.get(key) != value)
        if differences:
            raise UserInputError(
                f"--seed_run {checkpoint} was trained with a different recipe from the published run (it differs in "
                f"{', '.join(differences[:3])}); pass runs of the same configs and run length"
            )
        seed = seed_config["seed_everything"]
        if seed in seeds:
            raise UserInputError(f"--seed_run {checkpoint}: seed {seed} is already on the card; pass other seeds")
        seeds[seed] = round(accuracy_on_test_set(load(checkpoint), options.data_dir), 6)
    values = list(seeds.values())
    return {
        "seed_test_accuracy": seeds,
        "seed_mean": round(statistics.mean(values), 6),
        "seed_std": round(statistics.stdev(values), 6) if len(values) > 1 else 0.0,
    }


def seeds_line(card: dict[str, Any]) -> str:
    """The card's line on seeds: the spread over the seeds measured, or that only one was."""
    seeds = card.get("seed_test_accuracy")
    if not seeds:
        return "- **Seeds**: one (this file's); the spread over seeds of this recipe was not measured."
    each = ", ".join(f"{100 * value:.2f} % (seed {seed})" for seed, value in seeds.items())
    return (
        f"- **Seeds**: {len(seeds)} of the same recipe, each tested once: mean {100 * card['seed_mean']:.2f} %, "
        f"standard deviation {100 * card['seed_std']:.2f} points (sample); {each}."
    )
