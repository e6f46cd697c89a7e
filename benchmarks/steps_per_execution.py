"""``steps_per_execution`` K against 1 in a real ``fit``, inside one process, the two ways interleaved (K, 1, 1, K, …).

Each way is a fit of the recipe's own config for ``--images`` training images (validation off, ``--speed.compile
false`` for both, so that neither pays for compiling), timed from the end of its first tenth of training steps to its
last: training images per second. The figure is the median over the pairs of K's speed over 1's, with its range:
what decides whether the option earns its complexity (docs/speed.md, issue 38's > 10 %). Usage::

    python benchmarks/steps_per_execution.py --data-dir ../shared/data/fashion-mnist [--config configs/lenet.yaml]

The results replace this machine kind's ``benchmarks/results/steps_per_execution_<machine kind>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from interleaved_fits import fit_images_per_s, interleaved, ratio_over_pairs
from results_file import results_path, write_results

ROOT = Path(__file__).resolve().parents[1]


def fit_args(config: str, k: int, options: argparse.Namespace, logs: str) -> list[str]:
    args = ["--config", config, "--data.data_dir", options.data_dir, "--speed.compile", "false"]
    args += ["--speed.steps_per_execution", str(k), "--trainer.max_epochs", "1"]
    args += ["--trainer.limit_train_batches", str(options.images // options.batch_size // k)]
    return [*args, "--trainer.limit_val_batches", "0", "--trainer.logger.init_args.save_dir", logs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--config", default=str(ROOT / "configs" / "lenet.yaml"))
    parser.add_argument("--k", type=int, default=16, help="steps_per_execution against 1 (default 16, lenet.yaml's)")
    parser.add_argument("--batch-size", type=int, default=64, help="the config's batch size (lenet.yaml: 64)")
    parser.add_argument("--images", type=int, default=81_920, help="training images per fit")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="results file (default: benchmarks/results/steps_per_execution_<kind>.json)")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    with tempfile.TemporaryDirectory() as logs:
        ways = {k: (lambda k=k: fit_images_per_s(fit_args(options.config, k, options, logs))) for k in (options.k, 1)}
        speeds = interleaved({f"K={k}": way for k, way in ways.items()}, options.pairs)
    speedup = ratio_over_pairs(speeds[f"K={options.k}"], speeds["K=1"])
    fields = {
        "config": options.config.rpartition("configs/")[2],
        "k": options.k,
        "threads": options.threads,
        "images_per_fit": options.images,
        "speedup_median": speedup["median"],
        "speedup_range": speedup["range"],
        "images_per_s_k": [round(s) for s in speeds[f"K={options.k}"]],
        "images_per_s_1": [round(s) for s in speeds["K=1"]],
    }
    print(f"K={options.k} / K=1: median {fields['speedup_median']}× (range {fields['speedup_range']})")
    out = Path(options.out) if options.out else results_path("steps_per_execution")
    write_results(out, "steps_per_execution.py", fields)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
