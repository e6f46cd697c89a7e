"""Time and memory of a run, measured the same way for every model, in TensorBoard and in ``metrics.json``.

The study's "memory used" was the change of system-wide used RAM across training, which measures everything else
the machine did too. These are the defined measures instead (all on rank 0 under DDP):

- ``fit_time_s``, ``epoch_times_s``: wall time of ``fit`` and of each epoch (training plus its validation).
- ``train_images_per_s``: training images over the time spent in training batches (data loading included,
  validation not); ``train_images_per_s_by_epoch``: the same per epoch (the first includes warm-up).
- ``time_to_first_batch_s``: from the start of ``fit`` to the first training batch (data loading, worker start-up).
- ``peak_rss_mb``: the process's peak resident memory (``getrusage``), everything the process ever held.
- ``cuda_peak_allocated_mb``: on GPU, the peak of tensor memory allocated on the device during ``fit``.
- ``parameter_mb``: the bytes of the model's parameters and buffers.
- ``activation_peak_mb``: the peak, over one training step's forward and backward pass on a copy of the model,
  of the memory allocated beyond what was held before it (activations, gradients, temporaries), from
  ``torch.profiler``'s memory events.
- ``latency_ms_batch1``, ``latency_ms_batch256``: median inference time of a batch of 1 and of 256 images in
  eval mode on the run's device, measured after ``fit``.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.loops.progress import _BatchProgress
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.tensorboard.summary import hparams as hparams_summary

from fmnist_lightning.data import training_batches
from fmnist_lightning.figures import CURVES, save_learning_curves
from fmnist_lightning.models.base import FashionMNISTClassifier, count_params, tensorboard_logger

METRICS_FILE = "metrics.json"
HPARAM_RESULTS = ("best_val_acc", "final_val_acc", "test_acc", "fit_time_s", "peak_rss_mb")
MB = 2**20


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """A reader (``compare`` on a live run) never sees a half-written file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def read_run_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METRICS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB  # macOS reports bytes, Linux KiB


def activation_peak_mb(net: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> float:
    """Peak memory a training step's forward and backward allocates, from the profiler's allocation events.

    Runs on a copy so that BatchNorm statistics and gradients of the model being trained are untouched.
    """
    net = copy.deepcopy(net).train()
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # else a CUDA build on a GPU-less machine logs a false ERROR
    activities = [torch.profiler.ProfilerActivity.CPU]
    if images.is_cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, profile_memory=True) as profiler:
        F.cross_entropy(net(images), targets).backward()
    held = peak = 0  # each op's own net allocation (nested ops counted once) and the unattributed frees, in order
    for event in sorted(profiler.events(), key=lambda event: event.time_range.start):
        held += event.self_cuda_memory_usage if images.is_cuda else event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak / MB


@torch.inference_mode()
def inference_latency_ms(model: torch.nn.Module, batch_size: int, budget_s: float = 1.0) -> float:
    """Median time of one eval-mode forward pass of ``batch_size`` images, within a time budget (≥ 3 runs)."""
    images = torch.rand(batch_size, 1, 28, 28, device=model.device)
    synchronize = torch.cuda.synchronize if images.is_cuda else lambda: None
    model(images)  # warm-up: first-call allocations and kernel selection
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - started < budget_s and len(times) < 50):
        synchronize()
        start = time.perf_counter()
        model(images)
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


class SaveOnInterrupt(L.Callback):
    """A SIGTERM (a cluster's pre-emption, ``kill``, ``docker stop``) or Ctrl-C during ``fit`` rewrites the run's
    ``last.ckpt`` with the state after the last finished step before the process exits, so ``fit --ckpt_path last``
    resumes from there instead of from the end of the last epoch.

    Lightning stops at the next batch boundary on SIGTERM (on all DDP ranks together) and calls ``on_exception``.
    Its own ``OnExceptionCheckpoint`` needs its folder before the run folder exists and deletes its file after a fit
    that finishes; this writes into the run's checkpoint folder the file that resuming already looks for.
    """

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        folder = getattr(trainer.checkpoint_callback, "dirpath", None)  # None before fit set up its run folder
        if trainer.state.fn == "fit" and folder and isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            if trainer.validating:  # stopped between two batches of the epoch's validation
                rewind_to_validation_start(trainer.fit_loop.epoch_loop.val_loop.batch_progress)
            trainer.save_checkpoint(os.path.join(folder, "last.ckpt"))  # written whole or not at all (fsspec)


