"""How fast a run trains, configured apart from what it trains: the ``SpeedSettings`` callback (``--speed.*``).

Channels-last memory, ``torch.compile``, what float32 matrix products may use on a GPU and the optimizer steps per
Lightning training step change how long a step takes, not which model is trained: they are not the model's
arguments, a checkpoint does not record them, and a recipe's run is found by ``--ckpt_path last`` whatever they
are. The study configs set them where they were measured to pay (docs/speed.md); a run without the callback trains
the same model, eagerly, in contiguous memory and one optimizer step per training step.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.training import multi_step

MATMUL_PRECISIONS = {"highest": "in float32", "high": "on TF32 tensor cores", "medium": "on bfloat16 tensor cores"}
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class SpeedSettings(L.Callback):
    """Applies the run's speed settings to the model's network when a stage starts.

    Args:
        channels_last: Train in channels-last memory (NHWC), faster for the convolutions on CPU and GPU. The
            study's batch norm keeps exact batch statistics in that layout (``ExactBatchNorm2d``), and so Keras
            parity.
        compile: ``torch.compile`` the network (``nn.Module.compile``: checkpoints keep their keys), with static
            shapes: one graph per input shape.
        compile_mode: torch.compile's ``mode`` with ``compile``: ``reduce-overhead`` replays each step's kernels as
            CUDA graphs (one launch instead of one per kernel), ``max-autotune`` autotunes; None: torch's default.
        float32_matmul_precision: What float32 matrix multiplications may use on a CUDA GPU
            (``torch.set_float32_matmul_precision``): ``high`` (TF32 tensor cores, as cuDNN's convolutions already
            do), ``medium`` (bfloat16) or ``highest`` (float32). A CPU run keeps float32, so CPU results and the
            Keras parity are exact whatever this says.
        steps_per_execution: Optimizer steps per Lightning training step (Keras's ``steps_per_execution``,
            ``training/multi_step.py``): the same batches, augmentation, updates, learning rates and weight
            averages as one at a time, with Lightning's own work per training step (~1.5 ms on a CPU, which
            Lightning cannot skip) shared by them: 18 % faster for LeNet-5 on a 2-core CPU (docs/speed.md). The
            model and data module need nothing for it: the fit trains on a loader of this many batches an item,
            split after the transfer, and the model's ``training_step`` is called on each. Lightning's counts that
            a user sets or reads count optimizer steps as with 1 (``global_step``, ``max_steps``,
            ``log_every_n_steps`` and the step axis in TensorBoard, checkpoints), but for ``val_check_interval``
            and ``limit_train_batches``, which count training steps (groups). Lightning's gradient clipping and
            accumulation do not combine with it.
    """

    def __init__(
        self,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: CompileMode | None = None,
        float32_matmul_precision: Literal["highest", "high", "medium"] = "high",
        steps_per_execution: int = 1,
    ) -> None:
        if compile_mode is not None and not compile:
            raise UserInputError(
                f"--speed.compile_mode {compile_mode} is a mode of torch.compile: add --speed.compile true"
            )
        if steps_per_execution < 1:
            raise UserInputError(f"--speed.steps_per_execution must be ≥ 1, got {steps_per_execution}")
        self.channels_last = channels_last
        self.compile = compile
        self.compile_mode = compile_mode
        self.float32_matmul_precision = float32_matmul_precision
        self.steps_per_execution = steps_per_execution
        self._compiled: set[int] = set()
        self._steps: multi_step.StepsPerExecution | None = None  # during a fit with steps_per_execution > 1

    def settings(self) -> dict[str, Any]:
        """What ``metrics.json`` records of them."""
        return {
            "channels_last": self.channels_last,
            "compile": self.compile,
            "compile_mode": self.compile_mode,
            "steps_per_execution": self.steps_per_execution,
        }

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # the model is still on the CPU here; the device it is going to decides the matmul precision
        use_float32_matmul_precision(self.float32_matmul_precision, trainer.strategy.root_device)
        self.apply(pl_module)
        if stage == "fit" and self.steps_per_execution > 1 and self._steps is None:
            # before Lightning asks for the training loader and the optimizers
            self._steps = multi_step.install(trainer, pl_module, self.steps_per_execution)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._steps is not None:
            self._steps.start(trainer, pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        multi_step.carry_step_count(trainer)  # after the checkpoint is restored, whatever this run's setting

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._steps is not None:
            self._steps.end_epoch(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._steps is not None:
            self._steps.remove()
            self._steps = None

    def apply(self, pl_module: L.LightningModule) -> None:
        """Channels-last memory and compilation on the model's network: ``setup`` without the matmul precision, for a
        model that runs outside a Trainer (the benchmarks' bare loops, the parity tests)."""
        net = pl_module.net
        if self.channels_last:  # idempotent: setup runs again for every Trainer stage
            net.to(memory_format=torch.channels_last)
        if self.compile and id(net) not in self._compiled:
            # one graph per input shape: fit meets a few (the summary's single image, the training and evaluation
            # batches, the epochs' last batches), and torch's default turns dynamic at the second shape, whose
            # kernels were ~5 % slower a step here (SeedEfficientNet: 14-18 % faster than eager against 8-10 %)
            net.compile(dynamic=False, mode=self.compile_mode)
            self._compiled.add(id(net))
            if self.compile_mode == "reduce-overhead":
                # a new step for the CUDA graphs before each forward of the model (not of the compiled network):
                # their outputs of the last step may be overwritten from here on, which torch cannot tell by itself
                pl_module.register_forward_pre_hook(lambda *_: torch.compiler.cudagraph_mark_step_begin())


def use_float32_matmul_precision(precision: str, device: torch.device) -> None:
    """``torch.set_float32_matmul_precision(precision)`` for a CUDA ``device``, said once (when it changes).

    A process-wide setting, so a CPU run leaves it alone. On CUDA, cuDNN's convolutions already use TF32 by torch's
    default; the line says so too.
    """
    if device.type != "cuda" or torch.get_float32_matmul_precision() == precision:
        return
    torch.set_float32_matmul_precision(precision)
    convolutions = "TF32" if torch.backends.cudnn.allow_tf32 else "float32"
    rank_zero_info(
        f"float32 on {torch.cuda.get_device_name(device)}: matmuls {MATMUL_PRECISIONS[precision]} "
        f"(--speed.float32_matmul_precision {precision}), convolutions {convolutions}"
    )


def speed_settings_of(trainer: L.Trainer) -> SpeedSettings | None:
    """The trainer's ``SpeedSettings`` callback, if it has one (the CLI always adds it: ``--speed.*``)."""
    return next((callback for callback in trainer.callbacks if isinstance(callback, SpeedSettings)), None)
