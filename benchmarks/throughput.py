"""Training throughput of the study's models, three ways on this machine in one run.

- ``fit``: the project's own ``python -m fmnist_lightning fit --config configs/<model>.yaml``, as a user runs it
  (default callbacks, TensorBoard logging, checkpoints, validation each epoch), read from the run's ``metrics.json``;
- ``bare``: a plain PyTorch loop over in-memory tensors with the same model, optimizer and batch size;
- ``keras``: the study's Keras model (``tests/parity/keras_models.py``) with ``model.fit`` on TensorFlow, when
  TensorFlow is installed (``pip install -e '.[bench]'``, or ``--keras-python`` of another environment).

Every measurement is a fresh process with the same thread settings; the figure is training images per second in
the steady state (the median over epochs after the first), then the median over ``--repeats`` runs; repeats run
model by model, way after way, so a slow spell of the machine hits all ways alike. No augmentation, so that the
three do the same work. Usage::

    python benchmarks/throughput.py --data-dir ../shared/data/fashion-mnist [--models lenet custom_cnn] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("lenet", "brownlee", "custom_cnn", "seed_efficientnet")
WAYS = ("fit", "bare", "keras")
KERAS_BUILDERS = {
    "LeNet5": "lenet5",
    "BrownleeCNN": "brownlee_cnn",
    "CustomCNN": "custom_cnn",
    "SeedEfficientNet": "seed_efficientnet",
}


def steady(images_per_s: list[float]) -> float:
    """The steady-state figure of a run: the median of its epochs after the first (which includes warm-up)."""
    return statistics.median(images_per_s[1:] if len(images_per_s) > 1 else images_per_s)


# -- the three ways, each run in its own process ---------------------------------------------------------------------
def run_fit(config: Path, data_dir: str, epochs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as logs:
        command = [
            sys.executable, "-m", "fmnist_lightning", "fit", "--config", str(config), "--data.data_dir", data_dir,
            "--data.augment", "false", "--trainer.max_epochs", str(epochs),
            "--trainer.logger.init_args.save_dir", logs,
        ]  # fmt: skip
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        (metrics_file,) = Path(logs).glob("*/version_0/metrics.json")
        return json.loads(metrics_file.read_text())["train_images_per_s_by_epoch"]


def run_bare(config: Path, data_dir: str, epochs: int) -> list[float]:
    """The same model, optimizer and batches as ``fit``, in the plainest PyTorch loop: no Lightning, no logging."""
    import torch
    import torch.nn.functional as F

    from fmnist_lightning.cli import FashionMNISTCLI

    args = ["--config", str(config), "--data.data_dir", data_dir, "--data.augment", "false"]
    cli = FashionMNISTCLI([*args, "--trainer.logger", "false"], run=False)
    model, data = cli.model, cli.datamodule
    torch.manual_seed(cli.config.seed_everything or 0)
    data.prepare_data()
    data.setup("fit")
    images, targets = data.train_set.__getitems__(range(len(data.train_set)))  # float, one-hot, all in memory
    batch_size = data.hparams.batch_size
    optimizer = model.optimizer(model.parameters())
    model.train()
    throughput = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(images))
        for first in range(0, len(images), batch_size):
            index = order[first : first + batch_size]
            loss = F.cross_entropy(model.net(images[index]), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        throughput.append(len(images) / (time.perf_counter() - start))
    return throughput


def run_keras(config: Path, data_dir: str, epochs: int) -> list[float]:
    """The study's Keras model and optimizer on TensorFlow, trained by ``model.fit`` as its notebooks did."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras
    import numpy as np
    import tensorflow as tf
    import yaml

    # the study's models and its preprocessing as the parity tests hold them; NumPy only, so this runs in a
    # TensorFlow environment without torch
    sys.path[:0] = [str(ROOT / "tests" / "parity"), str(ROOT / "tests")]
    import keras_models

    from support import study_arrays

    threads = int(os.environ["OMP_NUM_THREADS"])
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    recipe = yaml.safe_load(config.read_text())
    model_name = recipe["model"]["class_path"].rsplit(".", 1)[-1]
    optimizer = recipe["model"]["init_args"]["optimizer"]
    options = optimizer.get("init_args", {})
    if optimizer["class_path"].endswith("SGD"):
        keras_optimizer = keras.optimizers.SGD(learning_rate=options["lr"], momentum=options.get("momentum", 0.0))
    else:  # Adam in Keras's own form (the project's KerasAdam)
        keras_optimizer = keras.optimizers.Adam(learning_rate=options["lr"], epsilon=options.get("eps", 1e-7))
    model = getattr(keras_models, KERAS_BUILDERS[model_name])()
    model.compile(optimizer=keras_optimizer, loss="categorical_crossentropy", metrics=["accuracy"])

    x, labels = study_arrays(Path(data_dir), "train")
    y = np.eye(10, dtype=np.float32)[labels]

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.start)

    times: list[float] = []
    model.fit(x, y, batch_size=recipe["data"]["batch_size"], epochs=epochs, verbose=0, callbacks=[EpochTimes()])
    return [len(x) / seconds for seconds in times]


