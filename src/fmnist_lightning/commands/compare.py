"""``compare``: one table and one plot of every run's metrics.json, beside the study's own figures.

Reads ``RUNS_DIR/<Model>/version_<N>/metrics.json`` (written by the ``RunMetrics`` callback; a later ``test`` adds
``test_acc``) and writes into ``OUT``:

- ``comparison.md``: the runs table (accuracies in percent, "—" where a value is missing), what each status means,
  and the study's figures for reference;
- ``comparison.csv``: the same rows with metrics.json's own keys as headers and its raw numbers, so accuracies are
  fractions in [0, 1] there (``test_acc``, ``best_val_acc``) and missing values are empty cells;
- ``comparison.png``: test accuracy against fit time, one marker per run, marker area proportional to parameters.

A run never stops the command: a run still training, one whose metrics.json is unreadable, or a run folder from
before metrics.json existed each get a row with their status.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.observe.record import METRICS_FILE, UnreadableRecordError, load_run_metrics, number, text
from fmnist_lightning.registry import ModelInfo, list_models
from fmnist_lightning.runs.folders import VERSION, run_versions

# metrics.json "status" → (csv value, Markdown label). A "running" file is also what a killed process leaves.
STATUSES = {
    "finished": ("finished", "finished"),
    "running": ("running", "running or stopped"),
    "interrupted": ("interrupted", "interrupted"),
}
BROKEN = ("broken", "broken")
NO_METRICS = ("no_metrics", "no metrics")
STATUS_NOTES = {
    "running or stopped": "the fit started and has not written its end: still training, or its process was killed",
    "interrupted": "the fit stopped on an exception or Ctrl-C; the values are those measured until then",
    "no metrics": "the run folder has no metrics.json (trained before the RunMetrics callback, or never started)",
}


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:,.{digits}f}"


@dataclass(frozen=True)
class Column:
    """One metrics.json number: its key (also the csv header), the Markdown header and how Markdown shows it."""

    key: str
    header: str
    show: Callable[[float], str]


NUMBER_COLUMNS = (
    Column("parameters", "params", _fixed(0)),
    Column("parameter_mb", "param MB", _fixed(2)),
    Column("test_acc", "test acc (%)", _percent),
    Column("best_val_acc", "best val acc (%)", _percent),
    Column("epochs", "epochs", _fixed(0)),
    Column("fit_time_s", "fit time (s)", _fixed(1)),
    Column("seconds_per_epoch", "s/epoch", _fixed(2)),
    Column("train_images_per_s", "images/s", _fixed(0)),
    Column("peak_rss_mb", "peak RSS (MB)", _fixed(1)),
    Column("activation_peak_mb", "activation peak (MB)", _fixed(2)),
    Column("latency_ms_batch1", "latency batch 1 (ms)", _fixed(2)),
    Column("latency_ms_batch256", "latency batch 256 (ms)", _fixed(2)),
)
TEXT_HEADERS = {"run": "run", "model": "model", "status": "status", "device": "device"}


def study_models() -> list[ModelInfo]:
    """The models with the study's reported result (``ModelInfo.study``, from /work/shared/STUDY.md: its notebooks
    and report), for reference only; read from the registry, the one place the study's facts are written."""
    return [info for info in list_models() if info.study is not None]


def model_order() -> list[str]:
    """The models' class names (what metrics.json and run folders record) in the registry's order: the study's
    four, then the project's own, then any registered since."""
    return [info.class_name for info in list_models()]


@dataclass
class Run:
    """One run folder's row: its numbers from metrics.json, or why there are none."""

    path: Path
    name: str
    model: str
    status: tuple[str, str]  # (csv value, Markdown label)
    device: str = ""
    values: dict[str, float] = field(default_factory=dict)
    problem: str = ""

    def sort_key(self) -> tuple[int, str, int, str]:
        models = model_order()
        order = models.index(self.model) if self.model in models else len(models)
        match = VERSION.fullmatch(self.path.name)
        return order, self.model, int(match.group(1)) if match else -1, self.path.name


