"""Wall time of ``fit`` for a recipe, and the test accuracy it reaches, over several seeds.

The honest protocol: the recipe validates on a split of the training set (early stopping and the checkpoint
choice see only that); the official test set is evaluated once per seed, after ``fit``, on the checkpoint the
validation chose (``--ckpt best``). A seed meets the target when that test accuracy is at least ``--target``; its
time is ``fit``'s wall time from ``metrics.json`` (from the start of training to the end of the last epoch's
validation; the one-off data decoding before it and the process start-up are reported beside it). Usage::

    python benchmarks/time_to_accuracy.py --config configs/fast.yaml --target 0.92 --seeds 1 2 3

The results go into ``benchmarks/results/time_to_accuracy_<machine kind>.json`` (``results_file.py``), one entry per
config: a rerun of a config replaces its entry.
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
    common = ["--config", str(options.config), "--data.data_dir", options.data_dir]
    common += ["--trainer.logger.init_args.save_dir", str(logs), "--seed_everything", str(seed)]
    if any(logs.glob(f"*/seed_{seed}")):
        sys.exit(f"error: {logs} already has a run of seed {seed}; pass another --logs folder")
    common += ["--trainer.logger.init_args.version", f"seed_{seed}"]  # fit and test write into the same run
    process_s = fmnist(["fit", *common], options.threads)
    (run,) = (path.parent for path in logs.glob(f"*/seed_{seed}/metrics.json"))
    fmnist(["test", *common, "--ckpt_path", str(run / "checkpoints" / f"{options.ckpt}.ckpt")], options.threads)
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "seed": seed,
        "test_acc": metrics["test_acc"],
        "fit_time_s": metrics["fit_time_s"],
        "fit_process_s": process_s,
        "epochs": metrics["epochs"],
        "best_val_acc": metrics.get("best_val_acc"),
        "reached": metrics["test_acc"] >= options.target,
        "device": metrics["device"],
        "run": str(run),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "fast.yaml")
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
    times = [result["fit_time_s"] for result in results]
    summary = {
        "config": str(options.config),
        "target": options.target,
        "threads": options.threads,
        "reached": sum(result["reached"] for result in results),
        "median_fit_time_s": statistics.median(times),
        "fit_time_range_s": [min(times), max(times)],
        "median_test_acc": statistics.median(result["test_acc"] for result in results),
        "seeds": results,
    }
    for result in results:
        print(
            f"seed {result['seed']}: test {result['test_acc']:.2%} after {result['epochs']} epochs, "
            f"fit {result['fit_time_s']:.1f} s (process {result['fit_process_s']:.1f} s)"
            + (" — target met" if result["reached"] else " — below target")
        )
    print(
        f"{summary['reached']}/{len(results)} seeds ≥ {options.target:.1%}; "
        f"fit median {summary['median_fit_time_s']:.1f} s (range {min(times):.1f}–{max(times):.1f} s)"
    )
    device = results[0]["device"]
    out = options.out or results_path("time_to_accuracy", device)
    write_result_entry(out, "time_to_accuracy.py", options.config.stem, summary, device)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
