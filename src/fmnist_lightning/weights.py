"""Published weights: ``weights/<name>.ckpt`` with its card ``weights/<name>.md``, whose YAML block carries the
file's facts (sha256, the test accuracy measured from the file, the recipe, the commands). Read without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fmnist_lightning.errors import UserInputError

WEIGHTS_DIR = Path("weights")


def read_card(path: Path) -> dict[str, Any]:
    """The YAML block at the top of a model card."""
    text = path.read_text()
    if not text.startswith("---\n"):
        raise UserInputError(f"{path} is not a model card: it does not start with a '---' YAML block")
    return yaml.safe_load(text.split("---\n", 2)[1])
