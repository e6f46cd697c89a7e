"""``cv``: the study's k-fold cross-validation of a recipe, one fresh fit per fold, summarised as the study did.

The study trained its Brownlee and custom CNNs on four of ``KFold(5, shuffle=True, random_state=1)``'s folds and
scored each final model on the held-out fold; it reported ``Accuracy: mean=91.835 std=0.519, n=5`` with numpy's
population std. Each fold here is an ordinary ``fit`` run (its own TensorBoard run folder under ``<Model>_cv``), so
curves, configs and checkpoints of every fold stay inspectable; the summary goes to ``OUT/cv_<Model>.{json,md,png}``.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure

from fmnist_lightning.commands.cli import config_file_args
from fmnist_lightning.commands.folds import RESERVED, FoldCLI, FoldResult, fit_fold
from fmnist_lightning.commands.main import CommandParser
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.registry import get_model_info
from fmnist_lightning.safe_files import first_free_name, numbered

OUTPUTS = ("json", "md", "png")


def study_fold_accuracies(model: str) -> tuple[float, ...] | None:
    """The study's fold accuracies (%) of ``model`` (a class name, as runs record it) in fold order, the same folds
    as ``--data.validation.fold 0..4``; from the registry (``ModelInfo.study``), None where the study did not
    cross-validate."""
    try:
        info = get_model_info(model)
    except UserInputError:  # a model of the user's own, not registered
        return None
    return (info.study.fold_accuracies or None) if info.study is not None else None


def cv_command(args: list[str]) -> int:
    """Cross-validate a recipe the study's way; returns the exit code. Bad input is a UserInputError, which
    ``commands.main`` ends with ``error: ...`` and exit status 2; a fold's own error names the fold."""
    folds, out, configs, passthrough = _parse(args)
    results: list[FoldResult] = []
    for k in range(folds):
        where = f"fold {k + 1}/{folds} (--data.validation.fold {k})"
        try:
            result, cli = fit_fold(passthrough, k, folds)
        except UserInputError as error:
            raise UserInputError(f"{where}: {error}{_completed(results)}") from None
        except BaseException as error:  # also SystemExit: Lightning exits on Ctrl+C
            message = f"cv stopped in {where} by {error!r}{_completed(results)}"
            print(message, file=sys.stderr)
            raise
        results.append(result)
        if cli.trainer.is_global_zero:
            print(f"fold {k + 1}/{folds}: {result.accuracy:.3f} %  (run: {result.run})", flush=True)
    if not cli.trainer.is_global_zero:
        return 0
    summary = _summary(cli, results, configs, args)
    print(summary_line(summary["fold_accuracies"]))
    stem = _write_outputs(out, summary)
    print(f"wrote {stem}.json, .md and .png")
    return 0


def _parse(args: list[str]) -> tuple[int, Path, list[str], list[str]]:
    """cv's own options, and everything else in its original order for the fits (later options override earlier)."""
    parser = CommandParser(
        "cv",
        description="K-fold cross-validation as in the study: per fold, a fresh `fit` on the other folds, scored on "
        "the held-out fold at the end of training. Other options go to every fold's fit (e.g. --data.data_dir DIR).",
    )
    parser.add_argument("--folds", type=int, help="folds (default: the config's data.validation.num_folds, else 5)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder of the summary (default reports/)")
    options, passthrough = parser.parse_known_args(args)
    reserved = sorted({arg.split("=", 1)[0] for arg in passthrough} & set(RESERVED))
    if reserved:
        raise UserInputError(f"cv chooses the folds itself and trains each from scratch: drop {', '.join(reserved)}")
    configs = config_file_args(passthrough)
    if not configs:
        raise UserInputError("cv needs the recipe to cross-validate: --config configs/<model>.yaml")
    folds = options.folds
    for config in configs:
        if not Path(config).is_file():
            raise UserInputError(f"--config {config}: no such file")
        data = (yaml.safe_load(Path(config).read_text()) or {}).get("data")
        validation = data.get("validation") if isinstance(data, dict) else None
        if options.folds is None and isinstance(validation, dict) and "num_folds" in validation:
            folds = int(validation["num_folds"])
    folds = 5 if folds is None else folds
    if folds < 2:
        raise UserInputError(f"--folds must be at least 2 (k-fold cross-validation holds out one fold), got {folds}")
    if options.out.exists() and not options.out.is_dir():
        raise UserInputError(f"--out {options.out}: not a folder")
    options.out.mkdir(parents=True, exist_ok=True)  # fails now, not after hours of training
    return folds, options.out, configs, passthrough


def _completed(results: list[FoldResult]) -> str:
    if not results:
        return "; no fold completed"
    done = ", ".join(f"fold {r.fold + 1} {r.accuracy:.3f} % in {r.run}" for r in results)
    return f"; completed: {done}"


def summary_line(accuracies: list[float] | tuple[float, ...]) -> str:
    """The study's summary: mean and population std (numpy's default, ddof 0) of the fold accuracies in %."""
    return f"Accuracy: mean={np.mean(accuracies):.3f} std={np.std(accuracies):.3f}, n={len(accuracies)}"