def find_run_folders(runs_dir: Path) -> list[Path]:
    """The run folders under ``runs_dir``, which may be a save_dir, one model's folder or one run folder."""
    if not runs_dir.exists():
        raise UserInputError(f"RUNS_DIR not found: {runs_dir}")
    if not runs_dir.is_dir():
        raise UserInputError(f"RUNS_DIR is not a folder: {runs_dir}")
    if (runs_dir / METRICS_FILE).is_file() or VERSION.fullmatch(runs_dir.resolve().name):
        return [runs_dir]
    folders = run_versions(runs_dir)
    if not folders:
        folders = [run for model_dir in sorted(runs_dir.iterdir()) for run in run_versions(model_dir)]
    if not folders:
        raise UserInputError(
            f"no run folders (<Model>/version_<N>/) in {runs_dir}; "
            "train one with `python -m fmnist_lightning fit --config configs/lenet.yaml`"
        )
    return folders


def read_run(folder: Path) -> Run:
    """The row of one run folder; an unreadable metrics.json gives a "broken" row instead of an error."""
    resolved = folder.resolve()
    name, folder_model = f"{resolved.parent.name}/{resolved.name}", resolved.parent.name  # <Model>/version_<N>
    try:
        metrics = load_run_metrics(folder)
    except FileNotFoundError:
        return Run(folder, name, folder_model, NO_METRICS)
    except UnreadableRecordError as error:
        return Run(folder, name, folder_model, BROKEN, problem=str(error))
    model = text(metrics, "model") or folder_model
    status = metrics.get("status")
    if status not in STATUSES:
        return Run(folder, name, model, BROKEN, problem=f"metrics.json has an unknown status: {status!r}")
    values = {column.key: number(metrics, column.key) for column in NUMBER_COLUMNS}
    device = text(metrics, "device") or ""
    return Run(folder, name, model, STATUSES[status], device, {k: v for k, v in values.items() if v is not None})


