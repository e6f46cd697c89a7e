"""Where a sweep's study lives and how workers share it: the storage (with heartbeats), the study made once and
joined by every other worker, and which trial stands for which grid point."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the interface optimize() sends heartbeats through
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from fmnist_lightning.commands.sweep.spec import PRUNERS, SAMPLERS, SweepSpec, point_key
from fmnist_lightning.errors import UserInputError


def open_storage(options: argparse.Namespace, folder: Path) -> BaseStorage:
    """RDB (the default SQLite file, or a URL) or a journal file, with heartbeats and retries of dead workers'
    trials; a storage that cannot be opened is a one-line error."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, the retry callback
    heartbeat = {"heartbeat_interval": options.heartbeat_interval, "grace_period": options.grace_period}
    heartbeat["heartbeat_stale_trial_callback"] = RetryHeartbeatStaleTrialCallback(max_retry=options.max_retry)
    where = f"--storage {options.storage}" if options.storage else f"the sweep's SQLite file in {folder}"
    if options.report and options.storage is None and not (folder / "study.db").is_file():
        raise UserInputError(f"--report: no study in {folder} yet; run the sweep first")
    try:
        if options.storage is not None and "://" not in options.storage:
            path = Path(options.storage)
            if not path.parent.is_dir():
                raise UserInputError(f"{where}: no folder {path.parent} for the journal file")
            return HeartbeatJournalStorage(JournalFileBackend(str(path)), **heartbeat)
        if options.storage is None:
            folder.mkdir(parents=True, exist_ok=True)
        url = options.storage or f"sqlite:///{folder / 'study.db'}"
        # workers of one SQLite file wait for each other's writes instead of failing with "database is locked"
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        for attempt in range(3):  # workers that start together race to create the tables: the losers try again
            try:
                return RDBStorage(url, engine_kwargs=engine, **heartbeat)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as error:
                # measured: "UNIQUE constraint failed" for 1 of 3 SQLite starters, and "table … already exists" where
                # two start within the same instant (two single-threaded pytest workers)
                creating = isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in str(error)
                if attempt == 2 or not creating:
                    raise
                time.sleep(0.5)
    except UserInputError:
        raise
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserInputError(f"{where}: cannot open it ({reason})") from None
    raise AssertionError("unreachable")


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with the heartbeats that Optuna 5.1 gives RDBStorage only, through the same
    interface, so ``optimize`` sends them and fails stale trials (``fail_stale_trials``) as it does for RDB.

    A running trial's worker records ``time.time()`` as the trial's ``heartbeat`` system attribute every interval;
    a trial whose last heartbeat (or its start, for a retry that inherited an old one) is older than the grace
    period is stale. The times are the workers' clocks, so the nodes need synchronised clocks (NTP)."""

    def __init__(self, backend: JournalFileBackend, heartbeat_interval: int, grace_period: int, **kwargs: Any) -> None:
        super().__init__(backend)
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.stale_callback = kwargs["heartbeat_stale_trial_callback"]

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another worker took it for dead
            self.set_trial_system_attr(trial_id, "heartbeat", time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now, stale = time.time(), []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            if now - max(trial.system_attrs.get("heartbeat", 0.0), started) > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self.stale_callback


def open_study(storage: BaseStorage, spec: SweepSpec, record: dict[str, Any], create: bool = True) -> optuna.Study:
    """Creates the study and enqueues a grid's points, or joins it: the worker whose ``create_study`` succeeds
    (the storage decides between workers that start together) enqueues, the others wait until it marked the study
    ready. Joining a study made from another sweep file or recipe is an error, with nothing written to the study;
    a rerun re-enqueues the points whose trials all failed."""
    sampler_class = getattr(optuna.samplers, SAMPLERS[spec.sampler])
    try:
        if spec.is_grid:
            sampler = sampler_class({p.key: list(p.choices) for p in spec.params}, **spec.sampler_args)
        else:
            sampler = sampler_class(**spec.sampler_args)
        pruner = getattr(optuna.pruners, PRUNERS[spec.pruner])(**spec.pruner_args)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"{spec.path}: sampler or pruner: {error}") from None
    kwargs = {"study_name": spec.study_name, "storage": storage, "sampler": sampler, "pruner": pruner}
    record = json.loads(json.dumps(record, default=str))  # as the storage gives it back: lists, string keys
    if not create:
        try:
            return optuna.load_study(**kwargs)
        except KeyError:
            raise UserInputError(f"no study {spec.study_name} in the storage yet: run the sweep first") from None
    try:  # an existing study is only read until it is known to be this sweep's
        study = optuna.load_study(**kwargs)
    except KeyError:
        try:
            study = optuna.create_study(**kwargs, direction="maximize")
            study.set_user_attr("sweep", record)
            for point in spec.grid() if spec.is_grid else []:
                study.enqueue_trial(point)
            study.set_user_attr("ready", True)
            return study
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it a moment ago
            study = optuna.load_study(**kwargs)
    for _ in range(120):  # the creator enqueues in a second; after a minute, take its place
        if study.user_attrs.get("ready"):
            break
        time.sleep(0.5)
    theirs = study.user_attrs.get("sweep", record)
    differences = [key for key in {**theirs, **record} if theirs.get(key) != record.get(key)]
    if differences:
        raise UserInputError(
            f"study {spec.study_name} in the storage was made from another sweep or recipe (it differs in "
            f"{', '.join(differences[:4])}): nothing changed; give another --study-name to start a new study"
        )
    live = {point_key(t) for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
    for point in spec.grid() if spec.is_grid else []:
        if point_key(point) not in live:  # failed, or never enqueued: this rerun retries it
            study.enqueue_trial(point)
    if not study.user_attrs.get("ready"):  # its creator stopped before it was ready: this worker made it so
        study.set_user_attr("sweep", record)
        study.set_user_attr("ready", True)
    return study


def duplicate_of(study: optuna.Study, trial: optuna.Trial, point: dict[str, Any]) -> int | None:
    """The number of a trial that makes this one redundant: one of the point that completed, or that waits or runs
    with a lower number. Only a race (two workers re-enqueueing a failed point) makes one; the lowest number runs."""
    key = point_key(point)
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or point_key(other) != key:
            continue
        live = other.state in (TrialState.RUNNING, TrialState.WAITING) and other.number < trial.number
        if other.state == TrialState.COMPLETE or live:
            return other.number
    return None
