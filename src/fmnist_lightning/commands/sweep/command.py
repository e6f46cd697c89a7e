"""The sweep's worker: checks the sweep file and the recipe, opens the study, runs trials until the study is done,
writes the report."""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from jsonargparse import ArgumentError
from lightning.pytorch import Trainer
from optuna.trial import TrialState

from fmnist_lightning.commands.cli import model_name, tensorboard_args
from fmnist_lightning.commands.folds import RESERVED, FoldCLI, final_accuracy, fit_fold
from fmnist_lightning.commands.main import CommandParser
from fmnist_lightning.commands.sweep import report
from fmnist_lightning.commands.sweep.spec import SweepSpec, cli_args, load_spec, point_key
from fmnist_lightning.commands.sweep.storage import duplicate_of, open_storage, open_study
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.runs.folders import RUN_LENGTH, recipe

# jsonargparse's lines around the reason a value was refused
NOISE = ("Does not validate against any", "Subtypes:", "Errors:", "Given value", "<class 'NoneType'>", "Problem with")


class _ParseOnly(FoldCLI):
    """The CLI's parser and config with nothing instantiated, raising on bad input instead of exiting: the sweep
    checks every key and value with it before a trial trains, and writes the best config with it."""

    def init_parser(self, **kwargs: Any) -> Any:
        parser = super().init_parser(**kwargs)
        parser.exit_on_error = False
        return parser

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


class _TrialCLI(FoldCLI):
    """The fold CLI with Optuna's pruning callback, which reports val/acc each epoch and stops a poor trial."""

    pruning: Any = None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(self.pruning)
        return trainer


def sweep_command(args: list[str]) -> int:
    """Runs a worker of the sweep until the study is done; 0 when it is, 1 when trials failed or are missing."""
    options, passthrough = _parse(args)
    spec = load_spec(options.sweep, options.study_name)
    _check_passthrough(passthrough, spec)
    check = _parse_config(passthrough)
    config = _check_values(check, passthrough, spec)
    logger = tensorboard_args(config)
    if logger is None:
        raise UserInputError("sweep names each trial's run folder: keep the default TensorBoard logger")
    model = model_name(config)
    folder = Path(logger.save_dir) / f"{model}_sweep" / spec.study_name
    storage = open_storage(options, folder)
    trains = {**recipe(config), **{f"trainer.{k}": config.trainer.get(k) for k in RUN_LENGTH[:4]}}
    record = {**spec.record(), **trains, "seed_everything": config.seed_everything}
    study = open_study(storage, spec, record, create=not options.report)
    if not options.report:
        if "SLURM_NTASKS" in os.environ:  # each srun task is a worker of its own: Lightning's documented switch
            os.environ["SLURM_JOB_NAME"] = "interactive"  # that keeps it from taking the tasks as DDP ranks
        _work(study, spec, _objective(study, spec, passthrough, f"{model}_sweep/{spec.study_name}"), options)

    def best_config(point: dict[str, Any]) -> str:
        return check.parser.dump(check.parser.parse_args([*passthrough, *spec.fixed_args(), *spec.point_args(point)]))

    done = report.write(study, spec, folder, best_config, options.storage or folder / "study.db")
    return 0 if done or options.report else 1


