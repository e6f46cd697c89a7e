"""Loss: the project's cross-entropy on logits against Keras's categorical cross-entropy on softmax probabilities.

Given probabilities, Keras clips them to [1e-7, 1 − 1e-7] before the log, so its loss never exceeds
−log(1e-7) ≈ 16.118 nor falls below −log(1 − 1e-7) ≈ 1.2e-7, and where the clip binds its gradient is zero: a
confidently wrong prediction stops being corrected. The project computes log-softmax from the logits, which needs
no clip. On the TensorFlow backend a tensor that comes straight from Keras's softmax carries its logits and Keras
takes the loss from them, as the study's TF training did; probabilities that went through NumPy (the comparison
here, on every backend) or any probabilities on the torch and JAX backends are clipped.
"""

from __future__ import annotations

import keras
import numpy as np
import torch
import torch.nn.functional as F

from fmnist_lightning.models import LeNet5

KERAS_EPSILON = 1e-7
NUM_CLASSES = 10


def keras_loss(logits: torch.Tensor, targets: torch.Tensor, via_numpy: bool = True) -> np.ndarray:
    """Per-sample Keras loss of the study's model output: softmax probabilities, then categorical_crossentropy.

    ``via_numpy=False`` hands Keras its own softmax tensor, from which the TensorFlow backend recovers the logits.
    """
    probabilities = keras.ops.softmax(logits.numpy())
    if via_numpy:
        probabilities = keras.ops.convert_to_numpy(probabilities)
    return keras.ops.convert_to_numpy(keras.losses.categorical_crossentropy(targets.numpy(), probabilities))


def our_loss(logits: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    return LeNet5().loss(logits, targets, reduction="none").detach().numpy()


def exact_loss(logits: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """The float64 reference, log(1 + Σ_{j≠y} exp(z_j − z_y)) with log1p: exact even where the loss is ~1e-17."""
    logits = logits.double()
    others = (logits - logits.gather(1, targets.argmax(1, keepdim=True))).exp().masked_fill(targets.bool(), 0)
    return others.sum(1).log1p().numpy()


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    return F.one_hot(labels, NUM_CLASSES).float()


def test_loss_equals_keras_on_ordinary_logits(parity):
    """Standard-normal logits: losses up to 6.5, where one float32 ulp is 4.8e-7, so 1e-6 allows two ulps."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4096, NUM_CLASSES, generator=generator)
    targets = one_hot(torch.randint(NUM_CLASSES, (4096,), generator=generator))
    true_class = (logits.softmax(1) * targets).sum(1)  # only its log enters the loss
    assert true_class.min() > KERAS_EPSILON and true_class.max() < 1 - KERAS_EPSILON
    ours, theirs, exact = our_loss(logits, targets), keras_loss(logits, targets), exact_loss(logits, targets)
    parity("all models", "loss: max |ours − Keras| per sample, ordinary logits", np.abs(ours - theirs).max(), 1e-6)
    parity("all models", "loss: max |ours − float64| per sample, ordinary logits", np.abs(ours - exact).max(), 1e-6)
    parity("all models", "loss: max |Keras − float64| per sample, ordinary logits", np.abs(theirs - exact).max(), None)


def saturated_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose true-class probability is below 1e-7 (confidently wrong) or within 1e-7 of 1 (confidently right)."""
    margins = torch.tensor([-40.0, -30.0, -20.0, 20.0, 30.0, 40.0])
    logits = torch.zeros(len(margins), NUM_CLASSES)
    logits[:, 0] = margins  # class 0 is the true class
    return logits, one_hot(torch.zeros(len(margins), dtype=torch.long))


def test_where_keras_clips_ours_stays_exact(parity):
    logits, targets = saturated_logits()
    exact, ours, theirs = exact_loss(logits, targets), our_loss(logits, targets), keras_loss(logits, targets)
    wrong = logits[:, 0] < 0
    # Keras: the clip caps the loss of a confidently wrong prediction and floors that of a right one
    assert np.allclose(theirs[wrong], -np.log(KERAS_EPSILON), rtol=1e-6)
    assert np.all(theirs[~wrong] >= KERAS_EPSILON)
    for name, error in (("ours", np.abs(ours - exact)), ("Keras's", np.abs(theirs - exact))):
        tolerances = (1e-6, 1e-7) if name == "ours" else (None, None)  # Keras's are reported beside ours
        parity("all models", f"loss: {name} max relative error vs float64 where p(true) < 1e-7",
               (error / exact)[wrong].max(), tolerances[0])  # fmt: skip
        parity("all models", f"loss: {name} max abs error vs float64 where p(true) > 1 − 1e-7",
               error[~wrong].max(), tolerances[1])  # fmt: skip
    softmax_tensor = np.abs(keras_loss(logits, targets, via_numpy=False) - exact) / exact
    backend = keras.backend.backend()
    parity("all models", f"loss: Keras's max relative error where p(true) < 1e-7, given its softmax tensor ({backend})",
           softmax_tensor[wrong].max(), None)  # fmt: skip


def test_where_keras_clips_its_gradient_vanishes(parity):
    """Raising the true-class logit of a confidently wrong row by 1: exactly −1 change in loss, Keras's 0."""
    logits, targets = saturated_logits()
    wrong = logits[:, 0] < 0
    nudged = logits.clone()
    nudged[:, 0] += 1
    ours = our_loss(nudged, targets)[wrong] - our_loss(logits, targets)[wrong]
    theirs = keras_loss(nudged, targets)[wrong] - keras_loss(logits, targets)[wrong]
    assert np.all(theirs == 0), "Keras's clipped loss should be flat where the true-class probability is < 1e-7"
    change = np.abs(ours + 1).max()
    parity("all models", "loss: max |change + 1| when a wrong row's true logit rises by 1", change, 1e-6)