def markdown_table(rows: list[Run]) -> str:
    """The runs table: percent accuracies, rounded numbers, "—" for a missing value."""
    headers = [*TEXT_HEADERS.values(), *(column.header for column in NUMBER_COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|---|---|---|---|" + "---:|" * len(NUMBER_COLUMNS)]
    for run in rows:
        numbers = [
            column.show(run.values[column.key]) if column.key in run.values else "—" for column in NUMBER_COLUMNS
        ]
        lines.append("| " + " | ".join([run.name, run.model, run.status[1], run.device or "—", *numbers]) + " |")
    return "\n".join(lines)


def markdown_report(rows: list[Run], runs_dir: Path) -> str:
    """The whole comparison.md: runs table, notes on statuses, the plot and the study's figures."""
    parts = [
        "# Run comparison",
        "",
        f"Every run under `{runs_dir}`, from its `metrics.json` (`python -m fmnist_lightning compare`). Accuracies in "
        "percent; the test accuracy appears once `test` has run on one of the run's checkpoints.",
        "",
        markdown_table(rows),
    ]
    labels = {run.status[1] for run in rows}
    notes = [f"- **{label}**: {text}" for label, text in STATUS_NOTES.items() if label in labels]
    notes += [f"- **broken** `{run.name}`: {run.problem}" for run in rows if run.problem]
    if notes:
        parts += ["", *notes]
    parts += [
        "",
        "![test accuracy against fit time](comparison.png)",
        "",
        "## The study's own figures",
        "",
        "| model | study's figure | what it is | params | recipe | training time |",
        "|---|---:|---|---:|---|---|",
    ]
    parts += [
        f"| {info.class_name} ({info.title}) | {info.study.figure} | {info.study.measure} | {info.parameters:,} | "
        f"{info.study.recipe} | {info.study.training_time or '—'} |"
        for info in study_models()
        if info.study is not None
    ]
    parts += [
        "",
        "The study's Brownlee and custom-CNN figures are 5-fold cross-validation means over the training set, not "
        "test accuracy: they compare with the mean validation accuracy of runs on the same five folds "
        '(`--data.validation.fold 0` … `4`), not with the test column above. The study\'s "memory used" figure '
        '(19.95 MB for its "EfficientNet") is the change in system-wide used RAM during training, not a measure of the '
        "model, so it is left out.",
    ]
    return "\n".join(parts) + "\n"


def write_csv(rows: list[Run], path: Path) -> None:
    """Raw metrics.json numbers (accuracies as fractions), empty cells where missing."""
    keys = [*TEXT_HEADERS, *(column.key for column in NUMBER_COLUMNS)]
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=keys)
        writer.writeheader()
        for run in rows:
            writer.writerow(
                {"run": run.name, "model": run.model, "status": run.status[0], "device": run.device, **run.values}
            )


def write_plot(rows: list[Run], path: Path) -> None:
    """Test accuracy against fit time, marker area ∝ parameters; without pyplot, so no global figure state."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    plotted = [run for run in rows if "test_acc" in run.values and "fit_time_s" in run.values]
    if not plotted:
        axes.set_axis_off()
        axes.text(0.5, 0.5, "no finished runs with test accuracy", ha="center", va="center", fontsize=14)
        figure.savefig(path, dpi=100)
        return
    largest = max((run.values.get("parameters", 0) for run in plotted), default=0) or 1
    colors = {model: f"C{i}" for i, model in enumerate(dict.fromkeys(run.model for run in plotted))}
    for run in plotted:
        x, y = run.values["fit_time_s"], 100 * run.values["test_acc"]
        if "parameters" in run.values:
            axes.scatter(x, y, s=800 * run.values["parameters"] / largest, color=colors[run.model], alpha=0.6)
        else:
            axes.scatter(x, y, s=60, marker="x", color=colors[run.model])  # parameter count unknown
        axes.annotate(run.model, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=9)
    times = [run.values["fit_time_s"] for run in plotted]
    if min(times) > 0 and max(times) > 10 * min(times):
        axes.set_xscale("log")
    axes.margins(0.15)
    axes.set_xlabel("fit time (s)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Fashion-MNIST runs (marker area ∝ parameters)")
    axes.grid(True, alpha=0.3)
    figure.savefig(path, dpi=100)


def compare_command(args: list[str]) -> int:
    """``python -m fmnist_lightning compare``: write the comparison of all runs. A UserInputError (no runs, an
    unwritable --out) ends it in ``commands.main``: ``error: ...`` and exit status 2."""
    parser = argparse.ArgumentParser(
        prog="python -m fmnist_lightning compare",
        description="Compare every run's metrics.json: writes OUT/comparison.md, .csv and .png.",
    )
    parser.add_argument(
        "runs_dir",
        nargs="?",
        type=Path,
        default=Path("tensorboard_logs"),
        metavar="RUNS_DIR",
        help="a save_dir of <Model>/version_<N>/ run folders, one model's folder, or one run folder "
        "(default: tensorboard_logs)",
    )
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports)")
    options = parser.parse_args(args)
    rows = sorted((read_run(folder) for folder in find_run_folders(options.runs_dir)), key=Run.sort_key)
    try:
        options.out.mkdir(parents=True, exist_ok=True)
        paths = [options.out / f"comparison.{suffix}" for suffix in ("md", "csv", "png")]
        paths[0].write_text(markdown_report(rows, options.runs_dir), encoding="utf-8")
        write_csv(rows, paths[1])
        write_plot(rows, paths[2])
    except OSError as error:
        raise UserInputError(f"cannot write into --out {options.out}: {error}") from error
    print(markdown_table(rows))
    print("\nwrote " + ", ".join(str(path) for path in paths))
    return 0
