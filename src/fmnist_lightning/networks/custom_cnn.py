"""The study's custom CNN (its third iteration, its best CNN): two conv/BN/pool stages, Dropout, Dense 128 + BN."""

from functools import partial

from torch import nn

from fmnist_lightning.networks.keras_layers import (
    BatchNorm,
    Dropout,
    MaxPooling2D,
    RunningVarUpdate,
    glorot_uniform_,
    he_uniform_,
)


def custom_cnn(dropout: float = 0.4, bn_running_var: RunningVarUpdate = "torch") -> nn.Sequential:
    """The study's Keras model, layer for layer (parameters: ``registry``; 448 of them BN running statistics).

    ``bn_running_var``: whether training updates the BatchNorms' running variance with the biased batch variance,
    as Keras does ("keras"), or the unbiased one, as torch does ("torch"): ``keras_layers.KerasRunningVar``.
    """
    batch_norm = partial(BatchNorm, running_var_update=bn_running_var)
    return nn.Sequential(
        he_uniform_(nn.Conv2d(1, 32, 3)),  # 32@26×26
        nn.ReLU(),
        batch_norm(32),
        MaxPooling2D(),  # 32@13×13
        he_uniform_(nn.Conv2d(32, 64, 3)),  # 64@11×11
        nn.ReLU(),
        batch_norm(64),
        MaxPooling2D(),  # 64@5×5
        nn.Flatten(),
        Dropout(dropout),
        he_uniform_(nn.Linear(64 * 5 * 5, 128)),
        nn.ReLU(),
        batch_norm(128, dims=1),
        glorot_uniform_(nn.Linear(128, 10)),
    )
