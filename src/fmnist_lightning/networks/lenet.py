"""LeNet-5 as the study defined it in Keras (tanh activations, max pooling, 'same' first convolution)."""

from torch import nn

from fmnist_lightning.networks.keras_layers import glorot_uniform_


def lenet5() -> nn.Sequential:
    """The study's Keras model, layer for layer (parameters: ``registry``). Keras defaults throughout:
    glorot-uniform kernels, zero biases."""
    return glorot_uniform_(
        nn.Sequential(
            nn.Conv2d(1, 6, 5, padding="same"),  # C1: 6@28×28
            nn.Tanh(),
            nn.MaxPool2d(2),  # S2: 6@14×14
            nn.Conv2d(6, 16, 5),  # C3: 16@10×10
            nn.Tanh(),
            nn.MaxPool2d(2),  # S4: 16@5×5
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),  # C5
            nn.Tanh(),
            nn.Linear(120, 84),  # F6
            nn.Tanh(),
            nn.Linear(84, 10),  # output; the softmax is in the loss
        )
    )