RUNNERS = {"fit": run_fit, "bare": run_bare, "keras": run_keras}


def worker(options: argparse.Namespace) -> None:
    config = ROOT / "configs" / f"{options.model}.yaml"
    result = RUNNERS[options.worker](config, options.data_dir, options.epochs)
    print(json.dumps({"images_per_s_by_epoch": result}))


# -- the harness -----------------------------------------------------------------------------------------------------
def measure(way: str, model: str, options: argparse.Namespace) -> list[float]:
    python = options.keras_python if way == "keras" and options.keras_python else sys.executable
    command = [python, __file__, "--worker", way, "--model", model, "--epochs", str(options.epochs)]
    command += ["--data-dir", options.data_dir]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=thread_env(options.threads))
    return json.loads(done.stdout.strip().splitlines()[-1])["images_per_s_by_epoch"]


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def keras_available(options: argparse.Namespace) -> bool:
    python = options.keras_python or sys.executable
    probe = subprocess.run([python, "-c", "import tensorflow, keras"], capture_output=True, env=thread_env(1))
    return probe.returncode == 0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(results: dict[str, dict[str, float]], ways: list[str]) -> str:
    header = ["model", *(f"{way} images/s" for way in ways)]
    header += ["fit / bare"] if {"fit", "bare"} <= set(ways) else []
    header += ["fit / keras"] if {"fit", "keras"} <= set(ways) else []
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for model, figures in results.items():
        row = [model, *(f"{figures[way]:,.0f}" if way in figures else "—" for way in ways)]
        for other in ("bare", "keras"):
            if {"fit", other} <= set(ways):
                row.append(f"{figures['fit'] / figures[other]:.2f}×" if other in figures else "—")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is left out as warm-up")
    parser.add_argument("--repeats", type=int, default=3, help="runs per model and way; the median is reported")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "fashion-mnist"))
    parser.add_argument("--keras-python", help="a Python with TensorFlow and Keras, if not this one")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "throughput.json")
    parser.add_argument("--worker", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        return worker(options)
    if options.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is warm-up")
    ways = list(options.ways)
    if "keras" in ways and not keras_available(options):
        print("TensorFlow not found: leaving out the Keras way (pip install -e '.[bench]' or --keras-python)")
        ways.remove("keras")
    runs: dict[str, dict[str, list[list[float]]]] = {model: {way: [] for way in ways} for model in options.models}
    for repeat in range(options.repeats):
        for model in options.models:
            for way in ways:
                runs[model][way].append(measure(way, model, options))
                print(f"repeat {repeat + 1} {model:<18} {way:<6} {steady(runs[model][way][-1]):8,.0f} images/s")
    results = {
        model: {way: statistics.median(steady(run) for run in by_way[way]) for way in ways}
        for model, by_way in runs.items()
    }
    print(f"\n{options.threads} threads, {options.epochs} epochs per run, median of {options.repeats} runs\n")
    print(table(results, ways))
    options.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/throughput.py", *sys.argv[1:]]),
        "cpu": cpu_name(),
        "threads": options.threads,
        "epochs": options.epochs,
        "repeats": options.repeats,
        "images_per_s": results,
        "runs": runs,
    }
    options.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {options.out}")


if __name__ == "__main__":
    main()
