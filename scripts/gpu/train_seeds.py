"""Train several seeds of the project's recipes at once on one GPU within a time budget, test each run once, publish
each recipe's first seed with the other seeds' spread, and pack what should come back (issue 31: models past 95 %).

    python3 scripts/gpu/train_seeds.py --recipe best=configs/best_gpu.yaml \\
        --recipe efficientnet=configs/efficientnet_gpu.yaml --overlay configs/gpu_bf16.yaml --seeds 1 2 3 \\
        --budget-s 480 --data-dir .gpu-kit/data --out "$OUT"

1. Probe: every (recipe, seed) fits at once for two short epochs (``--probe-fraction`` of the training batches), which
   gives each recipe's epoch time under this very concurrency: training images/s in the second epoch, plus that
   epoch's validation (EMA batch-norm statistics included).
2. Epochs: each recipe trains for as many epochs as the budget leaves after the probe, the tests and the publishing
   (``--tail-s``), at most its config's ``max_epochs``. The one-cycle schedules are sized by them
   (``--trainer.max_epochs E``, which the card's fit command repeats); ``--trainer.max_time`` stops a fit that
   outruns the estimate, and its best checkpoint is still there.
3. Fit all at once, then ``test --ckpt_path RUN`` once per run (on the GPU, at the overlay's precision).
4. ``publish`` each recipe's first seed into ``OUT/weights/`` with the others as ``--seed_run``: accuracies measured
   on the CPU in float32, as the card states them.
5. ``OUT/runs.tar.gz`` (each run's configs, metrics.json, learning curves and TensorBoard events: no checkpoints) and
   ``OUT/summary.json``. The device tool brings back at most 8 files of 16 MiB: 2 recipes make 6.

``--accelerator cpu`` (with a CPU overlay) runs the same steps here; tests/test_train_seeds.py does that on tiny data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

KEPT = ("config*.yaml", "hparams.yaml", "metrics.json", "*.png", "events.out.tfevents.*")  # what runs.tar.gz keeps
SAFETY = 1.15  # the estimate's margin: epochs are planned at 115 % of the probe's epoch time


def cli(*args: str, threads: int, log: Path) -> subprocess.Popen:
    """``python -m fmnist_lightning ARGS`` in the background, its output in ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "fmnist_lightning", *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_all(processes: dict[str, subprocess.Popen]) -> dict[str, int]:
    return {name: process.wait() for name, process in processes.items()}


def run_folder(save_dir: Path) -> Path | None:
    """The one run folder a fit wrote under its own save_dir (``<save_dir>/<Model>/version_0``)."""
    runs = sorted(save_dir.glob("*/version_*"))
    return runs[-1] if runs else None


def read_metrics(save_dir: Path) -> dict:
    run = run_folder(save_dir)
    path = run / "metrics.json" if run else None
    return json.loads(path.read_text()) if path and path.is_file() else {}


def epoch_estimate(metrics: dict, training_images: int, fraction: float) -> float | None:
    """A full epoch's seconds from a probe's second epoch, which trained on ``fraction`` of the training images:
    the whole training set at the measured images/s, plus that epoch's validation (its time less its training)."""
    rates, times = metrics.get("train_images_per_s_by_epoch") or [], metrics.get("epoch_times_s") or []
    if len(rates) < 2 or len(times) < 2 or not rates[1] or times[1] is None:
        return None
    validation = max(0.0, times[1] - fraction * training_images / rates[1])
    return training_images / rates[1] + validation


def training_images(config: Path) -> int:
    data = yaml.safe_load(config.read_text()).get("data") or {}
    val_size = (data.get("validation") or {}).get("val_size", 5000)
    return 60_000 - (round(60_000 * val_size) if isinstance(val_size, float) and val_size < 1 else int(val_size))


def max_epochs(configs: list[Path]) -> int:
    epochs = None
    for config in configs:  # the last config that sets it, as the CLI reads them
        epochs = (yaml.safe_load(config.read_text()).get("trainer") or {}).get("max_epochs", epochs)
    return int(epochs or 1000)


def seconds_as_max_time(seconds: float) -> str:
    seconds = max(1, int(seconds))
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def pack_runs(folders: dict[str, Path], tar_path: Path) -> None:
    with tarfile.open(tar_path, "w:gz") as tar:
        for name, folder in folders.items():
            for pattern in KEPT:
                for path in sorted(folder.glob(pattern)):
                    tar.add(path, arcname=f"{name}/{path.name}")


