"""The sweep file of ``sweep``: which CLI keys take which values, how Optuna picks them and what a trial scores.

Read and checked whole before anything is trained (docs/sweep.md has the format)::

    sampler: grid                    # or {name: tpe, trials: 30, seed: 1}: any optuna.samplers class by short name
    pruner: median                   # searches with objective split only: optuna.pruners, epoch by epoch
    objective: {validation: kfold, folds: 3, shuffle: false}   # or {validation: split}
    fixed: {trainer.max_epochs: 10}  # CLI keys set in every trial
    params:
      model.init_args.dropout: [0.3, 0.4, 0.5]                  # values
      model.init_args.optimizer: {adam: {class_path: ...}, rmsprop: {class_path: ...}}   # labelled values
      model.init_args.optimizer.init_args.lr: {low: 1.0e-4, high: 1.0e-2, log: true}     # a range (searches)

A parameter's Optuna name is its CLI key and its Optuna value the value, or the label of a labelled value, so the
study, the table and ``optuna-dashboard`` read alike.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from fmnist_lightning.errors import UserInputError

TOP_KEYS = ("study_name", "sampler", "pruner", "objective", "fixed", "params", "reference")
SAMPLERS = {"grid": "GridSampler", "tpe": "TPESampler", "random": "RandomSampler", "qmc": "QMCSampler"}
SAMPLERS |= {"cmaes": "CmaEsSampler", "gp": "GPSampler", "nsga2": "NSGAIISampler"}
PRUNERS = {"none": "NopPruner", "median": "MedianPruner", "percentile": "PercentilePruner"}
PRUNERS |= {"hyperband": "HyperbandPruner", "successive_halving": "SuccessiveHalvingPruner"}
RANGE_KEYS = {"low", "high", "step", "log"}
# keys the sweep sets itself: each trial's run folder, and with a k-fold objective the folds (as cv does)
SWEEP_OWNED = ("trainer.logger", "ckpt_path", "config", "print_config")
FOLD_KEYS = tuple(f"data.validation.{key}" for key in ("protocol", "num_folds", "fold", "kfold_shuffle"))
FOLD_KEYS += ("data.num_folds", "data.fold", "data.kfold_shuffle")  # their names before the data groups
SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One CLI key of the search: ``choices`` (Optuna's value → the CLI's value) or a range ``low``..``high``."""

    key: str
    choices: dict[Any, Any] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    def suggest(self, trial: Any) -> Any:
        """The trial's value (a label for labelled values): an enqueued trial's own, else the sampler's."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step or 1)):
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def cli_args(self, label: Any) -> list[str]:
        return cli_args(self.key, self.choices[label] if self.choices is not None else label)

    def probes(self) -> list[Any]:
        """The values to check the key with before training: every choice, or a range's ends."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


def point_key(trial_or_point: Any) -> str:
    """A point (``{key: value or label}``) as text; of a trial, its params, or an enqueued trial's fixed ones."""
    point = trial_or_point
    if not isinstance(trial_or_point, dict):  # an Optuna FrozenTrial
        point = trial_or_point.params or trial_or_point.system_attrs.get("fixed_params") or {}
    return json.dumps(point, sort_keys=True)


