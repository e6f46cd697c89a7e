"""A real EfficientNet from timm, adapted to 1-channel 28×28 images (``configs/efficientnet.yaml``)."""

from typing import Any

import torch
import torch.nn.functional as F

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.networks.efficientnet import timm_efficientnet
from fmnist_lightning.registry import register_model
from fmnist_lightning.training import FashionMNISTClassifier


@register_model(
    "efficientnet",
    title="EfficientNet-B0 (timm)",
    summary="timm's EfficientNet-B0 with one input channel and a stride-1 stem for 28×28",
    parameters=4_061_798,
    configs=("configs/efficientnet.yaml",),
    weights=("efficientnet",),
)
class EfficientNet(FashionMNISTClassifier):
    """``networks.timm_efficientnet`` (EfficientNet-B0 by default, stem stride 1).

    Args:
        input_size: Upsample the 28×28 images to this size (bilinear) before the network, closer to the resolution
            ImageNet weights were trained at; with 112 or more, ``stem_stride: 2`` keeps the original stem.
        The others: ``networks.timm_efficientnet``'s.
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
        if input_size < 28:
            raise UserInputError(f"--model.init_args.input_size must be ≥ 28 (the images' size), got {input_size}")
        net = timm_efficientnet(model_name, drop_rate, drop_path_rate, stem_stride, pretrained, pretrained_path)
        super().__init__(net=net, **kwargs)
        self.input_size = input_size

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        images = super().preprocess(images)
        if self.input_size != 28:
            images = F.interpolate(images, size=self.input_size, mode="bilinear", align_corners=False)
        return images
