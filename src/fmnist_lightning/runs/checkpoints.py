"""Reading a checkpoint a user hands to a command: one safe load, and only the project's own classes built from it.

A checkpoint is a pickle, and unpickling a file can run any code the file names. Every load of a user-supplied
checkpoint goes through ``read_checkpoint`` here, before anything else reads the file: ``test``, ``validate``,
``predict`` and ``fit --ckpt_path`` (called while the CLI parses its arguments), ``publish``, ``export`` and
``fmnist_lightning.load``. It reads the file with torch's weights-only unpickler, which
builds tensors and plain containers only and refuses a file that names anything else before running any of it, and
then admits only a Lightning checkpoint of a class registered in ``fmnist_lightning.registry``, built by
LightningCLI's own ``instantiate_module`` (``fmnist_lightning.load`` builds its model from what was read here).

The commands' Lightning reads the file again after this check, to restore the run from it:
``trainer.fit/validate/test/predict(ckpt_path=...)`` passes ``weights_only=None`` (its default, and what LightningCLI
passes unless ``--weights_only`` is given) to ``torch.load``, which means weights-only in torch ≥ 2.6, but *not* when
the environment sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` or the user passes ``--weights_only false``. So the check
here asks for ``weights_only=True`` explicitly, which neither overrides, and runs first on every path; the CLI then
sets ``weights_only`` true for Lightning's read too.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fmnist_lightning import registry
from fmnist_lightning.errors import UserInputError

# What LightningCLI records as the hyperparameters' ``_instantiator``; Lightning imports and calls the function a
# checkpoint names there, so no other is admitted
INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"
# Types beyond torch's weights-only allowlist that the project's checkpoints need. None: every published file in
# weights/ and the best.ckpt and last.ckpt of runs of every recipe (SGD, AdamW and KerasAdam states, OneCycleLR,
# ReduceLROnPlateau, warm-up SequentialLR, EarlyStopping, EMAWeightAveraging and EMAWithWarmup state) hold only
# tensors, numbers, strings, lists, tuples and dicts (tests/test_checkpoint_safety.py checks the files). A type
# added here must be one whose unpickling cannot run code: a plain data class of the project, never a function.
SAFE_GLOBALS: tuple[Any, ...] = ()
REFUSED_HINT = (
    "it was not loaded and nothing in it ran. Checkpoints of this project hold only tensors and plain values: use one "
    "written by fit, publish or convert-keras that you trust (a run's checkpoints/*.ckpt or weights/*.ckpt)"
)


@contextmanager
def safe_globals() -> Iterator[None]:
    """torch's weights-only allowlist with ``SAFE_GLOBALS`` added, for this block only (no global registration)."""
    import torch  # here, not at the top: `compare` imports this module and needs no torch (nor its 2 s import)

    with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
        yield


def load_safely(path: Path, where: str) -> Any:
    """The file's contents, read by torch's weights-only unpickler (memory-mapped: a large file costs little).

    A file it refuses is one that names other objects (functions, classes: what a malicious payload needs) and is
    reported as such; a truncated or foreign file as that. ``where`` starts the one-line message.
    """
    import torch

    try:
        with safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        refused = _refused_globals(path)
        if refused or "Unsupported global" in str(error):
            names = ", ".join(refused[:3]) + (f" and {len(refused) - 3} more" if len(refused) > 3 else "")
            raise UserInputError(
                f"{where}: holds objects a safe load refuses ({names or 'not tensors or plain values'}); "
                + REFUSED_HINT
            ) from None
        reason = type(error).__name__
    except Exception as error:
        reason = type(error).__name__
    raise UserInputError(
        f"{where}: not a readable checkpoint, truncated or not a torch file ({reason}); copy it "
        "again, or pass the run's other checkpoint (best or last)"
    )


def _refused_globals(path: Path) -> list[str]:
    """The classes and functions the file's pickle names beyond the allowlist, read without unpickling it."""
    import torch

    try:
        with safe_globals():
            return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint: nothing to name
        return []


def read_checkpoint(path: Path, where: str, resume_as: str | None = None) -> dict[str, Any]:
    """A Lightning checkpoint of a registered model, read safely (``load_safely``); anything else is a one-line
    ``UserInputError`` starting with ``where``, not Lightning's traceback later.

    ``resume_as`` is the class path of the config that resumes training from the file (``fit --ckpt_path``): the
    file must then hold a run's training state, of that class.
    """
    saved = load_safely(path, where)
    if not isinstance(saved, dict) or not {"state_dict", "pytorch-lightning_version"} <= saved.keys():
        raise UserInputError(
            f"{where}: not a Lightning checkpoint; a Keras model of the study converts with convert-keras"
        )
    info = model_info(saved, where)
    if resume_as is None:
        return saved
    if "optimizer_states" not in saved:
        raise UserInputError(f"{where}: holds weights only (published or converted); fit resumes a run's last.ckpt")
    if resume_as != info.class_path:
        raise UserInputError(
            f"{where}: a {info.class_name} checkpoint, but the config trains {resume_as.rpartition('.')[2]}; "
            "resume with the config the run was trained with (its config.yaml)"
        )
    return saved


def model_info(saved: dict[str, Any], where: str) -> registry.ModelInfo:
    """The registered model a checkpoint records (``hyper_parameters._class_path``): only a class in
    ``fmnist_lightning.registry`` is ever built from a file, through Lightning's own instantiator."""
    hparams = saved.get("hyper_parameters")
    hparams = hparams if isinstance(hparams, dict) else {}
    class_path = hparams.get("_class_path")
    info = _registered(class_path)
    if info is None:
        shown = class_path if isinstance(class_path, str) and class_path else "an unnamed model"
        raise UserInputError(
            f"{where}: a checkpoint of {shown}, not of this project's models; pass one "
            "written by fit, publish or convert-keras"
        )
    if hparams.get("_instantiator", INSTANTIATOR) != INSTANTIATOR:
        raise UserInputError(
            f"{where}: names {hparams['_instantiator']!r} to build its model, not Lightning's {INSTANTIATOR}; "
            + REFUSED_HINT
        )
    return info


def _registered(class_path: Any) -> registry.ModelInfo | None:
    """The registry's model whose class path the checkpoint records, if any.

    A class path exactly, not the registry's short names (``lenet``): Lightning's instantiator builds the class the
    file names, and only a class path names the registered class to it.
    """
    if not isinstance(class_path, str):
        return None
    try:
        info = registry.get_model_info(class_path)
    except UserInputError:
        return None
    return info if class_path == info.class_path else None