def cli_args(key: str, value: Any) -> list[str]:
    """``--key value`` as the CLI parses it: strings as they are, anything else as JSON (numbers, dicts, null)."""
    return [f"--{key}", value if isinstance(value, str) else json.dumps(value)]


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    study_name: str
    sampler: str
    sampler_args: dict[str, Any]
    trials: int | None  # a search's budget, all workers together; None for a grid (its size)
    pruner: str
    pruner_args: dict[str, Any]
    validation: str  # "split": the config's own validation set; "kfold": the mean over folds (commands.folds, as cv)
    folds: int
    shuffle: bool
    fixed: dict[str, Any]
    params: tuple[Param, ...]
    # another sweep's results to set beside this one's: point_key → (mean, std); the study's grid search
    reference: dict[str, tuple[float, float]] = field(default_factory=dict)
    reference_source: str = ""

    @property
    def is_grid(self) -> bool:
        return self.sampler == "grid"

    def grid(self) -> list[dict[str, Any]]:
        """Every point of a grid, as Optuna's ``{key: value or label}``, in the file's order (last key fastest)."""
        keys = [p.key for p in self.params]
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(p.choices for p in self.params))]

    def point_keys(self) -> set[str]:
        """The grid's points as ``point_key`` texts."""
        return {point_key(point) for point in self.grid()}

    def fixed_args(self) -> list[str]:
        return [arg for key, value in self.fixed.items() for arg in cli_args(key, value)]

    def point_args(self, point: dict[str, Any]) -> list[str]:
        return [arg for p in self.params for arg in p.cli_args(point[p.key])]

    def fold_args(self) -> list[str]:
        """The k-fold objective's folds as data options (cv adds ``validation``, ``num_folds`` and ``fold``)."""
        return cli_args("data.validation.kfold_shuffle", self.shuffle) if self.validation == "kfold" else []

    def record(self) -> dict[str, Any]:
        """What the study was made from, JSON-able: kept in the study, compared when a worker joins or resumes."""
        params = {p.key: p.choices if p.choices is not None else [p.low, p.high, p.step, p.log] for p in self.params}
        record = {
            "sampler": self.sampler,
            "sampler_args": self.sampler_args,
            "trials": self.trials,
            "pruner": self.pruner,
            "pruner_args": self.pruner_args,
            "validation": self.validation,
            "folds": self.folds,
            "shuffle": self.shuffle,
            "fixed": self.fixed,
            "params": params,
        }
        return {f"sweep file's {key}": value for key, value in record.items()}


