"""The command line: Lightning's fit/validate/test/predict through LightningCLI, beside the project's commands."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fmnist_lightning import runs
from fmnist_lightning.callbacks import RunMetrics, SaveOnInterrupt
from fmnist_lightning.compare import compare_command
from fmnist_lightning.data import FashionMNISTDataModule
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.models import MODELS, STUDY_MODELS, FashionMNISTClassifier, count_params
from fmnist_lightning.predictions import PredictionCSV

TENSORBOARD = "lightning.pytorch.loggers.TensorBoardLogger"
PROFILERS = {name: f"lightning.pytorch.profilers.{name.title()}Profiler" for name in ("simple", "advanced")} | {
    "pytorch": "lightning.pytorch.profilers.PyTorchProfiler"
}
LIGHTNING_COMMANDS = {
    "fit": "train a model (--config configs/<model>.yaml); --ckpt_path last resumes its newest run",
    "validate": "evaluate a checkpoint on the validation set",
    "test": "evaluate a checkpoint on the official 10k test set (--ckpt_path best|last|FILE|RUN_DIR)",
    "predict": "class probabilities on the test images, or your own with --data.predict_path FILE_OR_DIR",
}


class SaveConfigBesideRun(SaveConfigCallback):
    """Saves each command's config into the run folder without overwriting the one already there.

    LightningCLI's callback refuses to start when ``config.yaml`` exists, which breaks resuming a run or testing
    its checkpoint into the same folder; here those write ``config.<command>.yaml`` instead.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir  # a broadcast from rank 0: every rank must ask, in the same order
        if not self.already_saved and log_dir is not None:
            command = getattr(stage, "value", stage)  # TrainerFn: fit, validate, test, predict
            name = runs.free_config_name(Path(log_dir), command) if trainer.is_global_zero else None
            self.config_filename = trainer.strategy.broadcast(name)
        super().setup(trainer, pl_module, stage)


class FashionMNISTCLI(LightningCLI):
    """LightningCLI with the project's defaults: LeNet-5, a TensorBoard logger named after the model, best and last
    checkpoints (configurable under ``checkpoint:``), and a ``--ckpt_path`` that understands run folders."""

    def __init__(self, args: list[str] | None, run: bool = True) -> None:
        super().__init__(
            FashionMNISTClassifier,
            FashionMNISTDataModule,
            subclass_mode_model=True,
            save_config_callback=SaveConfigBesideRun,
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # Lightning 2.6's save_last rewrites last.ckpt only when the monitored checkpoint improves, so after an
        # epoch without improvement last.ckpt would hold an older epoch; a second, unmonitored checkpoint named
        # "last" is rewritten at the end of every epoch
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(RunMetrics, "run_metrics")
        parser.add_lightning_class_args(SaveOnInterrupt, "save_on_interrupt")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        # Lightning's default bar is Rich's when rich is installed (keras brings it): it redraws on every step, which
        # cost 15 % of LeNet-5's training throughput here; tqdm redrawn every refresh_rate steps ~3 %
        parser.add_lightning_class_args(TQDMProgressBar, "progress_bar")
        parser.set_defaults(
            {
                "model": {"class_path": "fmnist_lightning.models.LeNet5"},
                "checkpoint.filename": "best",
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_last": False,
                "last_checkpoint.filename": "last",
                "last_checkpoint.monitor": None,
                "last_checkpoint.enable_version_counter": False,  # a resumed run rewrites its own last.ckpt
                "last_checkpoint.save_on_train_epoch_end": True,  # also in epochs without validation
                "lr_monitor.logging_interval": "epoch",
                "progress_bar.refresh_rate": 10,
                # name null: the CLI names the run after the model class
                "trainer.logger": {
                    "class_path": TENSORBOARD,
                    "init_args": {
                        "save_dir": "tensorboard_logs",
                        "name": None,
                        "log_graph": True,
                        "default_hp_metric": False,  # RunMetrics logs the real results with the hparams
                    },
                },
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str] | None) -> None:
        """Resolves ``--ckpt_path`` to a file before LightningCLI reads the model's hyperparameters from it."""
        super().parse_arguments(parser, args)
        command = self.config.get("subcommand")
        if command is None or self.config[command].get("ckpt_path") is None:
            return
        config = self.config[command]
        logger = _tensorboard_args(config)
        model_dir = Path(logger.save_dir if logger else "tensorboard_logs") / _model_name(config)
        checkpoint = runs.resolve_checkpoint(config.ckpt_path, model_dir, command, runs.recipe(config))
        saved = runs.read_checkpoint(checkpoint, command, config.model.class_path)
        config.ckpt_path = str(checkpoint)
        if command != "fit":  # evaluate with the inputs the model was trained on, as Lightning does the model's args
            trained_data = saved.get("datamodule_hyper_parameters") or {}
            if "standardize" in trained_data:
                config.data.standardize = trained_data["standardize"]
        run = runs.run_of_checkpoint(checkpoint)
        if command == "fit" and run is not None:
            runs.check_resume(checkpoint, checkpoint.parent.parent, config)
        if logger is not None and run is not None:
            logger.save_dir, logger.name, logger.version = str(run[0]), run[1], run[2]

    def before_fit(self) -> None:
        """Checks what would otherwise fail after the run folder exists, with a traceback: the log folder must be
        writable, and the optimizer must accept its arguments (torch's optimizers refuse a negative lr, …)."""
        try:
            self.model.optimizer(self.model.parameters())
        except ValueError as error:
            raise UserInputError(f"--model.init_args.optimizer: {error}") from None
        if isinstance(self.model, FashionMNISTClassifier):  # here too, before the run folder exists
            self.model.check_callbacks(self.trainer.callbacks)
        self._check_log_dirs_writable()
        self._read_data("fit")

    def before_test(self) -> None:
        self._check_log_dirs_writable()
        self._read_data("test")

    def _read_data(self, stage: str) -> None:
        """Reads the data before Lightning makes the run's log folder, so that a damaged file fails without leaving
        an empty run behind; Lightning's own prepare_data and setup then find it done."""
        self.datamodule.prepare_data()
        self.datamodule.setup(stage)

    def before_predict(self) -> None:
        if self.datamodule.predict_files:  # the user's images: predictions.csv and a summary
            self.trainer.callbacks.append(PredictionCSV())

    def _check_log_dirs_writable(self) -> None:
        for logger in self.trainer.loggers:
            if logger.save_dir is None:
                continue
            save_dir = Path(logger.save_dir)
            try:
                save_dir.mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=save_dir).close()
            except OSError as error:
                raise UserInputError(
                    f"--trainer.logger.init_args.save_dir {save_dir}: cannot write there ({error.strerror}); "
                    "choose a writable folder"
                ) from None

    def _instantiate_trainer(self, config: dict, callbacks: list[Callback]) -> Trainer:
        """Leaves the project's progress bar out when the bar is off or the config brings its own."""
        own_bar = any(isinstance(callback, ProgressBar) for callback in config.get("callbacks") or [])
        if own_bar or config.get("enable_progress_bar") is False:
            callbacks = [callback for callback in callbacks if not isinstance(callback, TQDMProgressBar)]
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        logger = _tensorboard_args(config)
        if logger is not None and logger.name is None:
            logger.name = _model_name(config)
        if logger is not None and self.subcommand != "fit":
            logger.log_graph = False  # fit logged it; a second graph in the run folder makes TensorBoard warn
        profiler = config.trainer.get("profiler")
        if isinstance(profiler, str) and profiler in PROFILERS:
            # Lightning prints a profiler named by a string to stdout; with a filename it writes
            # <stage>-profile.txt into the run folder (the trainer's log_dir) instead
            config.trainer.profiler = Namespace(class_path=PROFILERS[profiler], init_args=Namespace(filename="profile"))


