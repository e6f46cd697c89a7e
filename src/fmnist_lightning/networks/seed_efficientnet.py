"""The study's "EfficientNet": in fact a MobileNet-v1-style stack of depthwise-separable convolutions."""

from timm.layers import create_conv2d
from torch import nn

from fmnist_lightning.networks.keras_layers import BatchNorm, RunningVarUpdate, glorot_uniform_

# (filters, stride) of the five depthwise-separable blocks; spatial size 14 → 14 → 7 → 4 → 4 → 2.
BLOCKS = ((64, 1), (128, 2), (256, 2), (256, 1), (512, 2))


def conv_bn_swish(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    depthwise: bool = False,
    bn_running_var: RunningVarUpdate = "torch",
) -> list[nn.Module]:
    """Keras ``Conv2D``/``DepthwiseConv2D(padding='same', use_bias=False)`` → BN → swish.

    timm's ``padding='same'`` pads like TensorFlow: with stride 2 on an even input, 0 before and 1 after.
    """
    conv = create_conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding="same", depthwise=depthwise, bias=False
    )
    return [conv, BatchNorm(out_channels, running_var_update=bn_running_var), nn.SiLU()]


def seed_efficientnet(bn_running_var: RunningVarUpdate = "torch") -> nn.Sequential:
    """The study's Keras model, layer for layer (parameters: ``registry``; 3,968 of them BN running statistics).

    ``bn_running_var``: whether training updates the BatchNorms' running variance with the biased batch variance,
    as Keras does ("keras"), or the unbiased one, as torch does ("torch"): ``keras_layers.KerasRunningVar``.
    """
    layers = conv_bn_swish(1, 32, 3, stride=2, bn_running_var=bn_running_var)  # stem: 32@14×14
    in_channels = 32
    for filters, stride in BLOCKS:
        layers += conv_bn_swish(in_channels, in_channels, 3, stride, depthwise=True, bn_running_var=bn_running_var)
        layers += conv_bn_swish(in_channels, filters, 1, bn_running_var=bn_running_var)
        in_channels = filters
    layers += [
        nn.AdaptiveAvgPool2d(1),  # GlobalAveragePooling2D
        nn.Flatten(),
        nn.Linear(512, 128),
        nn.SiLU(),
        nn.Linear(128, 10),
    ]
    return glorot_uniform_(nn.Sequential(*layers))
