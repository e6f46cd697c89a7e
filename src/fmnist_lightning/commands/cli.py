"""fit, validate, test and predict: LightningCLI with the project's defaults, run folders and checkpoints."""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fmnist_lightning.commands import runs
from fmnist_lightning.commands.predictions import PredictionCSV
from fmnist_lightning.data.datamodule import FashionMNISTDataModule
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.lightning_private import TrainerWithoutDuplicateBar
from fmnist_lightning.observe.run_metrics import RunMetrics
from fmnist_lightning.training import FashionMNISTClassifier, SaveOnInterrupt
from fmnist_lightning.training.module import saved_standardize

TENSORBOARD = "lightning.pytorch.loggers.TensorBoardLogger"
PROFILERS = {name: f"lightning.pytorch.profilers.{name.title()}Profiler" for name in ("simple", "advanced")} | {
    "pytorch": "lightning.pytorch.profilers.PyTorchProfiler"
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


class FashionMNISTCLI(TrainerWithoutDuplicateBar):
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
        # K optimizer steps per Lightning step need K batches per loader item (fmnist_lightning.training.multi_step)
        parser.link_arguments("model.init_args.steps_per_execution", "data.batches_per_step")
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
        logger = tensorboard_args(config)
        model_dir = Path(logger.save_dir if logger else "tensorboard_logs") / model_name(config)
        checkpoint = runs.resolve_checkpoint(config.ckpt_path, model_dir, command, runs.recipe(config))
        saved = runs.read_checkpoint(checkpoint, command, config.model.class_path)
        config.ckpt_path = str(checkpoint)
        if command != "fit":  # evaluate with the inputs the model was trained on, as Lightning does the model's args
            config.model.init_args.standardize = saved_standardize(saved)
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

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        logger = tensorboard_args(config)
        if logger is not None and logger.name is None:
            logger.name = model_name(config)
        if logger is not None and self.subcommand != "fit":
            logger.log_graph = False  # fit logged it; a second graph in the run folder makes TensorBoard warn
        profiler = config.trainer.get("profiler")
        if isinstance(profiler, str) and profiler in PROFILERS:
            # Lightning prints a profiler named by a string to stdout; with a filename it writes
            # <stage>-profile.txt into the run folder (the trainer's log_dir) instead
            config.trainer.profiler = Namespace(class_path=PROFILERS[profiler], init_args=Namespace(filename="profile"))


def tensorboard_args(config: Namespace) -> Namespace | None:
    """The default TensorBoardLogger's init args in a command's config; None for any other logger."""
    logger = config.trainer.get("logger")
    if isinstance(logger, dict) or not hasattr(logger, "class_path") or logger.class_path != TENSORBOARD:
        return None
    return logger.init_args


def model_name(config: Namespace) -> str:
    return config.model.class_path.rsplit(".", 1)[-1]


def lightning_command(argv: list[str] | None) -> int:
    """fit, validate, test or predict through LightningCLI; the exit status."""
    try:
        cli = FashionMNISTCLI(argv)  # None: LightningCLI reads sys.argv itself
    except SIGTERMException:  # Lightning's SystemExit after SaveOnInterrupt saved the run
        print("stopped by SIGTERM; resume with: fit --config ... --ckpt_path last", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 1 if cli.datamodule.unreadable else 0  # predict skipped images it could not read
