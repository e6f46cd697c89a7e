"""The models by name, each with its facts: one source for ``models``, ``compare``, ``cv``, the README and the cards.

Like timm's registry (``register_model``, ``create_model``, ``list_models``) and torchvision's weights metadata:
every model has a short name, the class path that configs and checkpoints use, its parameter count in Keras's
convention (``count_params()``: BatchNorm's running statistics included), its recipes and published weights, and
for the study's four the study's own figure and protocol.

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

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class KerasCall:
    """A call of the study's notebook: the class (Keras's, or scikit-learn's KFold) and its arguments, as pairs: the
    study's own and the class defaults it left in force that decide what it does, named again in ``defaults``
    (tests/parity/test_recipe_parity.py checks them against the installed Keras, and all against the configs)."""

    name: str  # e.g. "keras.optimizers.SGD"
    args: tuple[tuple[str, Any], ...] = ()
    defaults: tuple[str, ...] = ()  # which of ``args`` the study's call left to the class

    kwargs = property(lambda self: dict(self.args))
    class_name = property(lambda self: self.name.rpartition(".")[2])


def _call(name: str, written: dict[str, Any], defaults: dict[str, Any] | None = None) -> KerasCall:
    return KerasCall(name, tuple({**written, **(defaults or {})}.items()), tuple(defaults or ()))


@dataclass(frozen=True)
class DropoutAt:
    rate: float
    after: str  # its neighbours in the study's layer table: "Flatten", "Dense 128"
    before: str


@dataclass(frozen=True)
class StudyRecipe:
    """How the study trained one of its models, fact by fact, as ../shared/STUDY.md states it; checked against the
    model's config by tests/parity/test_recipe_parity.py and test_layer_parity.py."""

    batch_size: int
    epochs: int  # all of them, or at most, with an EarlyStopping among the callbacks
    optimizer: KerasCall
    validation: str  # "test": the test set as fit's validation_data; "kfold": each fold of ``folds`` in turn
    folds: KerasCall | None = None
    dropout: tuple[DropoutAt, ...] = ()  # every Dropout layer, in order
    callbacks: tuple[KerasCall, ...] = ()
    augmentation: KerasCall | None = None  # the ImageDataGenerator of the training images
    preprocessing: str = "x / 255.0"  # STUDY.md, "Data handling"
    loss: str = "categorical_crossentropy"  # on a softmax output and one-hot labels

    def callback(self, class_name: str) -> KerasCall | None:
        return next((call for call in self.callbacks if call.class_name == class_name), None)


# STUDY.md's calls. Keras's SGD momentum 0 and nesterov False where the study's call leaves them out; Adam's defaults
# (beta 0.9/0.999, epsilon 1e-7) as STUDY.md states them (model 3, the grid search). Model 4's callbacks' defaults
# that decide what they do: EarlyStopping's min_delta 0, ReduceLROnPlateau's min_delta 1e-4 (absolute) and cooldown
# 0, and mode 'auto' (for a loss: min).
# fmt: off
_SGD, _ADAM = "keras.optimizers.SGD", "keras.optimizers.Adam"
_BETAS_EPSILON = dict(beta_1=0.9, beta_2=0.999, epsilon=1e-7)
_KFOLD = _call("sklearn.model_selection.KFold", dict(n_splits=5, shuffle=True, random_state=1))
_EARLY_STOPPING = _call("keras.callbacks.EarlyStopping", dict(monitor="val_loss", patience=5,
                        restore_best_weights=True), dict(min_delta=0, mode="auto"))
_REDUCE_LR = _call("keras.callbacks.ReduceLROnPlateau", dict(monitor="val_loss", factor=0.5, patience=3, min_lr=1e-6),
                   dict(min_delta=1e-4, cooldown=0, mode="auto"))
_GENERATOR = dict(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1, zoom_range=0.1,
                  horizontal_flip=False)
