"""Wall time of ``fit`` for a recipe, and the test accuracy it reaches, over several seeds.

The honest protocol: the recipe validates on a split of the training set (early stopping and the checkpoint
choice see only that); the official test set is evaluated once per seed, after ``fit``, on the checkpoint the
validation chose (``--ckpt best``). A seed meets the target when that test accuracy is at least ``--target``; its
time is ``metrics.json``'s ``training_span_s`` where the run records it (from the first training batch to the end of
the last epoch's validation, less the one-time compile warm-up), else ``fit_time_s`` (from the start of ``fit``);
``fit_time_s``, the time to the first batch, the compile time and the whole process's wall time are reported beside
it. ``--overlay`` adds configs after the recipe's (``--overlay configs/gpu_bf16.yaml`` trains it on a GPU in bf16).
Usage::

    python benchmarks/time_to_accuracy.py --config configs/fast.yaml --target 0.92 --seeds 1 2 3
    python benchmarks/time_to_accuracy.py --config configs/fast93.yaml --overlay configs/gpu_bf16.yaml --target 0.93

The results go into ``benchmarks/results/time_to_accuracy_<machine kind>.json`` (``results_file.py``), one entry per
config and overlays (``fast93``, ``fast93 + gpu_bf16``): a rerun of the same replaces its entry.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results_file import results_path, write_result_entry

ROOT = Path(__file__).resolve().parents[1]


def fmnist(command: list[str], threads: int) -> float:
    """Runs ``python -m fmnist_lightning COMMAND``; returns the process's wall time."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fmnist_lightning", *command], check=True, cwd=ROOT, env=env)
    return time.perf_counter() - start


def one_seed(options: argparse.Namespace, seed: int, logs: Path) -> dict[str, Any]:
    common = ["--config", str(options.config)]
    for overlay in options.overlay:
        common += ["--config", str(overlay)]
    common += ["--data.data_dir", options.data_dir]
    common += ["--trainer.logger.init_args.save_dir", str(logs), "--seed_everything", str(seed)]
    if any(logs.glob(f"*/seed_{seed}")):
        sys.exit(f"error: {logs} already has a run of seed {seed}; pass another --logs folder")
    common += ["--trainer.logger.init_args.version", f"seed_{seed}"]  # fit and test write into the same run
    process_s = fmnist(["fit", *common], options.threads)
    (run,) = (path.parent for path in logs.glob(f"*/seed_{seed}/metrics.json"))
    fmnist(["test", *common, "--ckpt_path", str(run / "checkpoints" / f"{options.ckpt}.ckpt")], options.threads)
    metrics = json.loads((run / "metrics.json").read_text())
    timed = "training_span_s" if metrics.get("training_span_s") is not None else "fit_time_s"
    return {
        "seed": seed,
        "test_acc": metrics["test_acc"],
        "timed": timed,
        "time_s": metrics[timed],
        "training_span_s": metrics.get("training_span_s"),
        "fit_time_s": metrics["fit_time_s"],
        "time_to_first_batch_s": metrics.get("time_to_first_batch_s"),
        "compile_s": metrics.get("compile_s"),
        "fit_process_s": process_s,
        "precision": metrics.get("precision"),
        "epochs": metrics["epochs"],
        "best_val_acc": metrics.get("best_val_acc"),
        "reached": metrics["test_acc"] >= options.target,
        "device": metrics["device"],
        "run": str(run),
    }


def entry_name(config: Path, overlays: list[Path]) -> str:
    """The results file's entry of a config and its overlays: ``fast93``, ``fast93 + gpu_bf16``."""
    return " + ".join(path.stem for path in [config, *overlays])


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "fast.yaml")
    parser.add_argument(
        "--overlay",
        type=Path,
        action="append",
        default=[],
        metavar="CONFIG",
        help="a config put after the recipe's, e.g. configs/gpu_bf16.yaml (repeatable)",
    )
    parser.add_argument("--target", type=float, default=0.92, help="test accuracy as a fraction, e.g. 0.92")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--ckpt", choices=("best", "last"), default="best", help="the checkpoint tested per seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "fashion-mnist"))
    parser.add_argument("--logs", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument(
        "--out",
        type=Path,
        help="the results file (default: results/time_to_accuracy_<machine kind>.json; a rerun replaces its config)",
    )
    options = parser.parse_args()
    if not 0 < options.target < 1:
        parser.error(f"--target is a fraction of the test set, e.g. 0.92, got {options.target}")
    with tempfile.TemporaryDirectory() as scratch:
        logs = options.logs or Path(scratch)
        results = [one_seed(options, seed, logs) for seed in options.seeds]
    times = [result["time_s"] for result in results]
    fit_times = [result["fit_time_s"] for result in results]
    timed = sorted({result["timed"] for result in results})
    summary = {
        "config": str(options.config),
        "overlays": [str(path) for path in options.overlay],
        "target": options.target,
        "threads": options.threads,
        "reached": sum(result["reached"] for result in results),
        "timed": timed[0] if len(timed) == 1 else timed,  # training_span_s, or fit_time_s where not recorded
        "median_time_s": statistics.median(times),
        "time_range_s": [min(times), max(times)],
        "median_fit_time_s": statistics.median(fit_times),
        "fit_time_range_s": [min(fit_times), max(fit_times)],
        "median_test_acc": statistics.median(result["test_acc"] for result in results),
        "seeds": results,
    }
    print(f"\n{entry_name(options.config, options.overlay)}, target {options.target:.1%}\n")
    print("| seed | test accuracy | epochs | time | fit_time_s | to first batch | compile | process | target |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for result in results:
        cells = [str(result["seed"]), f"{result['test_acc']:.2%}", str(result["epochs"])]
        cells += [f"{result['time_s']:.1f} s ({result['timed']})"]
        cells += [seconds(result[key]) for key in ("fit_time_s", "time_to_first_batch_s", "compile_s")]
        cells += [seconds(result["fit_process_s"]), "met" if result["reached"] else "below"]
        print("| " + " | ".join(cells) + " |")
    print(
        f"\n{summary['reached']}/{len(results)} seeds ≥ {options.target:.1%}; "
        f"median {summary['median_time_s']:.1f} s (range {min(times):.1f}–{max(times):.1f} s) of {', '.join(timed)}"
    )
    device = results[0]["device"]
    out = options.out or results_path("time_to_accuracy", device)
    write_result_entry(out, "time_to_accuracy.py", entry_name(options.config, options.overlay), summary, device)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