def load_spec(path: Path, study_name: str | None = None) -> SweepSpec:
    """The sweep file, checked: a one-line ``UserInputError`` naming the first problem."""
    where = f"--sweep {path}"
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise UserInputError(f"{where}: cannot read it ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise UserInputError(f"{where}: not YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{where}: expected a mapping with {', '.join(TOP_KEYS)}")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise UserInputError(f"{where}: unknown key {unknown[0]!r} (the keys are {', '.join(TOP_KEYS)})")
    sampler, sampler_args = _named(raw.get("sampler", "grid"), SAMPLERS, f"{where}: sampler")
    trials = sampler_args.pop("trials", None)
    pruner, pruner_args = _named(raw.get("pruner", "none"), PRUNERS, f"{where}: pruner")
    objective = raw.get("objective") or {}
    objective = {"validation": objective} if isinstance(objective, str) else objective
    if not isinstance(objective, dict) or set(objective) - {"validation", "folds", "shuffle"}:
        raise UserInputError(f"{where}: objective takes validation (split or kfold), folds and shuffle")
    validation, folds = objective.get("validation", "split"), objective.get("folds", 5)
    shuffle = objective.get("shuffle", True)
    if validation not in ("split", "kfold") or not isinstance(folds, int) or folds < 2 or not isinstance(shuffle, bool):
        raise UserInputError(f"{where}: objective: validation split or kfold, folds an integer ≥ 2, shuffle true/false")
    fixed = raw.get("fixed") or {}
    params = raw.get("params")
    if not isinstance(fixed, dict) or not isinstance(params, dict):
        raise UserInputError(f"{where}: fixed and params map CLI keys (model.init_args.dropout) to values")
    if not params:
        raise UserInputError(f"{where}: params is empty: nothing to search")
    spec = SweepSpec(
        path=path,
        study_name=str(study_name or raw.get("study_name") or path.stem),
        sampler=sampler,
        sampler_args=sampler_args,
        trials=trials,
        pruner=pruner,
        pruner_args=pruner_args,
        validation=validation,
        folds=folds,
        shuffle=shuffle,
        fixed=fixed,
        params=tuple(_param(str(key), value, where) for key, value in params.items()),
    )
    _check_consistency(spec, where)
    return _with_reference(spec, raw.get("reference"), where)


def _with_reference(spec: SweepSpec, raw: Any, where: str) -> SweepSpec:
    """``reference: {source: TEXT, rows: [[value or label of each param, in order, ..., mean, std], ...]}``."""
    if raw is None:
        return spec
    rows = raw.get("rows") if isinstance(raw, dict) else None
    if not isinstance(rows, list) or not spec.is_grid:
        raise UserInputError(f"{where}: reference: a grid's {{source: ..., rows: [[values..., mean, std], ...]}}")
    reference = {}
    for row in rows:
        point = dict(zip((p.key for p in spec.params), row[:-2] if isinstance(row, list) else [], strict=False))
        if not isinstance(row, list) or len(row) != len(spec.params) + 2 or point_key(point) not in spec.point_keys():
            raise UserInputError(f"{where}: reference: {row} is not a grid point followed by a mean and a std")
        reference[point_key(point)] = (float(row[-2]), float(row[-1]))
    return replace(spec, reference=reference, reference_source=str(raw.get("source", "")))


def _named(value: Any, known: dict[str, str], where: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``{name: NAME, **arguments}``; the name must be one of ``known``."""
    args = dict(value) if isinstance(value, dict) else {"name": value}
    name = args.pop("name", None)
    if name not in known:
        raise UserInputError(f"{where}: {name!r} is not one of {', '.join(known)}")
    return name, args


def _param(key: str, value: Any, where: str) -> Param:
    where = f"{where}: params: {key}"
    if isinstance(value, list):
        if not value:
            raise UserInputError(f"{where}: no values")
        if not all(isinstance(v, SCALARS) for v in value):
            raise UserInputError(f"{where}: a list holds plain values; give structured ones labels ({{label: value}})")
        if len(set(map(json.dumps, value))) < len(value):
            raise UserInputError(f"{where}: a value is listed twice")
        return Param(key, choices={v: v for v in value})
    if isinstance(value, dict) and value and set(value) <= RANGE_KEYS:
        low, high, step, log = value.get("low"), value.get("high"), value.get("step"), value.get("log", False)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high, step or 1))
        if not numbers or low >= high or (step is not None and step <= 0) or (log and low <= 0):
            raise UserInputError(f"{where}: a range needs numbers low < high (step > 0; low > 0 with log)")
        return Param(key, low=low, high=high, step=step, log=bool(log))
    if isinstance(value, dict) and value:
        if not all(isinstance(label, (str, int, float, bool)) for label in value):
            raise UserInputError(f"{where}: labels must be plain values")
        return Param(key, choices=dict(value))
    raise UserInputError(f"{where}: give a list of values, {{label: value}}, or a range {{low: ..., high: ...}}")


def _check_consistency(spec: SweepSpec, where: str) -> None:
    if spec.is_grid:
        ranges = [p.key for p in spec.params if p.choices is None]
        if ranges:
            raise UserInputError(f"{where}: params: {ranges[0]} is a range; a grid takes values (or use sampler tpe)")
        if spec.trials is not None:
            raise UserInputError(f"{where}: sampler: a grid runs each of its {len(spec.grid())} points; drop trials")
        if spec.pruner != "none":
            raise UserInputError(f"{where}: pruner: a grid runs every point to the end; prune in a search (tpe)")
    elif not isinstance(spec.trials, int) or isinstance(spec.trials, bool) or spec.trials < 1:
        raise UserInputError(f"{where}: sampler: a search needs its budget, e.g. {{name: {spec.sampler}, trials: 30}}")
    if spec.pruner != "none" and spec.validation != "split":
        raise UserInputError(f"{where}: pruner: pruning follows one fit's epochs; it needs objective split")
    keys = [*spec.fixed, *(p.key for p in spec.params)]
    for key in keys:
        owned = SWEEP_OWNED + (FOLD_KEYS if spec.validation == "kfold" else ())
        if any(key == k or key.startswith(f"{k}.") for k in owned):
            raise UserInputError(f"{where}: {key}: the sweep sets it itself (run folders; with kfold, the folds)")
    twice = sorted(set(spec.fixed) & {p.key for p in spec.params})
    if twice:
        raise UserInputError(f"{where}: {twice[0]} is both fixed and a param")