STUDY_RECIPES: dict[str, StudyRecipe] = {
    # model 1: "SGD(learning_rate=0.01), batch 64, 20 epochs, the test set passed as validation_data"; no Dropout
    "lenet": StudyRecipe(64, 20, _call(_SGD, dict(learning_rate=0.01), dict(momentum=0.0, nesterov=False)), "test"),
    # model 2: "SGD(learning_rate=0.001, momentum=0.9), batch 32, 10 epochs, 5-fold KFold(5, shuffle=True,
    # random_state=1) over the 60k training set"; no Dropout
    "brownlee": StudyRecipe(32, 10, _call(_SGD, dict(learning_rate=0.001, momentum=0.9), dict(nesterov=False)),
                            "kfold", _KFOLD),
    # model 3: "Adam(learning_rate=0.001) (Keras defaults beta 0.9/0.999, epsilon 1e-7), batch 32, 10 epochs, the
    # same 5-fold CV"; layer 8, Dropout(0.4), between layer 7 Flatten() and layer 9 Dense(128)
    "custom_cnn": StudyRecipe(32, 10, _call(_ADAM, dict(learning_rate=0.001), _BETAS_EPSILON), "kfold", _KFOLD,
                              dropout=(DropoutAt(0.4, after="Flatten", before="Dense 128"),)),
    # model 4: "Adam() (lr 0.001), batch 64, up to 30 epochs, test set as validation; augmentation
    # ImageDataGenerator(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1, zoom_range=0.1,
    # horizontal_flip=False); EarlyStopping(monitor='val_loss', patience=5, restore_best_weights=True);
    # ReduceLROnPlateau(monitor='val_loss', factor=0.5, patience=3, min_lr=1e-6)"; no Dropout
    "seed_efficientnet": StudyRecipe(64, 30, _call(_ADAM, {}, dict(learning_rate=0.001, **_BETAS_EPSILON)), "test",
                                     callbacks=(_EARLY_STOPPING, _REDUCE_LR),
                                     augmentation=_call("keras.preprocessing.image.ImageDataGenerator", _GENERATOR)),
}
# fmt: on


@dataclass(frozen=True)
class StudyResult:
    """What the Keras study reported for one of its models (../shared/STUDY.md)."""

    figure: str  # as the study printed it, e.g. "91.835 % ± 0.519"
    measure: str  # what the figure is: test accuracy, or a k-fold validation mean
    recipe: str
    training_time: str = ""
    # per fold, in ``--data.validation.fold`` order, where the study cross-validated on
    # KFold(5, shuffle=True, random_state=1)
    fold_accuracies: tuple[float, ...] = ()
    # the recipe fact by fact (``STUDY_RECIPES``), checked against the model's study config
    keras_recipe: StudyRecipe | None = None


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
        study=StudyResult(
            "89.16 %",
            "test accuracy after epoch 20",
            "SGD lr 0.01, batch 64, 20 epochs",
            keras_recipe=STUDY_RECIPES["lenet"],
        ),
    ),
    ModelInfo(
        "brownlee",
        "fmnist_lightning.models.BrownleeCNN",
        "Brownlee's CNN",
        "Jason Brownlee's tutorial CNN as the study ran it (average pooling)",
        542_230,
        configs=("configs/brownlee.yaml",),
        weights=("brownlee", "brownlee_plus"),
        study=StudyResult(
            "88.510 % ± 0.348",
            "5-fold validation mean ± std",
            "SGD lr 0.001 momentum 0.9, batch 32, 10 epochs",
            fold_accuracies=(88.600, 88.992, 87.908, 88.558, 88.492),
            keras_recipe=STUDY_RECIPES["brownlee"],
        ),
    ),
    ModelInfo(
        "custom_cnn",
        "fmnist_lightning.models.CustomCNN",
        "the study's custom CNN",
        "two conv/BN/pool stages, dropout, Dense 128 + BN (the study's third iteration)",
        225_930,
        configs=("configs/custom_cnn.yaml",),
        weights=("custom_cnn", "custom_cnn_plus"),
        study=StudyResult(
            "91.835 % ± 0.519",
            "5-fold validation mean ± std",
            "Adam lr 0.001, batch 32, 10 epochs",
            fold_accuracies=(92.025, 90.933, 92.458, 91.650, 92.108),
            keras_recipe=STUDY_RECIPES["custom_cnn"],
        ),
    ),
    ModelInfo(
        "seed_efficientnet",
        "fmnist_lightning.models.SeedEfficientNet",
        'the study\'s "EfficientNet"',
        "a MobileNet-v1-style stack of depthwise-separable convolutions with swish",
        321_418,
        configs=("configs/seed_efficientnet.yaml",),
        weights=("seed_efficientnet", "seed_efficientnet_plus"),
        study=StudyResult(
            "92.47 %",
            "test accuracy, best epoch restored",
            "Adam lr 0.001, batch 64, ≤ 30 epochs, augmentation, early stopping",
            training_time="2623.94 s for 30 epochs",
            keras_recipe=STUDY_RECIPES["seed_efficientnet"],
        ),
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
