"""Training throughput of the study's models, three ways on this machine in one run.

- ``fit``: the project's own ``python -m fmnist_lightning fit --config configs/<model>.yaml``, as a user runs it
  (default callbacks, TensorBoard logging, checkpoints, validation each epoch), read from the run's ``metrics.json``;
- ``bare``: a plain PyTorch loop over in-memory tensors with the same model, optimizer and batch size;
- ``keras``: the study's Keras model (``tests/parity/keras_models.py``) with ``model.fit`` on TensorFlow, when
  TensorFlow is installed (``pip install -e '.[bench]'``, or ``--keras-python`` of another environment).

Every measurement is a fresh process with the same thread settings; the figure is training images per second in
the steady state (the median over epochs after the first), then the median over ``--repeats`` runs; repeats run
model by model, way after way (in reverse order every other repeat), so a slow spell of the machine hits all ways
alike. No augmentation, so that the three do the same work. An epoch here is the first ``--images`` training images
(the throughput of a full epoch, in less time); ``fit`` gets it as ``--trainer.limit_train_batches``. A model may get
its own count (``--images 20000 lenet=60000``): the fast ones need more images for epochs of several seconds (a
10,000-image LeNet-5 epoch takes under a second on a 2-core CPU, shorter than a shared VM's swings).
``--channels-last`` measures ``fit`` and ``bare`` with ``--speed.channels_last``. Usage::

    python benchmarks/throughput.py --data-dir ../shared/data/fashion-mnist [--models lenet custom_cnn] [--epochs 3]

The results replace this machine kind's ``benchmarks/results/throughput_<machine kind>.json`` (``results_file.py``).
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

from results_file import results_path, write_results

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
def run_fit(config: Path, options: argparse.Namespace) -> dict[str, Any]:
    batches = -(-options.images // (batch_size(config) * steps_per_execution(config)))  # Lightning's batches
    with tempfile.TemporaryDirectory() as logs:
        command = [
            sys.executable, "-m", "fmnist_lightning", "fit", "--config", str(config), *torch_args(options),
            "--trainer.max_epochs", str(options.epochs), "--trainer.limit_train_batches", str(batches),
            "--trainer.logger.init_args.save_dir", logs,
        ]  # fmt: skip
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        (metrics_file,) = Path(logs).glob("*/version_0/metrics.json")
        metrics = json.loads(metrics_file.read_text())
        return {
            "images_per_s_by_epoch": metrics["train_images_per_s_by_epoch"],
            "peak_rss_mb": metrics["peak_rss_mb"],
            "device": metrics["device"],
        }


def run_bare(config: Path, options: argparse.Namespace) -> dict[str, Any]:
    """The same model, optimizer and batches as ``fit``, in the plainest PyTorch loop: no Lightning, no logging."""
    import torch
    import torch.nn.functional as F

    from fmnist_lightning.commands.cli import FashionMNISTCLI
    from fmnist_lightning.training.speed import speed_settings_of

    cli = FashionMNISTCLI(["--config", str(config), *torch_args(options), "--trainer.logger", "false"], run=False)
    model, data = cli.model, cli.datamodule
    torch.manual_seed(cli.config.seed_everything or 0)
    data.prepare_data()
    data.setup("fit")
    speed_settings_of(cli.trainer).setup(cli.trainer, model, "fit")  # the config's channels_last, compile
    images, targets = data.train_set.__getitems__(range(options.images))  # float, one-hot, all in memory
    batch_size = data.hparams.batch_size
    optimizer = model.optimizer(model.parameters())
    model.train()
    throughput = []
    for _ in range(options.epochs):
        start = time.perf_counter()
        order = torch.randperm(len(images))
        for first in range(0, len(images), batch_size):
            index = order[first : first + batch_size]
            loss = F.cross_entropy(model.net(images[index]), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        throughput.append(len(images) / (time.perf_counter() - start))
    return {"images_per_s_by_epoch": throughput}


def run_keras(config: Path, options: argparse.Namespace) -> dict[str, Any]:
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
    settings = optimizer.get("init_args", {})
    if optimizer["class_path"].endswith("SGD"):
        keras_optimizer = keras.optimizers.SGD(learning_rate=settings["lr"], momentum=settings.get("momentum", 0.0))
    else:  # Adam in Keras's own form (the project's KerasAdam)
        keras_optimizer = keras.optimizers.Adam(learning_rate=settings["lr"], epsilon=settings.get("eps", 1e-7))
    model = getattr(keras_models, KERAS_BUILDERS[model_name])()
    model.compile(optimizer=keras_optimizer, loss="categorical_crossentropy", metrics=["accuracy"])

    x, labels = study_arrays(Path(options.data_dir), "train")
    x, y = x[: options.images], np.eye(10, dtype=np.float32)[labels[: options.images]]

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.start)

    times: list[float] = []
    model.fit(x, y, batch_size=batch_size(config), epochs=options.epochs, verbose=0, callbacks=[EpochTimes()])
    return {"images_per_s_by_epoch": [len(x) / seconds for seconds in times]}


RUNNERS = {"fit": run_fit, "bare": run_bare, "keras": run_keras}


def batch_size(config: Path) -> int:
    import yaml

    return yaml.safe_load(config.read_text())["data"]["batch_size"]


def steps_per_execution(config: Path) -> int:
    """Optimizer steps per Lightning training step (the config's ``speed: {steps_per_execution}``)."""
    import yaml

    return (yaml.safe_load(config.read_text()).get("speed") or {}).get("steps_per_execution", 1)


def images_per_model(
    values: list[str], parser: argparse.ArgumentParser, models: tuple[str, ...] = MODELS
) -> dict[str, int]:
    """``--images 20000 lenet=60000``: a count for every model, then counts for named models (of ``models``)."""
    default, counts = 15_000, {}
    for value in values:
        model, _, count = value.rpartition("=")
        if model and model not in models:
            parser.error(f"--images {value}: no model {model!r}; choose from {', '.join(models)}")
        if not count.isdigit() or not 0 < int(count) <= 60_000:
            parser.error(f"--images {value}: give a number of training images from 1 to 60000")
        if model:
            counts[model] = int(count)
        else:
            default = int(count)
    return {model: counts.get(model, default) for model in models}


def torch_args(options: argparse.Namespace) -> list[str]:
    """The CLI arguments shared by ``fit`` and ``bare``: no augmentation, and the speed options asked for."""
    args = ["--data.data_dir", options.data_dir, "--data.augmentation.affine", "false"]
    return args + (["--speed.channels_last", "true"] if options.channels_last else [])


def worker(options: argparse.Namespace) -> None:
    config = ROOT / "configs" / f"{options.model}.yaml"
    print(json.dumps(RUNNERS[options.worker](config, options)))


# -- the harness -----------------------------------------------------------------------------------------------------
def measure(way: str, model: str, options: argparse.Namespace) -> dict[str, Any]:
    python = options.keras_python if way == "keras" and options.keras_python else sys.executable
    command = [python, __file__, "--worker", way, "--model", model, "--epochs", str(options.epochs)]
    command += ["--data-dir", options.data_dir, "--images", str(options.images[model])]
    command += ["--channels-last"] if options.channels_last else []
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=thread_env(options.threads))
    return json.loads(done.stdout.strip().splitlines()[-1])


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def keras_available(options: argparse.Namespace) -> bool:
    python = options.keras_python or sys.executable
    env = dict(thread_env(1), KERAS_BACKEND="tensorflow")
    probe = subprocess.run([python, "-c", "import tensorflow, keras"], capture_output=True, env=env)
    return probe.returncode == 0


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
    parser.add_argument(
        "--images", nargs="+", default=["15000"], metavar="[MODEL=]N", help="training images per epoch (≤ 60,000)"
    )
    parser.add_argument("--channels-last", action="store_true", help="fit and bare with the channels_last option")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "fashion-mnist"))
    parser.add_argument("--keras-python", help="a Python with TensorFlow and Keras, if not this one")
    parser.add_argument(
        "--out",
        type=Path,
        help="the results file (default: results/throughput_<machine kind>.json, which a rerun replaces)",
    )
    parser.add_argument("--worker", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    options = parser.parse_args()
    options.images = images_per_model(options.images, parser)
    if options.worker:
        options.images = options.images[options.model]
        return worker(options)
    if options.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is warm-up")
    ways = list(options.ways)
    if "keras" in ways and not keras_available(options):
        print("TensorFlow not found: leaving out the Keras way (pip install -e '.[bench]' or --keras-python)")
        ways.remove("keras")
    runs: dict[str, dict[str, list[list[float]]]] = {model: {way: [] for way in ways} for model in options.models}
    peak_rss_mb: dict[str, float] = {}  # of the fit runs
    device = "cpu"  # where fit trained (the bare loop and Keras run on the CPU)
    for repeat in range(options.repeats):
        for model in options.models:
            for way in ways if repeat % 2 == 0 else reversed(ways):  # a slow spell early or late hits all ways
                result = measure(way, model, options)
                runs[model][way].append(result["images_per_s_by_epoch"])
                if "peak_rss_mb" in result:
                    peak_rss_mb[model] = max(peak_rss_mb.get(model, 0.0), result["peak_rss_mb"])
                    device = result["device"]
                print(
                    f"repeat {repeat + 1} {model:<18} {way:<6} {steady(runs[model][way][-1]):8,.0f} images/s",
                    flush=True,
                )
    results = {
        model: {way: statistics.median(steady(run) for run in by_way[way]) for way in ways}
        for model, by_way in runs.items()
    }
    layout = ", channels_last" if options.channels_last else ""
    images = ", ".join(f"{model} {options.images[model]:,}" for model in options.models)
    print(f"\n{options.threads} threads, {options.epochs} epochs per run ({images} images each){layout}, "
          f"median of {options.repeats} runs\n")  # fmt: skip
    print(table(results, ways))
    if peak_rss_mb:
        print("\npeak RSS of fit: " + ", ".join(f"{model} {mb:,.0f} MB" for model, mb in peak_rss_mb.items()))
    fields = {
        "threads": options.threads,
        "epochs": options.epochs,
        "images_per_epoch": {model: options.images[model] for model in options.models},
        "channels_last": options.channels_last,
        "repeats": options.repeats,
        "images_per_s": results,
        "fit_peak_rss_mb": peak_rss_mb,
        "runs": runs,
    }
    out = options.out or results_path("throughput", device)
    write_results(out, "throughput.py", fields, device)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
