"""The Keras study's facts (../shared/STUDY.md): how it trained its four models, call by call, and what it reported.

Data only, and torch-free: the registry joins ``STUDY_RESULTS`` to the models by name, and the parity tests
(tests/parity/test_recipe_parity.py, test_layer_parity.py) check ``STUDY_RECIPES`` against the installed Keras and
against each model's study config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KerasCall:
    """A call of the study's notebook: the class (Keras's, or scikit-learn's KFold) and its arguments, as pairs: the
    study's own and the class defaults it left in force that decide what it does, named again in ``defaults``
    (tests/parity/test_recipe_parity.py checks them against the installed Keras, and all against the configs)."""

    name: str  # e.g. "keras.optimizers.SGD"
    args: tuple[tuple[str, Any], ...] = ()
    defaults: tuple[str, ...] = ()  # which of ``args`` the study's call left to the class

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)

    @property
    def class_name(self) -> str:
        return self.name.rpartition(".")[2]


def _keras_call(name: str, written: dict[str, Any], defaults: dict[str, Any] | None = None) -> KerasCall:
    """The call of ``name`` with the arguments the study wrote and the class defaults it relied on."""
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
_SGD = "keras.optimizers.SGD"
_ADAM = "keras.optimizers.Adam"
_ADAM_DEFAULTS = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
_KFOLD = _keras_call("sklearn.model_selection.KFold", {"n_splits": 5, "shuffle": True, "random_state": 1})
_EARLY_STOPPING = _keras_call(
    "keras.callbacks.EarlyStopping",
    {"monitor": "val_loss", "patience": 5, "restore_best_weights": True},
    {"min_delta": 0, "mode": "auto"},
)
_REDUCE_LR = _keras_call(
    "keras.callbacks.ReduceLROnPlateau",
    {"monitor": "val_loss", "factor": 0.5, "patience": 3, "min_lr": 1e-6},
    {"min_delta": 1e-4, "cooldown": 0, "mode": "auto"},
)
_IMAGE_GENERATOR = _keras_call(
    "keras.preprocessing.image.ImageDataGenerator",
    {
        "rotation_range": 10,
        "width_shift_range": 0.1,
        "height_shift_range": 0.1,
        "zoom_range": 0.1,
        "horizontal_flip": False,
    },
)

STUDY_RECIPES: dict[str, StudyRecipe] = {
    # model 1: "SGD(learning_rate=0.01), batch 64, 20 epochs, the test set passed as validation_data"; no Dropout
    "lenet": StudyRecipe(
        batch_size=64,
        epochs=20,
        optimizer=_keras_call(_SGD, {"learning_rate": 0.01}, {"momentum": 0.0, "nesterov": False}),
        validation="test",
    ),
    # model 2: "SGD(learning_rate=0.001, momentum=0.9), batch 32, 10 epochs, 5-fold KFold(5, shuffle=True,
    # random_state=1) over the 60k training set"; no Dropout
    "brownlee": StudyRecipe(
        batch_size=32,
        epochs=10,
        optimizer=_keras_call(_SGD, {"learning_rate": 0.001, "momentum": 0.9}, {"nesterov": False}),
        validation="kfold",
        folds=_KFOLD,
    ),
    # model 3: "Adam(learning_rate=0.001) (Keras defaults beta 0.9/0.999, epsilon 1e-7), batch 32, 10 epochs, the
    # same 5-fold CV"; layer 8, Dropout(0.4), between layer 7 Flatten() and layer 9 Dense(128)
    "custom_cnn": StudyRecipe(
        batch_size=32,
        epochs=10,
        optimizer=_keras_call(_ADAM, {"learning_rate": 0.001}, _ADAM_DEFAULTS),
        validation="kfold",
        folds=_KFOLD,
        dropout=(DropoutAt(0.4, after="Flatten", before="Dense 128"),),
    ),
    # model 4: "Adam() (lr 0.001), batch 64, up to 30 epochs, test set as validation; augmentation
    # ImageDataGenerator(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1, zoom_range=0.1,
    # horizontal_flip=False); EarlyStopping(monitor='val_loss', patience=5, restore_best_weights=True);
    # ReduceLROnPlateau(monitor='val_loss', factor=0.5, patience=3, min_lr=1e-6)"; no Dropout
    "seed_efficientnet": StudyRecipe(
        batch_size=64,
        epochs=30,
        optimizer=_keras_call(_ADAM, {}, {"learning_rate": 0.001, **_ADAM_DEFAULTS}),
        validation="test",
        callbacks=(_EARLY_STOPPING, _REDUCE_LR),
        augmentation=_IMAGE_GENERATOR,
    ),
}


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


# by registry name, in the study's order (models 1 to 4), which is also the order ``models`` lists them in
STUDY_RESULTS: dict[str, StudyResult] = {
    "lenet": StudyResult(
        "89.16 %",
        "test accuracy after epoch 20",
        "SGD lr 0.01, batch 64, 20 epochs",
        keras_recipe=STUDY_RECIPES["lenet"],
    ),
    "brownlee": StudyResult(
        "88.510 % ± 0.348",
        "5-fold validation mean ± std",
        "SGD lr 0.001 momentum 0.9, batch 32, 10 epochs",
        fold_accuracies=(88.600, 88.992, 87.908, 88.558, 88.492),
        keras_recipe=STUDY_RECIPES["brownlee"],
    ),
    "custom_cnn": StudyResult(
        "91.835 % ± 0.519",
        "5-fold validation mean ± std",
        "Adam lr 0.001, batch 32, 10 epochs",
        fold_accuracies=(92.025, 90.933, 92.458, 91.650, 92.108),
        keras_recipe=STUDY_RECIPES["custom_cnn"],
    ),
    "seed_efficientnet": StudyResult(
        "92.47 %",
        "test accuracy, best epoch restored",
        "Adam lr 0.001, batch 64, ≤ 30 epochs, augmentation, early stopping",
        training_time="2623.94 s for 30 epochs",
        keras_recipe=STUDY_RECIPES["seed_efficientnet"],
    ),
}