def _summary(cli: FoldCLI, results: list[FoldResult], configs: list[str], args: list[str]) -> dict[str, Any]:
    model = type(cli.model).__name__
    accuracies = [r.accuracy for r in results]
    study = study_fold_accuracies(model)
    return {
        "model": model,
        "config": configs,
        "folds": len(results),
        "split_seed": cli.datamodule.validation.split_seed,
        "shuffle": cli.datamodule.validation.kfold_shuffle,
        "seed_everything": cli.config.fit.seed_everything,
        "fold_accuracies": accuracies,
        "mean": float(np.mean(accuracies)),
        "std": float(np.std(accuracies)),
        "std_ddof": 0,
        "runs": [r.run for r in results],
        "fold_details": [asdict(r) for r in results],
        "command": "python -m fmnist_lightning cv " + shlex.join(args),
        "study": None
        if study is None
        else {"fold_accuracies": list(study), "mean": float(np.mean(study)), "std": float(np.std(study))},
    }


def _write_outputs(out: Path, summary: dict[str, Any]) -> Path:
    """``cv_<Model>.{json,md,png}``, or ``cv_<Model>.<n>.*`` when an earlier cv's files are there: never overwritten."""
    model = summary["model"]
    stem = first_free_name(
        out,
        numbered(f"cv_{model}", f"cv_{model}.{{}}"),
        is_free=lambda stem: not any(Path(f"{stem}.{ext}").exists() for ext in OUTPUTS),
    )
    with open(f"{stem}.json", "x") as file:
        json.dump(summary, file, indent=2)
        file.write("\n")
    with open(f"{stem}.md", "x") as file:
        file.write(_markdown(summary, Path(f"{stem}.png").name))
    with open(f"{stem}.png", "xb") as file:
        _box_plot(summary).savefig(file, format="png", dpi=120)
    return stem


def _markdown(summary: dict[str, Any], png: str) -> str:
    study = summary["study"]
    # fold i is the study's fold i only for its KFold(5, shuffle=True, random_state=1)
    folds, shuffled, seed = summary["folds"], summary["shuffle"], summary["split_seed"]
    beside = study is not None and shuffled and seed == 1 and folds == len(study["fold_accuracies"])
    kfold = f"`KFold({folds}, shuffle=True, random_state={seed})`"
    kfold = kfold if shuffled else f"`KFold({folds}, shuffle=False)` (in file order)"
    head = "| fold (`--data.validation.fold`) | accuracy (%) |" + (" study (%) |" if beside else "") + " run |"
    rule = "|---:|---:|" + ("---:|" if beside else "") + "---|"
    rows = []
    for i, r in enumerate(summary["fold_details"]):
        theirs = f" {study['fold_accuracies'][i]:.3f} |" if beside else ""
        rows.append(f"| {r['fold']} | {r['accuracy']:.3f} |{theirs} `{r['run']}` |")
    theirs = f" {study['mean']:.3f} ± {study['std']:.3f} |" if beside else ""
    rows.append(f"| mean ± std | {summary['mean']:.3f} ± {summary['std']:.3f} |{theirs} |")
    lines = [
        f"# {summary['folds']}-fold cross-validation of {summary['model']}",
        "",
        f"`{summary['command']}`",
        "",
        f"Folds of {kfold} over the training images; per fold a fresh model trained on the other folds, scored on "
        "the held-out fold at the end of "
        f"training (the final model, not a checkpoint); `seed_everything: {summary['seed_everything']}` in each fold.",
        "",
        head,
        rule,
        *rows,
        "",
        f"{summary_line(summary['fold_accuracies'])} (std over folds with ddof 0, as the study's numpy).",
    ]
    if study is not None:
        lines += ["", f"The study (STUDY.md): {summary_line(study['fold_accuracies'])}."]
    lines += ["", f"![fold accuracies]({png})", ""]
    return "\n".join(lines)


def _box_plot(summary: dict[str, Any]) -> Figure:
    """Box plot of the fold accuracies with every fold as a point, and the study's folds beside when known."""
    groups = {f"{summary['model']} (this run)": summary["fold_accuracies"]}
    if summary["study"] is not None:
        groups["the study"] = summary["study"]["fold_accuracies"]
    figure = Figure(figsize=(2.2 + 1.8 * len(groups), 4.5), layout="constrained")
    axes = figure.subplots()
    # every fold is a point, so no separate outlier markers; the triangle is the mean
    axes.boxplot(list(groups.values()), tick_labels=list(groups), showmeans=True, showfliers=False, widths=0.5)
    for position, values in enumerate(groups.values(), start=1):
        axes.scatter(position + np.linspace(-0.1, 0.1, len(values)), values, s=18, zorder=3, color="tab:blue")
    axes.set_ylabel("accuracy on the held-out fold (%)")
    axes.set_title(f"{summary['folds']}-fold CV: {summary['mean']:.3f} ± {summary['std']:.3f} % (mean ± std)")
    axes.grid(axis="y", alpha=0.3)
    return figure
