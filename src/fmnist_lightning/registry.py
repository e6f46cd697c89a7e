"""The models by name, each with its facts: one source for ``models``, ``compare``, ``cv``, the README and the cards.

Like timm's registry (``register_model``, ``create_model``, ``list_models``) and torchvision's weights metadata:
every model has a short name, the class path that configs and checkpoints use, its parameter count in Keras's
convention (``count_params()``: BatchNorm's running statistics included), its recipes and published weights, and
for the study's four the study's own figure and protocol (``fmnist_lightning.study``, joined by name).

A model is one file whose class carries ``@register_model("<name>", <its facts>)``. The project's own, one file each
in ``models/``, are registered when this module loads from their decorators' source text, read with ``ast``: so
``python -m fmnist_lightning models`` lists them without importing torch, and adding one edits no list. Their classes
are imported only when a model is built (``create_model``) or a checkpoint names one (``model_class``). A model of
your own is registered when its module is imported (docs/architecture.md).
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.study import STUDY_RESULTS, StudyResult

T = TypeVar("T", bound=type)

MODELS_PACKAGE = "fmnist_lightning.models"  # the project's own models: its files, and the class paths they record
_MODELS_DIR = Path(__file__).parent / "models"


@dataclass(frozen=True)
class ModelInfo:
    """One registered model and its facts."""

    name: str  # the registry name: `create_model("lenet")`
    class_path: str  # what configs (`model.class_path`) and checkpoints (`_class_path`) record
    # where the class is defined (module.qualname): for the project's own a file of models/, whose package re-exports
    # the class under ``class_path``; for any other model ``class_path`` itself
    defined_at: str
    title: str
    summary: str
    parameters: int  # Keras's count_params() of the default build (tests/test_registry.py builds and counts)
    configs: tuple[str, ...] = ()  # its recipes under configs/
    weights: tuple[str, ...] = ()  # its published files: weights/<name>.ckpt with the card weights/<name>.md
    study: StudyResult | None = None  # the study's figure, for the study's four

    @property
    def class_name(self) -> str:
        return self.class_path.rpartition(".")[2]


_REGISTRY: dict[str, ModelInfo] = {}  # name → facts, in the listing's order
_CLASSES: dict[str, type] = {}  # name → class, once imported or registered


def register_model(name: str, **facts: Any) -> Callable[[T], T]:
    """Class decorator: registers a LightningModule under ``name`` with its facts: ``parameters`` (Keras's count of
    the default build) and optionally ``title`` (the class's name by default), ``summary`` (its docstring's first
    line), ``configs``, ``weights``.

    A name is one class's: a different class under a taken name is refused, the same class again (a re-import,
    ``importlib.reload``) replaces its entry. For the project's own models the registry has read these same facts
    from the file already; importing the class links it to them.
    """

    def decorate(cls: T) -> T:
        defined_at = f"{cls.__module__}.{cls.__qualname__}"
        _refuse_a_taken_name(name, defined_at)
        known = _REGISTRY.get(name)
        class_path = known.class_path if known is not None else defined_at  # the project's own keep their public path
        _REGISTRY[name] = _model_info(name, class_path, defined_at, cls.__doc__, facts)
        _CLASSES[name] = cls
        return cls

    return decorate


def _refuse_a_taken_name(name: str, defined_at: str) -> None:
    known = _REGISTRY.get(name)
    if known is not None and known.defined_at != defined_at:
        raise ValueError(
            f"register_model({name!r}): the name is taken by {known.class_path}; {defined_at} needs another"
        )


def _model_info(name: str, class_path: str, defined_at: str, docstring: str | None, facts: dict[str, Any]) -> ModelInfo:
    """The facts given, with the title and summary defaulting to the class's name and its docstring's first line, and
    the study's figure joined by name."""
    if "parameters" not in facts:
        raise ValueError(f"register_model({name!r}) needs parameters= (Keras's count of the default build)")
    defaults = {
        "title": class_path.rpartition(".")[2],
        "summary": (docstring or "").strip().partition("\n")[0],
        "study": STUDY_RESULTS.get(name),
    }
    return ModelInfo(name, class_path, defined_at, **{**defaults, **facts})


def _declared_models(path: Path) -> Iterator[ModelInfo]:
    """The models a file of models/ declares: each ``@register_model(...)`` of a class, read without running it. The
    facts must be literals for that, as the project's own are."""
    module = f"{MODELS_PACKAGE}.{path.stem}"
    for node in ast.parse(path.read_text(), str(path)).body:
        decorators = node.decorator_list if isinstance(node, ast.ClassDef) else []
        for call in decorators:
            if not (isinstance(call, ast.Call) and ast.unparse(call.func).rpartition(".")[2] == "register_model"):
                continue
            try:
                (name,) = [ast.literal_eval(argument) for argument in call.args]
                facts = {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
            except ValueError as error:
                raise ValueError(
                    f"{path}:{call.lineno}: @register_model wants a name and facts written as literals"
                ) from error
            yield _model_info(
                name, f"{MODELS_PACKAGE}.{node.name}", f"{module}.{node.name}", ast.get_docstring(node), facts
            )


def _listing_order(info: ModelInfo) -> tuple[int, str]:
    """The study's four first, in the study's order (its models 1 to 4), then the project's others by name."""
    study_names = list(STUDY_RESULTS)
    return (study_names.index(info.name) if info.name in study_names else len(study_names), info.name)


def _register_builtin_models() -> None:
    """Registers the declarations of models/*.py, read as text: listing them imports no torch, adding one edits no
    list, and two files claiming one name are refused."""
    found = [info for path in sorted(_MODELS_DIR.glob("*.py")) for info in _declared_models(path)]
    for info in sorted(found, key=_listing_order):
        _refuse_a_taken_name(info.name, info.defined_at)
        _REGISTRY[info.name] = info


_register_builtin_models()


def builtin_models() -> list[ModelInfo]:
    """The project's own models (one file each in models/), in the listing's order."""
    return [info for info in _REGISTRY.values() if info.defined_at.startswith(f"{MODELS_PACKAGE}.")]


def list_models() -> list[ModelInfo]:
    """Every registered model: the project's in their order, then those registered since."""
    return list(_REGISTRY.values())


def get_model_info(name_or_class_path: str) -> ModelInfo:
    """A model by registry name, class name or class path (an alias of an earlier path included)."""
    for info in _REGISTRY.values():
        if name_or_class_path in (info.name, info.class_path, info.class_name):
            return info
    names = ", ".join(_REGISTRY)
    raise UserInputError(f"unknown model {name_or_class_path!r}; the registered models are {names}")


def model_class(name_or_class_path: str) -> type:
    """The registered class, imported on first use. Checkpoints are only ever built through this: a class path that
    is not registered is refused, so a file cannot make the project instantiate anything else."""
    info = get_model_info(name_or_class_path)
    if info.name not in _CLASSES:
        module, _, class_name = info.defined_at.rpartition(".")
        # importing it runs its @register_model, which fills _CLASSES; getattr where it ran before (a test may have
        # swapped the tables since)
        _CLASSES.setdefault(info.name, getattr(importlib.import_module(module), class_name))
    return _CLASSES[info.name]


def create_model(name: str, **kwargs: Any) -> Any:
    """A new model by registry name, e.g. ``create_model("custom_cnn", dropout=0.5)``."""
    return model_class(name)(**kwargs)
