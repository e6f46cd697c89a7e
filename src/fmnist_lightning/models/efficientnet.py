"""A real EfficientNet from timm, adapted to 1-channel 28×28 images."""

from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.models.base import FashionMNISTClassifier


class EfficientNet(FashionMNISTClassifier):
    """timm's ``model_name`` (default EfficientNet-B0) with one input channel and ten classes.

    EfficientNet halves the resolution five times, built for 224×224; on 28×28 the last stage would see 1×1. The
    stem convolution therefore runs at ``stem_stride`` 1 (not 2), leaving a 2×2 final feature map. Any timm model
    works: the stem is the layer its ``pretrained_cfg['first_conv']`` names.

    Args:
        pretrained: Start from timm's ImageNet weights for ``model_name`` (downloaded by timm; needs a network).
        pretrained_path: A local timm/ImageNet checkpoint to start from (no network). Either way timm sums the RGB
            stem filters into one channel (``in_chans=1``) and drops a classifier of the wrong size.
        input_size: Upsample the 28×28 images to this size (bilinear) before the network, closer to the resolution
            ImageNet weights were trained at; with 112 or more, ``stem_stride: 2`` keeps the original stem.
    """

    def __init__(
        self,
        model_name: str = "efficientnet_b0",
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.2,
        stem_stride: int = 1,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        input_size: int = 28,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if input_size < 28:
            raise UserInputError(f"--model.init_args.input_size must be ≥ 28 (the images' size), got {input_size}")
        if pretrained_path is not None and not Path(pretrained_path).is_file():
            raise UserInputError(f"--model.init_args.pretrained_path {pretrained_path} is not a file")
        if not timm.is_model(model_name):
            raise UserInputError(f"unknown timm model '{model_name}'; see timm.list_models('efficientnet*')")
        self.net = timm.create_model(
            model_name,
            pretrained=pretrained or pretrained_path is not None,
            pretrained_cfg_overlay={"file": pretrained_path} if pretrained_path else None,
            in_chans=1,
            num_classes=10,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
        )
        stem = self.net.get_submodule(self.net.pretrained_cfg["first_conv"])
        stem.stride = (stem_stride, stem_stride)
        self.input_size = input_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_size != 28:
            images = F.interpolate(images, size=self.input_size, mode="bilinear", align_corners=False)
        return self.net(images)
