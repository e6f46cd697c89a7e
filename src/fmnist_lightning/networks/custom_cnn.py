"""The study's custom CNN (its third iteration, its best CNN): two conv/BN/pool stages, Dropout, Dense 128 + BN."""

from torch import nn

from fmnist_lightning.networks.keras_layers import BatchNorm, Dropout, MaxPooling2D, glorot_uniform_, he_uniform_


def custom_cnn(dropout: float = 0.4) -> nn.Sequential:
    """The study's Keras model, layer for layer (parameters: ``registry``; 448 of them BN running statistics)."""
    return nn.Sequential(
        he_uniform_(nn.Conv2d(1, 32, 3)),  # 32@26×26
        nn.ReLU(),
        BatchNorm(32),
        MaxPooling2D(),  # 32@13×13
        he_uniform_(nn.Conv2d(32, 64, 3)),  # 64@11×11
        nn.ReLU(),
        BatchNorm(64),
        MaxPooling2D(),  # 64@5×5
        nn.Flatten(),
        Dropout(dropout),
        he_uniform_(nn.Linear(64 * 5 * 5, 128)),
        nn.ReLU(),
        BatchNorm(128, dims=1),
        glorot_uniform_(nn.Linear(128, 10)),
    )