def rewind_to_validation_start(progress: _BatchProgress) -> None:
    """Makes a resumed fit run the interrupted validation again, whole.

    Lightning redoes a validation on resume only from its "restarted mid-evaluation" state (a checkpoint written
    inside a validation step: one batch started, none processed); from a checkpoint written between two batches it
    takes the validation as finished and goes on to the next epoch, which leaves that epoch unvalidated (no
    checkpoint choice, early-stopping check or learning-curve point). These counters are that state at the
    validation's first batch (a test fails if Lightning changes it).
    """
    done_before = progress.total.completed - progress.current.completed  # earlier validations of this epoch
    progress.reset_on_run()
    progress.current.ready = progress.current.started = 1
    progress.total.ready = progress.total.started = done_before + 1
    progress.total.processed = progress.total.completed = done_before


def ema_decay(updates: int, decay: float) -> float:
    """timm's EMA warm-up (``ModelEmaV3``, power 3/4): the decay rises from 0 towards ``decay`` with the updates."""
    return min(decay, 1 - (1 + updates) ** -0.75)


class EMAWithWarmup(EMAWeightAveraging):
    """Lightning's weight EMA with timm's decay warm-up, and batch-norm statistics that fit the averaged weights.

    A fixed decay of 0.999 still gives the random initial weights 65 % of the average after 430 steps (one epoch of
    EfficientNet at batch 128), so the first epochs validate and checkpoint a near-random network; with the
    warm-up the average follows the weights early and settles to ``decay`` over the run. Lightning's callback has
    no warm-up and timm's ``ModelEmaV3`` is not a callback: this passes the warm-up as the averaging function.

    The average of the batch-norm running statistics is not the statistics of the averaged weights: while the
    weights still move fast the two part, and SeedEfficientNet's average validated at chance for 4 epochs of a run
    whose weights trained at 87 % (its averaged checkpoint: 89.7 % with batch statistics, 9.7 % with its running
    ones). With ``bn_batches`` the averaged network's statistics are computed afresh on that many training batches
    (torch's ``swa_utils.update_bn``; Lightning leaves this to the user) before it is validated, and so before
    the checkpoints that follow a validation and the copy at the end of fit.
    """

    def __init__(self, decay: float = 0.999, bn_batches: int = 0, **kwargs: Any) -> None:
        @torch.no_grad()
        def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
            weight = 1 - ema_decay(int(updates), decay)
            if averaged[0].is_floating_point():
                torch._foreach_lerp_(averaged, current, weight)
            else:  # integer buffers (BatchNorm's batch counter), as torch's own EMA does them
                for average, value in zip(averaged, current, strict=True):
                    average.copy_(average * (1 - weight) + value * weight)

        super().__init__(decay=decay, **kwargs)
        # the parent hands its fixed-decay avg_fn to torch's AveragedModel through _kwargs; swap in the warm-up (a
        # test fails if Lightning renames this)
        self._kwargs.update(avg_fn=None, multi_avg_fn=update)
        self.bn_batches = bn_batches

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bn_batches and self._average_model is not None and trainer.datamodule is not None:
            # on forked random state: the loader's shuffle and the network's dropout here leave training's draws as
            # they were, so bn_batches changes what is validated, never what is trained
            with torch.random.fork_rng(devices=[pl_module.device] if pl_module.device.type == "cuda" else []):
                batches = itertools.islice(trainer.datamodule.train_dataloader(), self.bn_batches)
                images = (trainer.strategy.batch_to_device(batch)[0] for batch in batches)
                torch.optim.swa_utils.update_bn(images, self._average_model.module)
        super().on_validation_epoch_start(trainer, pl_module)


