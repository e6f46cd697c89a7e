"""fit, validate, test and predict: LightningCLI with the project's defaults, run folders and checkpoints."""

from __future__ import annotations

import signal
import sys
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ModelSummary
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fmnist_lightning.commands.predictions import PredictionCSV
from fmnist_lightning.data import FashionMNISTDataModule
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.lightning_private import TrainerWithoutDuplicateBar
from fmnist_lightning.observe import fit_summary
from fmnist_lightning.observe.evaluation import EvaluationFigures, tensorboard_logger
from fmnist_lightning.observe.graph import NetworkGraph
from fmnist_lightning.observe.progress import BatchProgressBar, network_summary_like
from fmnist_lightning.observe.run_metrics import RunMetrics
from fmnist_lightning.old_keys import refuse_old_keys, renamed_flags
from fmnist_lightning.runs import folders
from fmnist_lightning.runs.checkpoints import read_checkpoint
from fmnist_lightning.training import FashionMNISTClassifier, SaveOnInterrupt
from fmnist_lightning.training.old_checkpoints import current_hyperparameters, saved_standardize
from fmnist_lightning.training.speed import SpeedSettings, speed_settings_of, use_float32_matmul_precision

# Lightning's TensorBoardLogger, curves first in the Scalars tab (observe/logger.py); Lightning's own works alike
TENSORBOARD = "fmnist_lightning.observe.logger.CurvesFirstTensorBoardLogger"
TENSORBOARD_LOGGERS = (TENSORBOARD, "lightning.pytorch.loggers.TensorBoardLogger")
PROFILERS = {name: f"lightning.pytorch.profilers.{name.title()}Profiler" for name in ("simple", "advanced")} | {
    "pytorch": "lightning.pytorch.profilers.PyTorchProfiler"
}