class Session:
    """One budgeted session: the recipes × seeds, where their runs and logs go, and what it measured."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options, self.started = options, time.monotonic()
        self.recipes = dict(item.split("=", 1) for item in options.recipe)
        self.work = options.work or options.out.parent / "train_seeds"
        self.jobs = {f"{name}_s{seed}": (name, seed) for name in self.recipes for seed in options.seeds}
        self.threads = max(1, (os.cpu_count() or 2) // len(self.jobs))
        self.data = ["--data.data_dir", str(options.data_dir), *options.extra, "--trainer.enable_progress_bar", "false"]
        self.summary: dict = {"jobs": list(self.jobs), "threads_per_job": self.threads, "recipes": {}}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def configs(self, name: str) -> list[str]:
        return [arg for path in (self.recipes[name], *self.options.overlay) for arg in ("--config", path)]

    def fit_all(self, stage: str, args_of: dict[str, list[str]]) -> dict[str, int]:
        """One fit per job at once, each into ``WORK/STAGE/JOB/``; their exit codes."""
        processes = {}
        for job, (name, seed) in self.jobs.items():
            logger = ["--trainer.logger.init_args.save_dir", str(self.work / stage / job)]
            args = ["fit", *self.configs(name), "--seed_everything", str(seed), *self.data, *logger, *args_of[name]]
            processes[job] = cli(*args, threads=self.threads, log=self.work / "logs" / f"{stage}_{job}.log")
        return wait_all(processes)

    def plan(self) -> dict[str, list[str]]:
        """Each recipe's epochs: what the budget leaves after the probe and the tail, at the probe's epoch time."""
        window = self.options.budget_s - self.options.tail_s - self.elapsed()
        args_of = {}
        for name, config in self.recipes.items():
            probes = [read_metrics(self.work / "probe" / f"{name}_s{seed}") for seed in self.options.seeds]
            images = training_images(Path(config))
            known = [e for m in probes if (e := epoch_estimate(m, images, self.options.probe_fraction))]
            startup = max(m.get("time_to_first_batch_s") or 0.0 for m in probes)
            epochs = max_epochs([Path(config), *map(Path, self.options.overlay)])
            if known:
                epochs = max(1, min(epochs, math.floor((window - startup) / (SAFETY * max(known)))))
            self.summary["recipes"][name] = {
                "epoch_estimate_s": round(max(known), 2) if known else None,
                "startup_s": round(startup, 1),
                "epochs": epochs,
                "window_s": round(window, 1),
            }
            guard = seconds_as_max_time(max(window, 60))  # a probe that took the whole budget still leaves a fit
            args_of[name] = ["--trainer.max_epochs", str(epochs), "--trainer.max_time", guard]
        return args_of

    def test_all(self, folders: dict[str, Path | None]) -> dict[str, int]:
        """``test`` once per run that has a best checkpoint; it logs into the run's own folder."""
        processes = {
            job: cli(
                "test",
                *self.configs(self.jobs[job][0]),
                *self.data,
                "--ckpt_path",
                str(folder),
                threads=self.threads,
                log=self.work / "logs" / f"test_{job}.log",
            )
            for job, folder in folders.items()
            if folder is not None and (folder / "checkpoints" / "best.ckpt").is_file()
        }
        return wait_all(processes)

    def publish(self, name: str, folders: dict[str, Path | None], tested: dict[str, int]) -> int:
        """The recipe's first tested seed into OUT/weights/, the others as ``--seed_run``, on the CPU."""
        done = [folders[job] for job, (n, _) in self.jobs.items() if n == name and tested.get(job) == 0]
        if not done:
            return -1
        best = [str(folder / "checkpoints" / "best.ckpt") for folder in done]
        seeds = [arg for path in best[1:] for arg in ("--seed_run", path)]
        args = ["publish", best[0], "--name", name, *self.configs(name), "--data_dir", str(self.options.data_dir)]
        args += ["--out_dir", str(self.options.out / "weights"), *seeds]
        threads = max(1, (os.cpu_count() or 2) // len(self.recipes))
        return cli(*args, threads=threads, log=self.work / "logs" / f"publish_{name}.log").wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", action="append", required=True, help="NAME=CONFIG: the published name, its config")
    parser.add_argument("--overlay", action="append", default=[], help="configs put after each recipe's (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--budget-s", type=float, default=480, help="wall time for everything, probe to packing")
    parser.add_argument("--tail-s", type=float, default=150, help="time kept for the tests, publishing and packing")
    parser.add_argument(
        "--probe-fraction", type=float, default=0.1, help="of the training batches, in each probe epoch"
    )
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, help="where the runs go (default OUT/../train_seeds)")
    parser.add_argument("--extra", action="append", default=[], help="one more fit/test argument (repeatable)")
    session = Session(parser.parse_args(argv))
    summary, out = session.summary, session.options.out
    out.mkdir(parents=True, exist_ok=True)
    probe = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", str(session.options.probe_fraction)]
    summary["probe_exit"] = session.fit_all("probe", {name: probe for name in session.recipes})
    summary["probe_s"] = round(session.elapsed(), 1)
    summary["fit_exit"] = session.fit_all("runs", session.plan())
    summary["fit_s"] = round(session.elapsed() - summary["probe_s"], 1)
    folders = {job: run_folder(session.work / "runs" / job) for job in session.jobs}
    tested = summary["test_exit"] = session.test_all(folders)
    with ThreadPoolExecutor(len(session.recipes)) as pool:
        codes = pool.map(lambda name: session.publish(name, folders, tested), session.recipes)
        summary["publish_exit"] = dict(zip(session.recipes, codes, strict=True))
    fields = (
        "status",
        "epochs",
        "best_val_acc",
        "final_val_acc",
        "test_acc",
        "fit_time_s",
        "training_span_s",
        "seconds_per_epoch",
        "device_name",
        "precision",
    )
    metrics = {job: read_metrics(session.work / "runs" / job) for job in session.jobs}
    summary["runs"] = {job: {key: record.get(key) for key in fields} for job, record in metrics.items()}
    pack_runs({job: folder for job, folder in folders.items() if folder is not None}, out / "runs.tar.gz")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(session.work / "logs", arcname="logs")
    summary["total_s"] = round(session.elapsed(), 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0 if all(code == 0 for code in summary["publish_exit"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
