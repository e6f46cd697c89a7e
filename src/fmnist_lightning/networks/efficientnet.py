"""A real EfficientNet from timm, adapted to 1-channel 28×28 images."""

from pathlib import Path

import timm
from torch import nn

from fmnist_lightning.errors import UserInputError


def timm_efficientnet(
    model_name: str = "efficientnet_b0",
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.2,
    stem_stride: int = 1,
    pretrained: bool = False,
    pretrained_path: str | None = None,
) -> nn.Module:
    """timm's ``model_name`` (default EfficientNet-B0) with one input channel and ten classes.

    EfficientNet halves the resolution five times, built for 224×224; on 28×28 the last stage would see 1×1. The
    stem convolution therefore runs at ``stem_stride`` 1 (not 2), leaving a 2×2 final feature map. Any timm model
    works: the stem is the layer its ``pretrained_cfg['first_conv']`` names. With ImageNet weights (``pretrained``
    downloads them; ``pretrained_path`` reads a local file) timm sums the RGB stem filters into one channel
    (``in_chans=1``) and drops a classifier of the wrong size.
    """
    if pretrained_path is not None and not Path(pretrained_path).is_file():
        raise UserInputError(f"--model.init_args.pretrained_path {pretrained_path} is not a file")
    if not timm.is_model(model_name):
        raise UserInputError(f"unknown timm model '{model_name}'; see timm.list_models('efficientnet*')")
    net = timm.create_model(
        model_name,
        pretrained=pretrained or pretrained_path is not None,
        pretrained_cfg_overlay={"file": pretrained_path} if pretrained_path else None,
        in_chans=1,
        num_classes=10,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
    )
    stem = net.get_submodule(net.pretrained_cfg["first_conv"])
    stem.stride = (stem_stride, stem_stride)
    return net
