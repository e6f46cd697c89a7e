"""Keras's layer defaults, so each architecture file reads like the study's Keras code."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn


def glorot_uniform_(module: nn.Module) -> nn.Module:
    """Keras's default: glorot-uniform kernels and zero biases, for every conv and dense layer inside ``module``."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def he_uniform_(layer: nn.Conv2d | nn.Linear) -> nn.Conv2d | nn.Linear:
    """Keras ``kernel_initializer='he_uniform'``: U(±√(6 / fan_in)), zero bias."""
    nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class _ChannelsLastBatchNorm(torch.autograd.Function):
    """Training-mode batch norm of a channels-last CPU tensor, with exact batch statistics.

    Torch's CPU batch-norm kernel for channels-last memory sums in a way that leaves its batch statistics ~1e-4 from
    a float64 reference, where its contiguous kernel (and Keras) stay within 5e-7 (tests/test_models.py). Here the
    statistics are two reductions over the (N·H·W, C) view of the same memory, mean first, then the squared
    deviations; torch's own kernels normalise with them (its eval-mode form) and take the backward pass.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> Any:
        rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # a view: channels-last memory is NHWC
        mean = rows.sum(dim=0) / len(rows)
        var = (rows - mean).square_().sum(dim=0) / len(rows)
        output = torch.native_batch_norm(x, weight, bias, mean, var, False, 0.0, eps)[0]
        ctx.save_for_backward(x, weight, mean, torch.rsqrt(var + eps))
        ctx.eps = eps
        return output, mean, var

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *_: Any) -> Any:
        x, weight, mean, invstd = ctx.saved_tensors
        grads = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, None, None, mean, invstd, True, ctx.eps, [True, True, True]
        )
        return *grads, None


RunningVarUpdate = Literal["keras", "torch"]


class KerasRunningVar(nn.modules.batchnorm._BatchNorm):
    """A torch BatchNorm whose training updates ``running_var`` with Keras's or torch's estimate of the batch variance.

    ``running_var_update`` "keras": the biased batch variance (÷ n, n = batch × height × width values per channel),
    as Keras's ``BatchNormalization`` updates its moving variance; "torch": the unbiased one (÷ (n − 1)), as torch
    does. Only training's update of ``running_var`` differs: both normalise a training batch with its biased
    variance, and evaluation uses ``running_var`` as it stands, so a checkpoint evaluates the same under either.
    Torch's running variance comes out larger by up to n/(n − 1): 1.03 for the custom CNN's last BatchNorm (n = 32).

    "keras" uses torch's own kernel, on stand-in statistics it overwrites (momentum 1), and then moves the running
    statistics itself: exact to a float rounding of the batch variance, at no extra pass over the batch.
    """

    running_var_update: RunningVarUpdate = "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.running_var_update == "torch" or not (self.training and self.track_running_stats):
            return super().forward(x)
        self._check_input_dim(x)
        mean, var = torch.zeros_like(self.running_mean), torch.ones_like(self.running_var)
        output = F.batch_norm(x, mean, var, self.weight, self.bias, True, 1.0, self.eps)  # mean, var := the batch's
        count = x.numel() // x.shape[1]
        self.update_running_stats(mean, var * ((count - 1) / count), count)  # torch's unbiased variance, de-biased
        return output

    @torch.no_grad()
    def update_running_stats(self, mean: torch.Tensor, biased_var: torch.Tensor, count: int) -> None:
        """Torch's update (its momentum, or a cumulative average when None: ``swa_utils.update_bn``) with the batch's
        biased variance, or its unbiased one where ``running_var_update`` is "torch"; ``count`` values per channel."""
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
        var = biased_var if self.running_var_update == "keras" else biased_var * (count / (count - 1))
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(var, factor)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, running_var_update={self.running_var_update}"


class KerasBatchNorm1d(KerasRunningVar, nn.BatchNorm1d):
    """BatchNorm1d with the choice of running-variance update (``KerasRunningVar``)."""


class ExactBatchNorm2d(KerasRunningVar, nn.BatchNorm2d):
    """BatchNorm2d with exact batch statistics for channels-last input on CPU, and the choice of running-variance
    update (``KerasRunningVar``).

    Images that were NHWC arrays (Keras's layout) permuted to NCHW have channels-last strides, and every conv after
    them returns channels-last memory, as does the ``channels_last`` speed setting. Torch's CPU kernel for that
    layout is inexact in training (see ``_ChannelsLastBatchNorm``), so training-mode batch norm of such input goes
    through exact statistics instead, in the same memory; anything else is torch's own.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        exact_needed = (
            self.training
            and x.device.type == "cpu"
            and x.dim() == 4
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        )
        if not exact_needed:
            return super().forward(x)
        if not (self.affine and self.track_running_stats and self.momentum is not None):
            return super().forward(x.contiguous())  # update_bn's cumulative average too: this kernel is exact
        output, mean, var = _ChannelsLastBatchNorm.apply(x, self.weight, self.bias, self.eps)
        self.update_running_stats(mean, var, x.numel() // x.shape[1])
        return output


def _pool_windows(x: torch.Tensor) -> torch.Tensor:
    """The 2×2 windows of an N×C×H×W tensor as an N×C×(H/2)×2×(W/2)×2 view; an odd last row or column is left out
    ('valid' pooling)."""
    height, width = x.shape[-2] // 2, x.shape[-1] // 2
    return x[..., : 2 * height, : 2 * width].unflatten(2, (height, 2)).unflatten(4, (width, 2))


class _WindowMax(torch.autograd.Function):
    """2×2, stride-2 max pooling with torch's gradient (all of it to each window's first maximum, row-major), in
    element-wise operations that inductor fuses with the batch norm and ReLU around it.

    Hand-written because inductor compiles ``max_pool2d``'s backward to a scatter over NCHW-ordered buffers, and for
    the custom CNN's channels-last activations that cost layout shuffles and extra passes over 2.8 MB a step: with
    this, its compiled training step was 1.11× and 1.17× as fast in two A/Bs (docs/speed.md).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        pooled = _pool_windows(x).amax(dim=(3, 5))
        ctx.save_for_backward(x, pooled)
        return pooled

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, pooled = ctx.saved_tensors
        windows = _pool_windows(x)
        top_left, top_right, bottom_left, bottom_right = (
            windows[:, :, :, row, :, column] == pooled for row in (0, 1) for column in (0, 1)
        )
        first = (
            top_left,
            top_right & ~top_left,
            bottom_left & ~(top_left | top_right),
            bottom_right & ~(top_left | top_right | bottom_left),
        )
        top, bottom = (
            torch.stack([torch.where(is_first, grad, 0.0) for is_first in pair], dim=-1).flatten(-2)
            for pair in (first[:2], first[2:])
        )
        pooled_grad = torch.stack((top, bottom), dim=3).flatten(2, 3)  # N×C×2h×2w
        return F.pad(pooled_grad, (0, x.shape[-1] - pooled_grad.shape[-1], 0, x.shape[-2] - pooled_grad.shape[-2]))


class MaxPooling2D(nn.MaxPool2d):
    """Keras's ``MaxPooling2D()``: 2×2 windows, stride 2, 'valid'. Torch's own kernel, except in a compiled training
    step, where ``_WindowMax`` gives the same values and gradients in a form inductor fuses."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() and x.requires_grad and x.dim() == 4:
            return _WindowMax.apply(x)
        return super().forward(x)


class Dropout(nn.Dropout):
    """Keras's ``Dropout``: keeps a value where a uniform draw is ≥ the rate, and scales what it keeps by
    1 / (1 − rate). Torch's has the same distribution but draws with ``bernoulli_``, which on a CPU takes 1 ms for
    the custom CNN's batch of 32 × 1,600 features, 4 % of its training step; ``rand`` takes a third of that."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        scale = 1 / (1 - self.p) if self.p < 1 else 0.0
        return x * (torch.rand_like(x) >= self.p) * scale


def BatchNorm(
    num_features: int, dims: int = 2, running_var_update: RunningVarUpdate = "torch"
) -> KerasBatchNorm1d | ExactBatchNorm2d:
    """Keras ``BatchNormalization()``: epsilon 1e-3, momentum 0.99 (torch's momentum is 1 − Keras's); its running
    variance updated with the biased batch variance as Keras's, or the unbiased one as torch's (``KerasRunningVar``)."""
    if running_var_update not in ("keras", "torch"):
        raise ValueError(f"running_var_update: 'keras' or 'torch', got {running_var_update!r}")
    norm = (ExactBatchNorm2d if dims == 2 else KerasBatchNorm1d)(num_features, eps=1e-3, momentum=0.01)
    norm.running_var_update = running_var_update
    return norm