class SaveConfigBesideRun(SaveConfigCallback):
    """Saves each command's config into the run folder without overwriting the one already there.

    LightningCLI's callback refuses to start when ``config.yaml`` exists, which breaks resuming a run or testing
    its checkpoint into the same folder; here those write ``config.<command>.yaml`` instead.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.loggers and getattr(stage, "value", stage) != "fit":
            self.already_saved = True  # an evaluation without a logger has no run folder (a published checkpoint's)
        log_dir = trainer.log_dir  # a broadcast from rank 0: every rank must ask, in the same order
        if not self.already_saved and log_dir is not None:
            command = getattr(stage, "value", stage)  # TrainerFn: fit, validate, test, predict
            name = folders.free_config_name(Path(log_dir), command) if trainer.is_global_zero else None
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
        parser.add_lightning_class_args(EvaluationFigures, "figures")
        parser.add_lightning_class_args(SpeedSettings, "speed")
        parser.add_lightning_class_args(SaveOnInterrupt, "save_on_interrupt")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        # Lightning's default bar is Rich's when rich is installed (keras brings it): it redraws on every step, which
        # cost 15 % of LeNet-5's training throughput here; tqdm redrawn every refresh_rate steps ~3 %. Ours counts
        # batches, where Lightning's counts its steps (--speed.steps_per_execution batches each), and redraws every
        # refresh_rate batches
        parser.add_lightning_class_args(BatchProgressBar, "progress_bar")
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

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, with the network's summary in place of Lightning's default model summary, and the network's
        graph drawn by ``NetworkGraph`` where the logger was asked to draw it."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        own_summary = any(isinstance(c, ModelSummary) for c in config.trainer.get("callbacks") or [])
        trainer = super().instantiate_trainer(**kwargs)
        speed = speed_settings_of(trainer)
        if speed is not None:  # before the trainer runs: Lightning gives its tensor-core advice as it starts
            use_float32_matmul_precision(speed.float32_matmul_precision, trainer.strategy.root_device)
        if not own_summary:  # Lightning's default, present unless enable_model_summary is false
            trainer.callbacks[:] = [
                network_summary_like(c) if isinstance(c, ModelSummary) else c for c in trainer.callbacks
            ]
        if self._network_graph:
            trainer.callbacks.append(NetworkGraph())
            tensorboard_args(self.config[self.subcommand] if self.subcommand else self.config).log_graph = True
        return trainer

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str] | None) -> None:
        """Resolves ``--ckpt_path`` to a file before LightningCLI reads the model's hyperparameters from it."""
        argv = renamed_flags(sys.argv[1:] if args is None else args)
        files = config_files(argv)
        self.config = parser.parse_args(argv)
        command = self.config.get("subcommand")
        if command is None or self.config[command].get("ckpt_path") is None:
            return
        config = self.config[command]
        logger = tensorboard_args(config)
        model_dir = Path(logger.save_dir if logger else "tensorboard_logs") / model_name(config)
        checkpoint = folders.resolve_checkpoint(config.ckpt_path, model_dir, command, folders.recipe(config))
        saved = read_checkpoint(
            checkpoint, f"--ckpt_path {checkpoint}", resume_as=config.model.class_path if command == "fit" else None
        )
        config.ckpt_path = str(checkpoint)
        self._saved_hyperparameters = current_hyperparameters(saved["hyper_parameters"])
        if "weights_only" in config:  # Lightning's own load of the file, after ours, is as safe as ours
            config.weights_only = True
        if command != "fit":  # evaluate with the inputs the model was trained on, as Lightning does the model's args
            config.model.init_args.standardize = saved_standardize(saved)
        run = folders.run_of_checkpoint(checkpoint)
        if command == "fit" and run is not None:
            folders.check_resume(checkpoint, checkpoint.parent.parent, config)
        if logger is not None and run is not None:
            logger.save_dir, logger.name, logger.version = str(run[0]), run[1], run[2]
        if command != "fit" and run is None and not logger_asked(argv, files.values()):
            # evaluating a checkpoint outside a run folder (weights/lenet.ckpt) makes no run folder of its own
            config.trainer.logger = False

    def saved_model_hyperparameters(self, ckpt_path: str) -> dict[str, Any]:
        """The model hyperparameters of the checkpoint that ``parse_arguments`` read (not read again), as the model
        takes them now (``training/old_checkpoints.py``)."""
        return self._saved_hyperparameters

    def before_fit(self) -> None:
        """Checks what would otherwise fail after the run folder exists, with a traceback: the log folder must be
        writable, and the optimizer must accept its arguments (torch's optimizers refuse a negative lr, …)."""
        try:
            self.model.optimizer(self.model.parameters())
        except ValueError as error:
            raise UserInputError(f"--model.init_args.optimizer: {error}") from None
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
        # Lightning draws the graph through torch.jit.trace, which torch 2.14 deprecates: NetworkGraph draws it
        # instead (observe/graph.py), and the config keeps saying log_graph (instantiate_trainer sets it back)
        self._network_graph = logger is not None and bool(logger.log_graph)
        if logger is not None:
            logger.log_graph = False
        profiler = config.trainer.get("profiler")
        if isinstance(profiler, str) and profiler in PROFILERS:
            # Lightning prints a profiler named by a string to stdout; with a filename it writes
            # <stage>-profile.txt into the run folder (the trainer's log_dir) instead
            config.trainer.profiler = Namespace(class_path=PROFILERS[profiler], init_args=Namespace(filename="profile"))


def config_file_args(args: list[str]) -> list[str]:
    """The values of ``--config`` on a command line."""
    return [
        arg.removeprefix("--config=") if arg.startswith("--config=") else args[i + 1]
        for i, arg in enumerate(args)
        if arg.startswith("--config=") or (arg in ("--config", "-c") and i + 1 < len(args))
    ]


def config_files(args: list[str]) -> dict[str, Any]:
    """A command line's config files, each read once here: refused with a one-line error where it sets an old key
    (``old_keys.py``), kept for ``logger_asked``. A file that cannot be read is left out: jsonargparse says why."""
    files = {}
    for path in config_file_args(args):
        try:
            files[path] = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue
        refuse_old_keys(files[path], path)
    return files


