"""What a sweep ends with, in its folder: the ranked table (``results.md``, ``results.csv``), the objective against
each parameter (``results.png``) and the best setting as a config for ``fit --config`` (``best.yaml``).

Every worker writes them when it stops, from the storage, so the last one to stop leaves the whole study; each file
is replaced whole (``write_atomically``), never half-written while another worker reads it.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from fmnist_lightning.commands.sweep.spec import SweepSpec, point_key
from fmnist_lightning.safe_files import write_atomically


@dataclass
class Row:
    """One grid point (or one completed trial of a search): its completed trial, or what became of it."""

    point: dict[str, Any]
    trial: FrozenTrial | None
    status: str  # complete, running, waiting, failed, pruned, not run
    rank: int | None = None
    reference: tuple[float, float] | None = None  # the study's mean and std (fractions), where the sweep file has it
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        return self.trial.value if self.trial is not None and self.status == "complete" else None


def rows(study: optuna.Study, spec: SweepSpec) -> list[Row]:
    """The table's rows, best first: for a grid one per point (the lowest-numbered completed trial of the point,
    else its latest trial's state); for a search one per completed trial."""
    trials = study.get_trials(deepcopy=False)
    if spec.is_grid:
        table = []
        for point in spec.grid():
            mine = [t for t in trials if point_key(t) == point_key(point)]
            # the completed trial; else one running or waiting (not a duplicate that gave way to it); else the last
            order = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
            latest = next((t for state in order for t in mine if t.state == state), mine[-1] if mine else None)
            status = latest.state.name.lower().replace("fail", "failed") if latest is not None else "not run"
            table.append(Row(point, latest, status, reference=spec.reference.get(point_key(point))))
    else:
        table = [Row(dict(t.params), t, "complete") for t in trials if t.state == TrialState.COMPLETE]
    for row in table:
        row.attrs = dict(row.trial.user_attrs) if row.trial is not None else {}
    table.sort(key=lambda row: -row.value if row.value is not None else float("inf"))
    for rank, row in enumerate((row for row in table if row.value is not None), start=1):
        row.rank = rank
    return table


def write(
    study: optuna.Study, spec: SweepSpec, folder: Path, best_config: Callable[[dict[str, Any]], str], storage: Any
) -> bool:
    """Writes the table, the plot and the best config; prints the best rows. Whether the study is done (every
    grid point completed, or a search's budget spent)."""
    table = rows(study, spec)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    finished = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
    done = all(row.value is not None for row in table) if spec.is_grid else finished >= (spec.trials or 0)
    folder.mkdir(parents=True, exist_ok=True)
    names = short_names([p.key for p in spec.params])
    write_atomically(folder / "results.csv", _csv(table, names))
    write_atomically(folder / "results.md", _markdown(table, spec, names, storage, states))
    write_atomically(
        folder / "results.png", lambda file: _plot(table, spec, names).savefig(file, format="png", dpi=110)
    )
    ranked = [row for row in table if row.rank is not None]
    if ranked:
        best = ranked[0]
        header = (
            f"# Best of sweep {spec.study_name} ({spec.path}): trial {best.trial.number}, "
            f"{100 * best.value:.3f} % {_objective_text(spec)}\n# python -m fmnist_lightning fit --config THIS_FILE\n"
        )
        write_atomically(folder / "best.yaml", header + best_config(best.point))
        for row in ranked[:5]:
            print(f"{row.rank}. {100 * row.value:.3f} %  {_labels(row.point, names)}  (trial {row.trial.number})")
    left = [row for row in table if row.value is None]
    if spec.is_grid and left:
        statuses = ", ".join(sorted({row.status for row in left}))
        print(f"{len(left)} of {len(table)} points without a completed trial: {statuses}")
    print(f"wrote {folder}/results.md, results.csv, results.png" + (", best.yaml" if ranked else ""))
    return done


