"""Adam and RMSprop in Keras's form, so the study's recipes train step for step like the Keras originals."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch


def _loss_of(closure: Callable[[], float] | None) -> float | None:
    """The loss of an optimizer step's closure, computed with gradients on (torch's optimizers' convention)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class KerasAdam(torch.optim.Optimizer):
    """Adam as ``keras.optimizers.Adam`` computes it (defaults: lr 1e-3, betas 0.9/0.999, eps 1e-7).

    Hand-written because torch has no such option: ``torch.optim.Adam`` adds ``eps`` to the bias-corrected
    √v̂, while Keras adds it to the raw √v and folds both bias corrections into the step size,
    ``lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m/(√v + ε)``. With ε = 1e-7 the two differ by ~1e-3 after one step, so
    ``torch.optim.Adam`` cannot reproduce a Keras run.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
    ) -> None:
        if lr < 0 or eps < 0 or not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"KerasAdam needs lr ≥ 0, eps ≥ 0 and betas in [0, 1), got {lr=}, {eps=}, {betas=}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = _loss_of(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            by_step: dict[int, list[torch.Tensor]] = defaultdict(list)  # normally one step count for all
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(param)
                    state["v"] = torch.zeros_like(param)
                state["step"] += 1
                by_step[state["step"]].append(param)
            for t, params in by_step.items():
                # the same element-wise arithmetic as Keras's Adam, one foreach kernel per operation for all the
                # tensors (torch.optim's own multi-tensor path) instead of a Python loop of small kernels
                grads = [param.grad for param in params]
                ms = [self.state[param]["m"] for param in params]
                vs = [self.state[param]["v"] for param in params]
                # m += (g − m)(1 − β₁), v += (g² − v)(1 − β₂): lerp is that formula, in one kernel instead of three
                torch._foreach_lerp_(ms, grads, 1 - beta1)
                torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1 - beta2)
                denominators = torch._foreach_sqrt(vs)
                torch._foreach_add_(denominators, group["eps"])
                alpha = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                torch._foreach_addcdiv_(params, ms, denominators, value=-alpha)
        return loss


class KerasRMSprop(torch.optim.Optimizer):
    """RMSprop as ``keras.optimizers.RMSprop`` computes it (defaults: lr 1e-3, rho 0.9, epsilon 1e-7; its default
    momentum 0 and centered False are the only ones here): the study's grid search compiled with ``'rmsprop'``.

    Hand-written because torch has no such option: ``torch.optim.RMSprop`` divides the gradient by √v + ε, Keras by
    √(v + ε). With ε = 1e-7 Keras's denominator never falls below 3.2e-4, so for gradients under ~1e-3 the two steps
    differ several-fold (5 steps on gradients of 1e-6 to 1e-1: 9e-3 apart, the size of the steps themselves).
    """

    def __init__(
        self, params: Iterable[torch.Tensor] | Iterable[dict], lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-7
    ) -> None:
        if lr < 0 or eps < 0 or not 0 <= rho < 1:
            raise ValueError(f"KerasRMSprop needs lr ≥ 0, eps ≥ 0 and rho in [0, 1), got {lr=}, {eps=}, {rho=}")
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = _loss_of(closure)
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            grads = [param.grad for param in params]
            vs = [self.state[param].setdefault("v", torch.zeros_like(param)) for param in params]
            # v = ρv + (1 − ρ)g², as lerp (KerasAdam's form); then x −= lr·g/√(v + ε), one foreach kernel each
            torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1 - group["rho"])
            denominators = torch._foreach_add(vs, group["eps"])
            torch._foreach_sqrt_(denominators)
            torch._foreach_addcdiv_(params, grads, denominators, value=-group["lr"])
        return loss