def _parse(args: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = CommandParser(
        "sweep",
        description="Grid or search over CLI keys (a sweep file), with Optuna; any number of workers run the same "
        "command on one storage. Other options go to every trial's fit (e.g. --config, --data.data_dir DIR).",
    )
    parser.add_argument("--sweep", type=Path, required=True, help="the sweep file (configs/sweeps/*.yaml)")
    parser.add_argument("--storage", help="a journal file (shared disk) or an RDB URL (default: SWEEP_DIR/study.db)")
    parser.add_argument("--study-name", help="default: the sweep file's study_name, else its file name")
    parser.add_argument("--heartbeat-interval", type=int, default=30, help="seconds between a trial's heartbeats")
    parser.add_argument("--grace-period", type=int, default=120, help="seconds without one before a trial is failed")
    parser.add_argument("--max-retry", type=int, default=3, help="retries of a trial whose worker died")
    parser.add_argument("--report", action="store_true", help="write the table, plot and best config; train nothing")
    options, passthrough = parser.parse_known_args(args)
    if not 0 < options.heartbeat_interval < options.grace_period or options.max_retry < 0:
        raise UserInputError("sweep: need 0 < --heartbeat-interval < --grace-period and --max-retry ≥ 0")
    if not any(arg in ("--config", "-c") or arg.startswith("--config=") for arg in passthrough):
        raise UserInputError("sweep needs the recipe to tune: --config configs/<model>.yaml")
    return options, passthrough


def _check_passthrough(passthrough: list[str], spec: SweepSpec) -> None:
    """Options the sweep sets itself, or that the sweep file sets, would be overridden or override silently."""
    given = {arg.split("=", 1)[0].removeprefix("--") for arg in passthrough if arg.startswith("--")}
    folds = {r.removeprefix("--") for r in RESERVED} | {"data.validation.kfold_shuffle", "data.kfold_shuffle"}
    reserved = folds if spec.validation == "kfold" else {"ckpt_path"}
    for key in sorted(given):
        if key in reserved or key.startswith(("trainer.logger.init_args.name", "trainer.logger.init_args.version")):
            raise UserInputError(f"sweep sets --{key} itself (the folds and each trial's run folder): drop it")
        if key in spec.fixed or key in {p.key for p in spec.params}:
            raise UserInputError(f"--{key} is set by {spec.path}; change it there")


def _parse_config(passthrough: list[str]) -> _ParseOnly:
    try:
        return _ParseOnly(passthrough, run=False)
    except ArgumentError as error:
        raise UserInputError(f"sweep: the config and options: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    """jsonargparse's multi-line message as its one line that says why (the most indented, past the Union noise)."""
    lines = [line for line in str(error).splitlines() if line.strip() and not any(n in line for n in NOISE)]
    return max(lines, key=lambda line: len(line) - len(line.lstrip(" -")), default=str(error)).strip(" -")


def _check_values(check: _ParseOnly, passthrough: list[str], spec: SweepSpec) -> Any:
    """Parses the config with each fixed value, each param's every value (or a range's ends), and a grid's every
    point: an unknown key or a value its type refuses is an error naming it, before anything trains."""

    def parse(args: list[str], what: str) -> Any:
        try:
            return check.parser.parse_args([*passthrough, *args])
        except ArgumentError as error:
            raise UserInputError(f"{spec.path}: {what}: {_reason(error)}") from None

    for key, value in spec.fixed.items():
        parse(cli_args(key, value), f"fixed: {key} = {value!r}")
    fixed = spec.fixed_args()
    for param in spec.params:
        for label in param.probes():
            parse([*fixed, *param.cli_args(label)], f"params: {param.key} = {label!r}")
    for point in spec.grid() if spec.is_grid else []:
        parse([*fixed, *spec.point_args(point)], f"params: the point {point}")
    return parse(fixed, "fixed")


def _objective(study: optuna.Study, spec: SweepSpec, passthrough: list[str], run_name: str) -> Any:
    def objective(trial: optuna.Trial) -> float:
        point = {p.key: p.suggest(trial) for p in spec.params}
        duplicate = duplicate_of(study, trial, point) if spec.is_grid else None
        if duplicate is not None:  # two workers raced for the grid's last point: the lower trial number runs it
            trial.set_user_attr("duplicate_of", duplicate)
            raise optuna.TrialPruned(f"the settings of trial {duplicate}")
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # who to ask when a trial hangs
        args = [*passthrough, *spec.fixed_args(), *spec.point_args(point), *spec.fold_args()]
        args += cli_args("trainer.logger.init_args.name", f"{run_name}/trial_{trial.number:03d}")
        accuracies, folders, started = [], [], time.perf_counter()
        for k in range(spec.folds if spec.validation == "kfold" else 1):
            version = cli_args("trainer.logger.init_args.version", k)
            if spec.validation == "kfold":
                result, cli = fit_fold([*args, *version], k, spec.folds)
                accuracy = result.accuracy / 100
            else:
                cli = _trial_cli(trial, spec)(["fit", *args, *version])
                accuracy = final_accuracy(cli)[0]
            torch.compiler.reset()  # each fit compiles a new model: past dynamo's recompile limit it would not
            accuracies.append(accuracy)
            folders.append(str(cli.trainer.log_dir))
            trial.set_user_attr("accuracies", accuracies)
            trial.set_user_attr("runs", folders)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        trial.set_user_attr("std", statistics.pstdev(accuracies))  # numpy's default, as the study printed it
        return statistics.fmean(accuracies)

    return objective


def _trial_cli(trial: optuna.Trial, spec: SweepSpec) -> type[FoldCLI]:
    """The fold CLI, with the pruning callback of this trial when the sweep prunes."""
    if spec.pruner == "none":
        return FoldCLI
    from optuna_integration import PyTorchLightningPruningCallback

    return type("_TrialCLI", (_TrialCLI,), {"pruning": PyTorchLightningPruningCallback(trial, "val/acc")})


def _work(study: optuna.Study, spec: SweepSpec, objective: Any, options: argparse.Namespace) -> None:
    """Runs trials until the study is done: every grid point completed, or a search's budget spent. With nothing
    left to start while other workers' trials run, waits: one of them may die, and its retry is then run here."""
    failures = 0
    while True:
        optuna.storages.fail_stale_trials(study)  # before counting: a dead worker's trial comes back as WAITING
        trials = study.get_trials(deepcopy=False)
        count = {state: sum(t.state == state for t in trials) for state in TrialState}
        if spec.is_grid:
            done = {point_key(t) for t in trials if t.state == TrialState.COMPLETE}
            left = sum(point_key(p) not in done for p in spec.grid())
        else:
            left = spec.trials - count[TrialState.COMPLETE] - count[TrialState.PRUNED]
        if left <= 0 or failures >= 3:
            return
        if count[TrialState.WAITING] or (not spec.is_grid and left > count[TrialState.RUNNING]):
            failures = _run_one(study, objective, failures)
        elif count[TrialState.RUNNING]:
            time.sleep(options.heartbeat_interval)
        else:
            return  # the points left failed in their trials: the table lists them, a rerun retries them


def _run_one(study: optuna.Study, objective: Any, failures: int) -> int:
    """One trial; the count of this worker's failed trials in a row (a worker stops at three, so a setting that
    fails in every trial does not burn through the grid)."""
    try:
        study.optimize(objective, n_trials=1, gc_after_trial=True)
        return 0
    except UserInputError:
        raise
    except Exception as error:  # Optuna recorded the trial as failed; the worker goes on with the next
        print(f"sweep: a trial failed ({error!r}); going on", file=sys.stderr, flush=True)
        return failures + 1
