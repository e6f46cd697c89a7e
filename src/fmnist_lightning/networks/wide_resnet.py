"""A wide ResNet (Zagoruyko & Komodakis, 2016), the family of the best published Fashion-MNIST single models.

Written here because timm's ResNets are the ImageNet design (a 7×7 stride-2 stem and a max-pool that would leave
7×7 of a 28×28 image before the first block); this is the CIFAR design: a 3×3 stem at full resolution and three
stages of pre-activation blocks at 28, 14 and 7 pixels.
"""

from torch import Tensor, nn

from fmnist_lightning.errors import UserInputError


class WideBlock(nn.Module):
    """BN → ReLU → 3×3 conv → dropout → BN → ReLU → 3×3 conv, plus the input (through a 1×1 conv where the block
    changes width or resolution, taken after the first BN → ReLU as in the paper's code)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.preactivation = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True))
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        )
        same_shape = in_channels == out_channels and stride == 1
        self.shortcut = None if same_shape else nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.preactivation(x)
        return self.residual(activated) + (x if self.shortcut is None else self.shortcut(activated))


def stage(in_channels: int, out_channels: int, blocks: int, stride: int, dropout: float) -> list[WideBlock]:
    """``blocks`` blocks; the first changes the width and (with ``stride`` 2) halves the resolution."""
    return [
        WideBlock(in_channels if first else out_channels, out_channels, stride if first else 1, dropout)
        for first in [True] + [False] * (blocks - 1)
    ]


def wide_resnet(depth: int = 16, widen_factor: int = 2, dropout: float = 0.0) -> nn.Sequential:
    """WRN-``depth``-``widen_factor``: (depth − 4) / 6 blocks per stage, widths 16·k, 32·k, 64·k.

    WRN-16-2 trains at ~130 images/s on a 2-core CPU, WRN-16-4 at ~35 and WRN-28-10 (the
    published 96 % model) needs a GPU.
    """
    if depth < 10 or (depth - 4) % 6:
        raise UserInputError(f"--model.init_args.depth must be 6·n + 4 with n ≥ 1 (10, 16, 22, 28, …), got {depth}")
    if widen_factor < 1:
        raise UserInputError(f"--model.init_args.widen_factor must be ≥ 1, got {widen_factor}")
    blocks, k = (depth - 4) // 6, widen_factor
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),  # 16@28×28
        *stage(16, 16 * k, blocks, 1, dropout),  # 16k@28×28
        *stage(16 * k, 32 * k, blocks, 2, dropout),  # 32k@14×14
        *stage(32 * k, 64 * k, blocks, 2, dropout),  # 64k@7×7
        nn.BatchNorm2d(64 * k),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64 * k, 10),
    )
    for layer in net.modules():  # the paper's initialisation (as torchvision's ResNets)
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.Linear):
            nn.init.zeros_(layer.bias)
    return net
