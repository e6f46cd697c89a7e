"""Time and memory of a run, measured the same way for every model, in TensorBoard and in ``metrics.json``.

The study's "memory used" was the change of system-wide used RAM across training, which measures everything else
the machine did too. Defined measures instead (all on rank 0 under DDP; the table in docs/observability.md):
``fit_time_s`` and ``epoch_times_s`` (wall time of ``fit`` and of each epoch with its validation);
``train_images_per_s`` (over the time in training batches, data loading included, validation not; by epoch too,
the first with its warm-up); ``time_to_first_batch_s`` (data loading, worker start-up, the sanity check);
``peak_rss_mb`` (``getrusage``: everything the process ever held); ``parameter_mb``; ``activation_peak_mb`` (one
training step's forward and backward on a copy of the model, from ``torch.profiler``'s memory events);
``cuda_peak_allocated_mb`` and ``latency_ms_batch1``/``256`` (eval mode), taken on the fit's device in
``on_train_end``, because Lightning moves the model back to the CPU before ``on_fit_end``.

``training_span_s`` is the timed span: from the start of the first training batch to the end of the last epoch
(its validation included), less its one-off work: the first batch's memory profiling and the time ``torch.compile``
spent compiling, reported beside it as ``compile_s`` (CUDA graphs' recording is not compiling and stays in). A
resumed fit adds its span and compile time, as it adds its ``fit_time_s``. The device is synchronised only at the
span's ends and once an epoch, never within a step.

And the settings that decide a run's speed, so that a reader knows what ran: ``precision`` (the trainer's,
``32-true``, ``bf16-mixed``, ...), ``float32_matmul_precision`` (torch's, as the first training batch found it),
``data_on_device`` (the data module's ``on_device``), and the ``SpeedSettings``' ``channels_last``, ``compile``,
``compile_mode`` and ``steps_per_execution``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from fmnist_lightning.observe.figures import CURVES, save_learning_curves
from fmnist_lightning.observe.hparams import log_figures, log_settings
from fmnist_lightning.observe.measures import (
    MB,
    SPEED_SETTINGS,
    activation_peak_mb,
    compile_seconds,
    device_name,
    inference_latency_ms,
    peak_rss_mb,
    speed_settings,
    synchronize,
)
from fmnist_lightning.observe.record import METRICS_FILE, read_run_metrics, write_json_atomically
from fmnist_lightning.training.module import FashionMNISTClassifier, count_params
from fmnist_lightning.training.multi_step import training_batches


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
        self.record: Path | None = None  # the metrics.json this process last wrote (rank 0)
        self.test_figures: dict[str, float] = {}  # the last test's, recorded or not (a command's closing lines)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.metrics.get("epochs", 0)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._checkpoint_epochs = state_dict["epochs"]

    def _path(self, trainer: L.Trainer) -> Path | None:
        """``metrics.json`` on rank 0, None elsewhere, and None for an evaluation without a logger, which has no run
        folder (a published checkpoint's test). Every rank must call it: ``log_dir`` is a DDP broadcast."""
        log_dir = trainer.log_dir
        if not trainer.loggers and trainer.state.fn != "fit":
            return None
        return Path(log_dir) / METRICS_FILE if log_dir and trainer.is_global_zero else None

    def _write(self, trainer: L.Trainer) -> None:
        path = self._path(trainer)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomically(path, self.metrics)
            self.record = path

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        parameter_bytes = sum(t.numel() * t.element_size() for t in (*pl_module.parameters(), *pl_module.buffers()))
        self.metrics = {
            "model": type(pl_module).__name__,
            "status": "running",
            "device": pl_module.device.type,
            "device_name": device_name(pl_module.device),
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
        self.metrics.update(speed_settings(trainer, pl_module))
        self._earlier_fit_time = self.metrics.get("fit_time_s", 0.0)
        self._earlier_span = self.metrics.get("training_span_s", 0.0)
        self._earlier_compile = self.metrics.get("compile_s", 0.0)
        # the device fit trains on: Lightning moves the model back to the CPU before on_fit_end
        self._device = trainer.strategy.root_device
        if self._device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self._device)
        self._span_start: float | None = None  # this fit's first training batch
        self._span_excluded = 0.0  # the one-off work in the span: the first batch's profiling
        self._span_compile_start = 0.0
        self._span_closed = False
        self._device_measured = False
        self._compile_at_start = compile_seconds()
        self._fit_start = time.perf_counter()
        self._train_time = 0.0
        self._train_images = 0
        self.on_train_epoch_start(trainer, pl_module)  # a fit resumed mid-epoch continues without that hook
        self._write(trainer)
        log_settings(trainer, pl_module)  # now, so that a running or stopped run is in the HPARAMS tab too

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last_batch_end = time.perf_counter()
        self._epoch_images = 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._span_start is not None:
            return
        # this fit's first training batch: once, so a sync for the clock costs nothing per step
        synchronize(self._device)
        self._span_start = time.perf_counter()
        self._span_compile_start = compile_seconds()
        self.metrics["float32_matmul_precision"] = torch.get_float32_matmul_precision()  # after the model's setup
        if "time_to_first_batch_s" in self.metrics:  # a resumed fit: its run's first batch was measured
            return
        self.metrics["time_to_first_batch_s"] = self._span_start - self._fit_start
        if self.activation_memory and isinstance(pl_module, FashionMNISTClassifier):
            images, targets = training_batches(batch)[0]
            compiled = compile_seconds()
            self.metrics["activation_peak_mb"] = activation_peak_mb(pl_module.net, images, targets)
            synchronize(self._device)
            self._epoch_start = self._last_batch_end = time.perf_counter()  # the profiling is not training time
            # nor in the span; what compiled during it is left out with it, not twice
            self._span_excluded = self._epoch_start - self._span_start
            self._span_compile_start += compile_seconds() - compiled

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._epoch_images += sum(len(images) for images, _ in training_batches(batch))
        if trainer.is_last_batch:  # once an epoch: the epoch's training ends when the device has done its work
            synchronize(self._device)
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
            # "~": after the learning curves in TensorBoard, which orders groups by name (observe/hparams.py)
            timing = {"~time/epoch_s": epoch_time, "~time/train_images_per_s": throughput}
            for logger in trainer.loggers:  # rank 0's own timing: not a metric to average across DDP ranks
                logger.log_metrics(timing, trainer.global_step)
        self._write(trainer)  # so that `compare` shows a live run's progress

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Training is over (its last validation too) and the model is still on the device it trained on: the span
        ends here, and the device's measures are taken now."""
        self._close_span(synchronize_device=True)
        self._measure_device(pl_module, latency=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish_fit(trainer, pl_module, "finished")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self.metrics.get("status") == "running":
            self._finish_fit(trainer, pl_module, "interrupted")

    def _close_span(self, synchronize_device: bool) -> None:
        """``training_span_s`` and ``compile_s`` to now: the end of training, or of a fit interrupted before it (where
        the device is left alone: it may be the device's error that ended the fit)."""
        if self._span_closed:
            return
        self._span_closed = True
        if synchronize_device:
            synchronize(self._device)  # once, after training: what was queued for it is part of it
        end, compiled = time.perf_counter(), compile_seconds()
        span = 0.0  # a fit without a training batch (resumed to redo a validation) adds none
        if self._span_start is not None:
            compiling = max(compiled - self._span_compile_start, 0.0)  # torch._dynamo.reset() clears torch's total
            span = max(end - self._span_start - self._span_excluded - compiling, 0.0)
        self.metrics["training_span_s"] = self._earlier_span + span
        self.metrics["compile_s"] = self._earlier_compile + max(compiled - self._compile_at_start, 0.0)

    def _measure_device(self, pl_module: L.LightningModule, latency: bool) -> None:
        """The CUDA memory peak, and with ``latency`` the inference latency where the model is on its fit's device
        (after Lightning's teardown a GPU run's model is on the CPU, and a CPU latency would be recorded as the
        run's)."""
        if self._device_measured:
            return
        if self._device.type == "cuda":  # the device's own count: wherever the model is now
            self.metrics["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(self._device) / MB
        if not latency or pl_module.device != self._device:
            return
        self._device_measured = True
        if self.latency:
            was_training = pl_module.training
            pl_module.eval()
            for batch_size in (1, 256):
                self.metrics[f"latency_ms_batch{batch_size}"] = inference_latency_ms(pl_module, batch_size)
            pl_module.train(was_training)

    def _finish_fit(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str) -> None:
        metrics = self.metrics
        metrics["status"] = status
        metrics["fit_time_s"] = self._earlier_fit_time + time.perf_counter() - self._fit_start
        # where training did not end: interrupted, or a resumed fit with nothing left to train
        self._close_span(synchronize_device=False)
        # the device's measures where on_train_end did not take them; the latency of a finished fit only
        self._measure_device(pl_module, latency=status == "finished")
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
        self._write(trainer)
        # the single figures (not the settings they were measured with) beside the run's HPARAMS session
        log_figures(trainer, {key: value for key, value in metrics.items() if key not in SPEED_SETTINGS})
        path = self._path(trainer)
        if path is not None and metrics["epochs"]:
            save_learning_curves(metrics, path.with_name("learning_curves.png"))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Adds the test figures to the run's ``metrics.json`` (written by its ``fit``, maybe in another process)."""
        path = self._path(trainer)
        logged = trainer.callback_metrics
        self.test_figures = {
            f"test_{name}": logged[f"test/{name}"].item() for name in CURVES if f"test/{name}" in logged
        }
        if path is None:
            return
        metrics = read_run_metrics(path.parent)
        metrics = metrics or {"model": type(pl_module).__name__, "parameters": count_params(pl_module)}
        metrics.update(self.test_figures)
        write_json_atomically(path, metrics)
        self.record = path
        log_settings(trainer, pl_module)  # where no fit wrote them: a checkpoint tested into a folder of its own
        log_figures(trainer, self.test_figures)
