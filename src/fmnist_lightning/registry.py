"""The models by name, each with its facts: one source for ``models``, ``compare``, ``cv``, the README and the cards.

Like timm's registry (``register_model``, ``create_model``, ``list_models``) and torchvision's weights metadata:
every model has a short name, the class path that configs and checkpoints use, its parameter count in Keras's
convention (``count_params()``: BatchNorm's running statistics included), its recipes and published weights, and
for the study's four the study's own figure and protocol (``fmnist_lightning.study``).

This module imports nothing heavy, so ``python -m fmnist_lightning models`` answers without loading torch; the
classes are imported only when a model is built (``create_model``) or a checkpoint names one (``model_class``).
The project's own models are listed in ``BUILTIN`` below and their classes carry ``@register_model("<name>")``,
which checks that the two agree; a model of your own is one file whose class carries ``@register_model`` with its
facts (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.study import STUDY_RESULTS, StudyResult

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class ModelInfo:
    """One registered model and its facts."""

    name: str  # the registry name: `create_model("lenet")`
    class_path: str  # what configs (`model.class_path`) and checkpoints (`_class_path`) record
    title: str
    summary: str
    parameters: int  # Keras's count_params() of the default build (tests/test_registry.py builds and counts)
    configs: tuple[str, ...] = ()  # its recipes under configs/
    weights: tuple[str, ...] = ()  # its published files: weights/<name>.ckpt with the card weights/<name>.md
    study: StudyResult | None = None  # the study's figure, for the study's four
    aliases: tuple[str, ...] = field(default=())  # earlier class paths that checkpoints may still record

    @property
    def class_name(self) -> str:
        return self.class_path.rpartition(".")[2]


BUILTIN: tuple[ModelInfo, ...] = (
    ModelInfo(
        "lenet",
        "fmnist_lightning.models.LeNet5",
        "LeNet-5",
        "the study's LeNet-5: tanh, max pooling, a 'same' first convolution",
        61_706,
        configs=("configs/lenet.yaml",),
        weights=("lenet", "lenet_plus"),
        study=STUDY_RESULTS["lenet"],
    ),
    ModelInfo(
        "brownlee",
        "fmnist_lightning.models.BrownleeCNN",
        "Brownlee's CNN",
        "Jason Brownlee's tutorial CNN as the study ran it (average pooling)",
        542_230,
        configs=("configs/brownlee.yaml",),
        weights=("brownlee", "brownlee_plus"),
        study=STUDY_RESULTS["brownlee"],
    ),
    ModelInfo(
        "custom_cnn",
        "fmnist_lightning.models.CustomCNN",
        "the study's custom CNN",
        "two conv/BN/pool stages, dropout, Dense 128 + BN (the study's third iteration)",
        225_930,
        configs=("configs/custom_cnn.yaml",),
        weights=("custom_cnn", "custom_cnn_plus"),
        study=STUDY_RESULTS["custom_cnn"],
    ),
    ModelInfo(
        "seed_efficientnet",
        "fmnist_lightning.models.SeedEfficientNet",
        'the study\'s "EfficientNet"',
        "a MobileNet-v1-style stack of depthwise-separable convolutions with swish",
        321_418,
        configs=("configs/seed_efficientnet.yaml",),
        weights=("seed_efficientnet", "seed_efficientnet_plus"),
        study=STUDY_RESULTS["seed_efficientnet"],
    ),
    ModelInfo(
        "efficientnet",
        "fmnist_lightning.models.EfficientNet",
        "EfficientNet-B0 (timm)",
        "timm's EfficientNet-B0 with one input channel and a stride-1 stem for 28×28",
        4_061_798,
        configs=("configs/efficientnet.yaml",),
        weights=("efficientnet",),
    ),
    ModelInfo(
        "fast_cnn",
        "fmnist_lightning.models.FastCNN",
        "FastCNN",
        "a small CNN built for time to accuracy on a CPU",
        174_938,
        configs=("configs/fast.yaml", "configs/fast93.yaml"),
        weights=("fast", "fast93"),
    ),
    ModelInfo(
        "wide_resnet",
        "fmnist_lightning.models.WideResNet",
        "Wide ResNet",
        "WRN-depth-k, the CIFAR design (WRN-16-2 by default)",
        693_210,
        configs=("configs/best.yaml",),
        weights=("best",),
    ),
)

_REGISTRY: dict[str, ModelInfo] = {info.name: info for info in BUILTIN}
_CLASSES: dict[str, type] = {}  # name → class, once imported or registered


def register_model(name: str, **facts: Any) -> Callable[[T], T]:
    """Class decorator: registers a LightningModule under ``name``.

    For the project's own models (``BUILTIN``) the name alone links the class to its facts, and the class path must
    be the recorded one. Any other model gives its facts here: ``title``, ``summary``, ``parameters`` (Keras's
    count of the default build) and optionally ``configs``, ``weights``, ``study``.
    """

    def decorate(cls: T) -> T:
        class_path = f"{cls.__module__}.{cls.__qualname__}"
        known = _REGISTRY.get(name)
        if known is not None and name in {info.name for info in BUILTIN}:
            public_path = f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__qualname__}"
            if known.class_path not in (class_path, public_path) or facts:
                raise ValueError(f"register_model({name!r}): the project's own model is {known.class_path}")
        else:
            facts.setdefault("title", cls.__qualname__)
            facts.setdefault("summary", (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
            if "parameters" not in facts:
                raise ValueError(f"register_model({name!r}) needs parameters= (Keras's count of the default build)")
            _REGISTRY[name] = ModelInfo(name, class_path, **facts)
        _CLASSES[name] = cls
        return cls

    return decorate


def list_models() -> list[ModelInfo]:
    """Every registered model: the project's in their order, then those registered since."""
    return list(_REGISTRY.values())


def get_model_info(name_or_class_path: str) -> ModelInfo:
    """A model by registry name, class name or class path (an alias of an earlier path included)."""
    for info in _REGISTRY.values():
        if name_or_class_path in (info.name, info.class_path, info.class_name, *info.aliases):
            return info
    names = ", ".join(_REGISTRY)
    raise UserInputError(f"unknown model {name_or_class_path!r}; the registered models are {names}")


def model_class(name_or_class_path: str) -> type:
    """The registered class, imported on first use. Checkpoints are only ever built through this: a class path that
    is not registered is refused, so a file cannot make the project instantiate anything else."""
    info = get_model_info(name_or_class_path)
    if info.name not in _CLASSES:
        module, _, class_name = info.class_path.rpartition(".")
        importlib.import_module(module)  # its @register_model fills _CLASSES
        _CLASSES.setdefault(info.name, getattr(importlib.import_module(module), class_name))
    return _CLASSES[info.name]


def create_model(name: str, **kwargs: Any) -> Any:
    """A new model by registry name, e.g. ``create_model("custom_cnn", dropout=0.5)``."""
    return model_class(name)(**kwargs)