def _tensorboard_args(config: Namespace) -> Namespace | None:
    """The default TensorBoardLogger's init args in a command's config; None for any other logger."""
    logger = config.trainer.get("logger")
    if isinstance(logger, dict) or not hasattr(logger, "class_path") or logger.class_path != TENSORBOARD:
        return None
    return logger.init_args


def _model_name(config: Namespace) -> str:
    return config.model.class_path.rsplit(".", 1)[-1]


def list_models(args: list[str]) -> int:
    """Print the models with their parameter counts in Keras's convention."""
    print(f"{'model':<18} {'parameters':>11}  class path")
    for model in MODELS:
        print(
            f"{model.__name__:<18} {count_params(model()):>11,}  {model.__module__.rsplit('.', 1)[0]}.{model.__name__}"
        )
    return 0


def convert_keras(args: list[str]) -> int:
    """Turn a trained Keras model of the study into a Lightning checkpoint of the matching model."""
    from fmnist_lightning.parity import load_keras_weights, save_converted_checkpoint

    names = {model.__name__: model for model in STUDY_MODELS}
    parser = argparse.ArgumentParser(
        prog="python -m fmnist_lightning convert-keras",
        description="Convert a Keras model of the study (.keras, .weights.h5 or legacy .h5) into a checkpoint "
        "that `test --ckpt_path FILE` and `predict --ckpt_path FILE` accept.",
    )
    parser.add_argument("source", type=Path, help="the Keras model file")
    parser.add_argument("--model", required=True, choices=list(names), help="the matching architecture")
    parser.add_argument("--out", type=Path, help="the checkpoint to write (default: SOURCE's name with .ckpt)")
    options = parser.parse_args(args)
    out = options.out or Path(options.source.name.split(".")[0] + ".ckpt")
    try:
        model = load_keras_weights(names[options.model](), options.source)
        save_converted_checkpoint(model, out, options.source)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {options.model} with the weights of {options.source} ({count_params(model):,} parameters)")
    print(f"evaluate it: python -m fmnist_lightning test --ckpt_path {out} --data.data_dir DATA_DIR")
    return 0


def publish(args: list[str]) -> int:
    from fmnist_lightning.publish import publish_command

    return publish_command(args)


def export(args: list[str]) -> int:
    from fmnist_lightning.export import export_command

    return export_command(args)


def cross_validate(args: list[str]) -> int:
    """``cv``: imported when used, since it builds on this module's CLI class."""
    from fmnist_lightning.cv import cv_command

    return cv_command(args)


PROJECT_COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "models": ("list the models and their parameter counts", list_models),
    "convert-keras": ("convert a trained Keras model of the study into a checkpoint", convert_keras),
    "compare": ("compare runs side by side: reports/comparison.md, .csv, .png", compare_command),
    "cv": ("k-fold cross-validation of a recipe on the study's folds: mean ± std, box plot", cross_validate),
    "publish": ("publish a run's checkpoint into weights/ with a model card", publish),
    "export": ("export a checkpoint as ONNX or TorchScript (probabilities from [0, 1] pixels)", export),
}


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m fmnist_lightning`` and ``fmnist``; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] in PROJECT_COMMANDS:
        return PROJECT_COMMANDS[args[0]][1](args[1:])
    try:
        cli = FashionMNISTCLI(argv)  # None: LightningCLI reads sys.argv itself
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SIGTERMException:  # Lightning's SystemExit after SaveOnInterrupt saved the run
        print("stopped by SIGTERM; resume with: fit --config ... --ckpt_path last", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 1 if cli.datamodule.unreadable else 0  # predict skipped images it could not read