def tensorboard_args(config: Namespace) -> Namespace | None:
    """The TensorBoard logger's init args (the default's or Lightning's own) in a command's config; else None."""
    logger = config.trainer.get("logger")
    if isinstance(logger, dict) or not hasattr(logger, "class_path") or logger.class_path not in TENSORBOARD_LOGGERS:
        return None
    return logger.init_args


def model_name(config: Namespace) -> str:
    return config.model.class_path.rsplit(".", 1)[-1]


def logger_asked(args: list[str], files: Iterable[Any]) -> bool:
    """Whether the command line or a config file (read: ``config_files``) names the trainer's logger (or the whole
    trainer config)."""
    if any(
        arg.split("=", 1)[0] in ("--trainer", "--trainer.logger") or arg.startswith("--trainer.logger.") for arg in args
    ):
        return True
    trainers = (config.get("trainer") for config in files if isinstance(config, dict))
    return any(isinstance(trainer, dict) and "logger" in trainer for trainer in trainers)


def config_paths(config: Namespace) -> list[str]:
    """The ``--config`` files of a command as the user gave them."""
    return [str(getattr(path, "relative", path)) for path in config.get("config") or []]


def closing_lines(cli: FashionMNISTCLI) -> list[str]:
    """What the command did and where it left it, from the run's record (``observe/fit_summary.py``)."""
    command, trainer = cli.subcommand, cli.trainer
    config = cli.config[command]
    record = next((c for c in trainer.callbacks if isinstance(c, RunMetrics)), None)
    logger = tensorboard_logger(trainer)
    run_dir = Path(logger.log_dir) if logger is not None else None
    if trainer.fast_dev_run:
        return [f"{command} ran with fast_dev_run: a check on one batch, which writes no run folder or checkpoint"]
    if command == "fit" and record is not None:
        checkpoints = {c.filename: Path(c.best_model_path) for c in trainer.checkpoint_callbacks if c.best_model_path}
        texts = [path.get_content() for path in config.get("config") or []]
        chosen = fit_summary.recipe_checkpoint(texts, config.data.validation.protocol)
        return fit_summary.fit_lines(
            record.metrics,
            run_dir,
            checkpoints,
            chosen,
            config_paths(config),
            config.data.data_dir,
            logger.save_dir if logger is not None else None,
        )
    if command in ("validate", "test"):
        if command == "test" and record is not None:
            figures, written = record.test_figures, record.record
        else:
            logged = trainer.callback_metrics
            figures, written = (
                {f"val_{n}": logged[f"val/{n}"].item() for n in ("acc", "loss") if f"val/{n}" in logged},
                None,
            )
        return fit_summary.evaluation_lines(command, figures, trainer.ckpt_path, written, run_dir)
    if command == "predict" and not cli.datamodule.predict_files:  # the user's images: PredictionCSV summarised
        return fit_summary.prediction_lines(len(cli.datamodule.test_set), trainer.ckpt_path)
    return []


def lightning_command(argv: list[str] | None) -> int:
    """fit, validate, test or predict through LightningCLI; the exit status."""
    with warnings.catch_warnings():
        # Lightning 2.6's CombinedLoader builds torch's deprecated LeafSpec for every data loader (its _pytree.py;
        # Lightning-AI/pytorch-lightning#21326): Lightning's own call, which no option of ours avoids
        warnings.filterwarnings(
            "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
        )
        # Lightning's advice for loaders that decode files per sample; ours gather a whole batch with one indexing
        # op from memory, or on the GPU (--data.on_device), where workers cannot run at all
        warnings.filterwarnings("ignore", message=r"The '\w+' does not have many workers", category=UserWarning)
        try:
            cli = FashionMNISTCLI(argv)  # None: LightningCLI reads sys.argv itself
        except SIGTERMException:  # Lightning's SystemExit after SaveOnInterrupt saved the run
            print("stopped by SIGTERM; resume with: fit --config ... --ckpt_path last", file=sys.stderr)
            return 128 + signal.SIGTERM
    lines = closing_lines(cli) if cli.subcommand is not None and cli.trainer.is_global_zero else []
    if lines:
        print("\n".join(lines), flush=True)
    return 1 if cli.datamodule.unreadable else 0  # predict skipped images it could not read
