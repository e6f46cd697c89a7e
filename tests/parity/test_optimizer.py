"""KerasAdam against keras.optimizers.Adam on the same parameters and gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from fmnist_lightning.training import KerasAdam


def run_keras(initial: np.ndarray, grads: list[np.ndarray], **kwargs) -> np.ndarray:
    variable = keras.Variable(initial)
    optimizer = keras.optimizers.Adam(**kwargs)
    for grad in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(grad), variable)])
    return keras.ops.convert_to_numpy(variable)


def run_torch(optimizer_class: type, initial: np.ndarray, grads: list[np.ndarray], **kwargs) -> np.ndarray:
    param = torch.nn.Parameter(torch.from_numpy(initial.copy()))
    optimizer = optimizer_class([param], **kwargs)
    for grad in grads:
        param.grad = torch.from_numpy(grad)
        optimizer.step()
    return param.detach().numpy()


@pytest.mark.parametrize("grad_scale", [1.0, 1e-6], ids=["ordinary", "near-zero"])
def test_keras_adam_matches_keras_where_torch_adam_does_not(parity, grad_scale):
    rng = np.random.default_rng(0)
    initial = rng.normal(size=(64, 32)).astype(np.float32)
    grads = [(rng.normal(size=(64, 32)) * grad_scale).astype(np.float32) for _ in range(5)]
    keras_after = [run_keras(initial, grads[:n], learning_rate=1e-3, epsilon=1e-7) for n in (1, 5)]
    ours = [run_torch(KerasAdam, initial, grads[:n], lr=1e-3, eps=1e-7) for n in (1, 5)]
    torchs = [run_torch(torch.optim.Adam, initial, grads[:n], lr=1e-3, eps=1e-7) for n in (1, 5)]
    gradients = f"gradients × {grad_scale:g}"
    for steps, keras_result, our_result, torch_result in zip((1, 5), keras_after, ours, torchs, strict=True):
        difference = np.abs(keras_result - our_result).max()
        parity("all models", f"KerasAdam vs keras Adam, same {gradients}, {steps} step(s)", difference, 1e-6)
        difference = np.abs(keras_result - torch_result).max()
        parity("all models", f"torch.optim.Adam vs keras Adam, same {gradients}, {steps} step(s)", difference, None)
    if grad_scale < 1:  # where ε matters, torch's placement of it is visibly different
        assert np.abs(keras_after[0] - torchs[0]).max() > 1e-5


def test_keras_adam_state_survives_a_checkpoint():
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = KerasAdam([param])
    param.grad = torch.ones(3)
    optimizer.step()
    restored = KerasAdam([torch.nn.Parameter(param.detach().clone())])
    restored.load_state_dict(optimizer.state_dict())
    assert restored.state_dict()["state"][0]["step"] == 1
    torch.testing.assert_close(restored.state_dict()["state"][0]["v"], optimizer.state_dict()["state"][0]["v"])


def test_keras_adam_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="lr ≥ 0"):
        KerasAdam([torch.nn.Parameter(torch.ones(1))], lr=-1)


def test_keras_adam_steps_each_parameter_by_its_own_count():
    """Parameters without a gradient at some step keep their own step count, as separate optimizers would."""
    torch.manual_seed(0)
    together = [torch.nn.Parameter(torch.randn(4)) for _ in range(2)]
    apart = [torch.nn.Parameter(p.detach().clone()) for p in together]
    optimizer, separate = KerasAdam(together), [KerasAdam([p]) for p in apart]
    for step in range(3):
        grads = [torch.randn(4), torch.randn(4) if step else None]  # the second has no gradient at first
        for params in (together, apart):
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
        optimizer.step()
        for single in separate:
            single.step()
    for ours, reference in zip(together, apart, strict=True):
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    assert [optimizer.state[p]["step"] for p in together] == [3, 2]
