"""KerasAdam against keras.optimizers.Adam on the same parameters and gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from fmnist_lightning.training import KerasAdam

# KerasAdam against Keras's Adam, max abs weight difference (64×32 weights ~ N(0, 1), max |w| 3.9, where a float32
# ulp is 2.4e-7), measured here (Keras 3, torch backend, CPU): 1.19e-7 after 1 step and 2.38e-7 after 5 with ordinary
# gradients, 1.19e-7 and 4.77e-7 with gradients × 1e-6: one or two ulps of a weight. 1e-6 is 2.1× the largest of
# them and 8.4× the one-step figures. One wrong hyperparameter puts rows above it (measured, largest row: β₁ 0.8
# 3.8e-4, 5 steps (one step does not depend on β₁); β₂ 0.99 1.3e-3; ε 1e-8 2.5e-3, both with small gradients; lr × 1.01
# 5.0e-5, 5 steps; the smallest failing row is β₂ 0.99's 7.9e-6, ordinary gradients, 1 step): see
# test_each_wrong_hyperparameter_fails.
KERAS_ADAM_TOLERANCE = 1e-6


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


def weights_and_gradients(grad_scale: float) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    initial = rng.normal(size=(64, 32)).astype(np.float32)
    return initial, [(rng.normal(size=(64, 32)) * grad_scale).astype(np.float32) for _ in range(5)]


@pytest.mark.parametrize("grad_scale", [1.0, 1e-6], ids=["ordinary", "near-zero"])
def test_keras_adam_matches_keras_where_torch_adam_does_not(parity, grad_scale):
    initial, grads = weights_and_gradients(grad_scale)
    keras_after = [run_keras(initial, grads[:n], learning_rate=1e-3, epsilon=1e-7) for n in (1, 5)]
    ours = [run_torch(KerasAdam, initial, grads[:n], lr=1e-3, eps=1e-7) for n in (1, 5)]
    torchs = [run_torch(torch.optim.Adam, initial, grads[:n], lr=1e-3, eps=1e-7) for n in (1, 5)]
    gradients = f"gradients × {grad_scale:g}"
    for steps, keras_result, our_result, torch_result in zip((1, 5), keras_after, ours, torchs, strict=True):
        difference = np.abs(keras_result - our_result).max()
        check = f"KerasAdam vs keras Adam, same {gradients}, {steps} step(s)"
        parity("all models", check, difference, KERAS_ADAM_TOLERANCE)
        difference = np.abs(keras_result - torch_result).max()
        parity("all models", f"torch.optim.Adam vs keras Adam, same {gradients}, {steps} step(s)", difference, None)
    if grad_scale < 1:  # where ε matters, torch's placement of it is visibly different
        assert np.abs(keras_after[0] - torchs[0]).max() > 1e-5


@pytest.mark.parametrize(
    "wrong",
    [{"betas": (0.8, 0.999)}, {"betas": (0.9, 0.99)}, {"eps": 1e-8}, {"lr": 1.01e-3}],
    ids=["beta1 0.8", "beta2 0.99", "eps 1e-8", "lr x1.01"],
)
def test_each_wrong_hyperparameter_fails(wrong):
    """Negative control: KerasAdam with one hyperparameter off is far outside KERAS_ADAM_TOLERANCE in its worst row
    (measured: 50× for lr × 1.01, 380× to 2500× for the others)."""
    worst = 0.0
    for grad_scale in (1.0, 1e-6):
        initial, grads = weights_and_gradients(grad_scale)
        for steps in (1, 5):
            keras_result = run_keras(initial, grads[:steps], learning_rate=1e-3, epsilon=1e-7)
            ours = run_torch(KerasAdam, initial, grads[:steps], **{"lr": 1e-3, "eps": 1e-7, **wrong})
            worst = max(worst, np.abs(keras_result - ours).max())
    assert worst > 10 * KERAS_ADAM_TOLERANCE, f"{wrong}: only {worst:.3g} from Keras's Adam"


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


def test_keras_adam_defaults_are_keras_adams():
    """A config that names KerasAdam without a setting gets Keras's: its defaults are read from Keras's own Adam
    (lr 0.001, β 0.9 and 0.999, ε 1e-7; torch's Adam has ε 1e-8), not written out here."""
    keras_adam = keras.optimizers.Adam().get_config()
    ours = KerasAdam([torch.zeros(1, requires_grad=True)]).defaults
    assert ours["lr"] == pytest.approx(keras_adam["learning_rate"], rel=1e-7)
    assert ours["betas"] == (keras_adam["beta_1"], keras_adam["beta_2"])
    assert ours["eps"] == keras_adam["epsilon"]
