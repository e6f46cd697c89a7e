"""The run's time and memory measures that neither Lightning nor torchmetrics provide (see ``run_metrics``)."""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from fmnist_lightning.training.speed import SpeedSettings, speed_settings_of

MB = 2**20
# the speed settings the record keeps; what a run without the SpeedSettings callback trains with
SPEED_DEFAULTS = SpeedSettings().settings()
SPEED_SETTINGS = ("precision", "float32_matmul_precision", "data_on_device", *SPEED_DEFAULTS)


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB  # macOS reports bytes, Linux KiB


def compile_seconds() -> float:
    """Seconds this process has spent in ``torch.compile``'s compilation so far (0.0 while nothing was compiled).

    torch has no public measure of it. Dynamo keeps a private running total, ``calculate_time_spent``'s
    ``total_wall_time`` (torch 2.14): each frame it compiles (tracing and the backend, Inductor's forward graph and
    kernels included) and each backward graph compiled lazily at its first backward pass. ``torch._dynamo.reset()``
    clears it, so callers clamp differences at 0. A torch without that function reads 0.0, as one that compiled
    nothing.
    """
    try:
        from torch._dynamo.utils import calculate_time_spent
    except ImportError:
        return 0.0
    return float(calculate_time_spent().get("total_wall_time", 0.0))


def synchronize(device: torch.device) -> None:
    """Waits for the work queued on a CUDA ``device``, so that the host's clock marks where the device is: only at
    the edges of what is timed, never in a training step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        held += event.self_device_memory_usage if images.is_cuda else event.self_cpu_memory_usage
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


def device_name(device: torch.device) -> str:
    """What the run trained on, in words, for model cards: the GPU's name, or the CPU's (``platform.processor()`` is
    empty on Linux, so the kernel's model name line is read)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0]} ({torch.get_num_threads()} threads)" if names else device.type


def speed_settings(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
    """The run's settings that decide its speed, as ``metrics.json`` records them (but the matmul precision, which
    the first training batch reads: ``SpeedSettings.setup`` may set it)."""
    datamodule = trainer.datamodule
    data_hparams = getattr(datamodule, "hparams", None) or {}
    speed = speed_settings_of(trainer)
    return {
        "precision": str(trainer.precision),
        "data_on_device": bool(data_hparams.get("on_device", False)),
        **(speed.settings() if speed is not None else SPEED_DEFAULTS),
    }