class RunMetrics(L.Callback):
    """Records the measures above, logs them to TensorBoard and writes ``metrics.json`` and
    ``learning_curves.png`` into the run folder; a later ``test`` on the run's checkpoint adds its accuracy.

    Args:
        latency: Measure inference latency after ``fit`` (about a second per batch size).
        activation_memory: Profile one training step's memory at the start of ``fit``.
    """

    def __init__(self, latency: bool = True, activation_memory: bool = True) -> None:
        self.latency = latency
        self.activation_memory = activation_memory
        self.metrics: dict[str, Any] = {}
        self._checkpoint_epochs: int | None = None  # epochs recorded when the checkpoint being resumed was saved

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.metrics.get("epochs", 0)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._checkpoint_epochs = state_dict["epochs"]

    def _path(self, trainer: L.Trainer) -> Path | None:
        """``metrics.json`` on rank 0, None elsewhere. Every rank must call it: ``log_dir`` is a DDP broadcast."""
        log_dir = trainer.log_dir
        return Path(log_dir) / METRICS_FILE if log_dir and trainer.is_global_zero else None

    def _write(self, trainer: L.Trainer) -> None:
        path = self._path(trainer)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomically(path, self.metrics)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        parameter_bytes = sum(t.numel() * t.element_size() for t in (*pl_module.parameters(), *pl_module.buffers()))
        self.metrics = {
            "model": type(pl_module).__name__,
            "status": "running",
            "device": pl_module.device.type,
            "parameters": count_params(pl_module),
            "parameter_mb": parameter_bytes / MB,
            "epochs": 0,
            "epoch_times_s": [],
            "train_images_per_s_by_epoch": [],
            **{f"{stage}_{name}_by_epoch": [] for stage in ("train", "val") for name in CURVES},
        }
        path = self._path(trainer)
        earlier = read_run_metrics(path.parent) if path is not None else {}
        if earlier.get("model") == self.metrics["model"] and "epoch_times_s" in earlier:
            # `fit --ckpt_path last` resumes this run: carry on its record; an earlier test no longer applies
            self.metrics = {key: value for key, value in earlier.items() if not key.startswith("test_")}
            self.metrics["status"] = "running"
            # the record can run past the checkpoint: an epoch that ended after a mid-epoch last.ckpt, in a process
            # killed later; that epoch is trained again now, so only the epochs the checkpoint had recorded stay
            if self._checkpoint_epochs is not None:
                for key, value in self.metrics.items():
                    if key == "epoch_times_s" or key.endswith("_by_epoch"):
                        self.metrics[key] = value[: self._checkpoint_epochs]
                self.metrics["epochs"] = min(self.metrics["epochs"], self._checkpoint_epochs)
        self._earlier_fit_time = self.metrics.get("fit_time_s", 0.0)
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._fit_start = time.perf_counter()
        self._train_time = 0.0
        self._train_images = 0
        self.on_train_epoch_start(trainer, pl_module)  # a fit resumed mid-epoch continues without that hook
        self._write(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last_batch_end = time.perf_counter()
        self._epoch_images = 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if "time_to_first_batch_s" in self.metrics:
            return
        self.metrics["time_to_first_batch_s"] = time.perf_counter() - self._fit_start
        if self.activation_memory and isinstance(pl_module, FashionMNISTClassifier):
            images, targets = training_batches(batch)[0]
            self.metrics["activation_peak_mb"] = activation_peak_mb(pl_module.net, images, targets)
            self._epoch_start = self._last_batch_end = time.perf_counter()  # the profiling is not training time

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._epoch_images += sum(len(images) for images, _ in training_batches(batch))
        self._last_batch_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch_time = time.perf_counter() - self._epoch_start
        train_time = self._last_batch_end - self._epoch_start  # without the validation at the epoch's end
        self._train_time += train_time
        self._train_images += self._epoch_images
        self.metrics["epochs"] += 1
        # no training batch here: the epoch trained in a process stopped during its validation, which this one
        # redid; that epoch's time, throughput and training figures are unknown (None keeps the lists by epoch)
        trained_here = self._epoch_images > 0
        throughput = self._epoch_images / train_time if trained_here and train_time > 0 else None
        self.metrics["epoch_times_s"].append(epoch_time if trained_here else None)
        # setdefault: a run resumed from before this field existed
        self.metrics.setdefault("train_images_per_s_by_epoch", []).append(throughput)
        logged = trainer.callback_metrics
        for name in CURVES:
            for stage, key in (("train", f"train/{name}_epoch"), ("val", f"val/{name}")):
                if key in logged:
                    self.metrics[f"{stage}_{name}_by_epoch"].append(logged[key].item())
                elif stage == "train" and not trained_here:
                    self.metrics[f"{stage}_{name}_by_epoch"].append(None)
        if trained_here:
            timing = {"time/epoch_s": epoch_time, "time/train_images_per_s": throughput}
            for logger in trainer.loggers:  # rank 0's own timing: not a metric to average across DDP ranks
                logger.log_metrics(timing, trainer.global_step)
        self._write(trainer)  # so that `compare` shows a live run's progress

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish_fit(trainer, pl_module, "finished")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self.metrics.get("status") == "running":
            self._finish_fit(trainer, pl_module, "interrupted")

    def _finish_fit(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str) -> None:
        metrics = self.metrics
        metrics["status"] = status
        metrics["fit_time_s"] = self._earlier_fit_time + time.perf_counter() - self._fit_start
        epoch_times = [seconds for seconds in metrics["epoch_times_s"] if seconds is not None]
        if epoch_times:
            metrics["seconds_per_epoch"] = statistics.mean(epoch_times)
        if self._train_time > 0:
            metrics["train_images_per_s"] = self._train_images / self._train_time
        if metrics["val_acc_by_epoch"]:
            metrics["best_val_acc"] = max(metrics["val_acc_by_epoch"])
            metrics["final_val_acc"] = metrics["val_acc_by_epoch"][-1]
        rss = peak_rss_mb()
        if rss is not None:
            metrics["peak_rss_mb"] = rss
        if pl_module.device.type == "cuda":
            metrics["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(pl_module.device) / MB
        if self.latency and status == "finished":
            was_training = pl_module.training
            pl_module.eval()
            for batch_size in (1, 256):
                metrics[f"latency_ms_batch{batch_size}"] = inference_latency_ms(pl_module, batch_size)
            pl_module.train(was_training)
        self._write(trainer)
        self._log_summary(trainer)
        log_hparams_with_results(trainer, pl_module, metrics)
        path = self._path(trainer)
        if path is not None and metrics["epochs"]:
            save_learning_curves(metrics, path.with_name("learning_curves.png"))

    def _log_summary(self, trainer: L.Trainer) -> None:
        """The run's single figures as scalars under ``run/``, so TensorBoard lists them beside the curves."""
        numbers = {
            f"run/{key}": float(value)
            for key, value in self.metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        for logger in trainer.loggers:
            logger.log_metrics(numbers, step=trainer.global_step)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Adds the test figures to the run's ``metrics.json`` (written by its ``fit``, maybe in another process)."""
        path = self._path(trainer)
        if path is None:
            return
        metrics = read_run_metrics(path.parent)
        fitted = "status" in metrics  # its fit declared the hparams results
        metrics = metrics or {"model": type(pl_module).__name__, "parameters": count_params(pl_module)}
        for name in CURVES:
            if f"test/{name}" in trainer.callback_metrics:
                metrics[f"test_{name}"] = trainer.callback_metrics[f"test/{name}"].item()
        write_json_atomically(path, metrics)
        log_hparams_with_results(trainer, pl_module, metrics, declare=not fitted)


def log_hparams_with_results(
    trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict[str, Any], declare: bool = True
) -> None:
    """The run's hyperparameters (model and data) with its results, for TensorBoard's HPARAMS tab.

    Lightning's ``log_hyperparams`` declares only the results it is given, and TensorBoard keeps the first
    declaration in a run folder; the test accuracy comes later, usually from another process. So every result is
    declared at once when ``fit`` ends and each is logged as an ``hp/`` scalar whenever it is known.
    """
    logger = tensorboard_logger(trainer)
    if logger is None:
        return
    logger.log_metrics(
        {f"hp/{key}": float(metrics[key]) for key in HPARAM_RESULTS if key in metrics}, trainer.global_step
    )
    if not declare:
        return
    params = {**pl_module.hparams, **(trainer.datamodule.hparams if trainer.datamodule is not None else {})}
    params = {key: v if isinstance(v, (bool, int, float, str)) else str(v) for key, v in params.items()}
    params["model"] = type(pl_module).__name__
    writer = logger.experiment._get_file_writer()
    for summary in hparams_summary(params, {f"hp/{key}": 0.0 for key in HPARAM_RESULTS}):
        writer.add_summary(summary)