def short_names(keys: list[str]) -> dict[str, str]:
    """Column names: the keys' last parts where those are unique (``dropout``), else the whole keys."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: name if last.count(name) == 1 else key for key, name in zip(keys, last, strict=True)}


def _labels(point: dict[str, Any], names: dict[str, str]) -> str:
    return ", ".join(f"{names[key]}={value}" for key, value in point.items())


def _objective_text(spec: SweepSpec) -> str:
    if spec.validation == "kfold":
        return f"(mean of {spec.folds} {'shuffled' if spec.shuffle else 'unshuffled'} folds)"
    return "(validation accuracy of the final model)"


def _fields(row: Row, names: dict[str, str]) -> dict[str, Any]:
    accuracies = row.attrs.get("accuracies") or []
    return {
        "rank": row.rank or "",
        "trial": row.trial.number if row.trial is not None else "",
        **{names[key]: value for key, value in row.point.items()},
        "accuracy_pct": f"{100 * row.value:.3f}" if row.value is not None else "",
        "std_pct": f"{100 * row.attrs['std']:.3f}" if row.value is not None and len(accuracies) > 1 else "",
        "fold_accuracies_pct": " ".join(f"{100 * a:.3f}" for a in accuracies),
        "study_pct": f"{100 * row.reference[0]:.3f} ({100 * row.reference[1]:.3f})" if row.reference else "",
        "seconds": row.attrs.get("seconds", ""),
        "status": row.status,
        "runs": " ".join(row.attrs.get("runs") or []),
    }


def _csv(table: list[Row], names: dict[str, str]) -> str:
    text = io.StringIO()
    writer = None
    for row in table:
        fields = _fields(row, names)
        writer = writer or csv.DictWriter(text, list(fields), lineterminator="\n")
        if text.tell() == 0:
            writer.writeheader()
        writer.writerow(fields)
    return text.getvalue()


def _markdown(table: list[Row], spec: SweepSpec, names: dict[str, str], storage: Any, states: list) -> str:
    counts = ", ".join(f"{sum(s == state for s in states)} {state.name.lower()}" for state in TrialState)
    with_study = any(row.reference for row in table)
    head = ["rank", "trial", *names.values(), "accuracy (%)", "± std", *(["study (%)"] if with_study else [])]
    head += ["time (s)", "status", "runs"]
    lines = [
        f"# Sweep {spec.study_name}",
        "",
        f"`{spec.path}`: {spec.sampler} sampler, objective {_objective_text(spec)}; storage `{storage}`; "
        f"trials: {counts}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in table:
        f = _fields(row, names)
        cells = [f["rank"], f["trial"], *(f[name] for name in names.values()), f["accuracy_pct"], f["std_pct"]]
        cells += [f["study_pct"]] if with_study else []
        cells += [f["seconds"], f["status"], " ".join(f"`{run}`" for run in f["runs"].split())]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    if with_study:
        lines += ["", f"study (%): mean (std) of the same point in {spec.reference_source or 'the reference'}, × 100."]
    lines += ["", "![objective against each parameter](results.png)", ""]
    return "\n".join(lines)


def _plot(table: list[Row], spec: SweepSpec, names: dict[str, str]) -> Figure:
    """The objective (%) against each parameter: every completed trial a point, a category's mean a bar; the
    study's own results as open circles where the sweep file has them."""
    figure = Figure(figsize=(3.2 * len(spec.params) + 0.6, 3.8), layout="constrained")
    axes_row = np.atleast_1d(figure.subplots(1, len(spec.params), sharey=True))
    done = [row for row in table if row.value is not None]
    for axes, param in zip(axes_row, spec.params, strict=True):
        if param.choices is not None:
            labels = list(param.choices)
            for i, label in enumerate(labels):
                ours = [100 * row.value for row in done if row.point[param.key] == label]
                theirs = [100 * row.reference[0] for row in table if row.reference and row.point[param.key] == label]
                axes.scatter(i - 0.08 + np.linspace(-0.05, 0.05, len(ours)), ours, s=16, color="tab:blue", zorder=3)
                axes.scatter(
                    i + 0.08 + np.linspace(-0.05, 0.05, len(theirs)),
                    theirs,
                    s=16,
                    facecolors="none",
                    edgecolors="tab:orange",
                    zorder=3,
                )
                if ours:
                    axes.hlines(statistics.fmean(ours), i - 0.25, i + 0.25, color="tab:blue", lw=2)
            axes.set_xticks(range(len(labels)), [str(label) for label in labels])
            axes.set_xlim(-0.6, len(labels) - 0.4)
        else:
            axes.scatter([row.point[param.key] for row in done], [100 * row.value for row in done], s=16)
            axes.set_xscale("log" if param.log else "linear")
        axes.set_xlabel(names[param.key])
        axes.grid(axis="y", alpha=0.3)
    axes_row[0].set_ylabel("objective: validation accuracy (%)")
    has_reference = any(row.reference for row in table)
    figure.suptitle(f"sweep {spec.study_name}: ● this project" + ("   ○ the study" if has_reference else ""))
    return figure
