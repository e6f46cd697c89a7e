"""What docs/parity.md is generated from, and its digest: the report records it, tests/test_parity_report.py checks it.

The digest is the sha256 of the files below, in sorted path order, each as its repo-relative path, a NUL, its
length, a NUL and its bytes. Library versions and the other recipes are deliberately not in it: the report names the
versions it ran with, and a change of them is not a change of what the project claims.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Repo-relative paths or glob patterns; each must match at least one file.
SOURCES = (
    # the study's four models, their networks and the Keras-form layers
    "src/fmnist_lightning/networks/keras_layers.py",
    "src/fmnist_lightning/networks/lenet.py",
    "src/fmnist_lightning/networks/brownlee.py",
    "src/fmnist_lightning/networks/custom_cnn.py",
    "src/fmnist_lightning/networks/seed_efficientnet.py",
    "src/fmnist_lightning/models/lenet.py",
    "src/fmnist_lightning/models/brownlee.py",
    "src/fmnist_lightning/models/custom_cnn.py",
    "src/fmnist_lightning/models/seed_efficientnet.py",
    # the study's recipes: its calls as data (test_recipe_parity.py checks the configs against them) and the configs
    # (the training-step rows take their optimizers from them)
    "src/fmnist_lightning/study.py",
    "configs/lenet.yaml",
    "configs/brownlee.yaml",
    "configs/custom_cnn.yaml",
    "configs/seed_efficientnet.yaml",
    # KerasAdam, the study recipe's augmentation, the Keras-weights converter every forward row goes through
    "src/fmnist_lightning/training/optim.py",
    "src/fmnist_lightning/data/augment.py",
    "src/fmnist_lightning/commands/convert_keras.py",
    # the parity tests: the Keras reference models, the checks, the report's text (conftest.py), the Keras-2 file
    "tests/parity/*.py",
    "tests/parity/fixtures/*",
)

DIGEST_LINE = "<!-- parity digest: sha256:{} -->"
DIGEST_PREFIX = "<!-- parity digest: sha256:"


def source_files(repo: Path = REPO) -> list[Path]:
    """The files of ``SOURCES``, sorted by repo-relative path; ``FileNotFoundError`` for a pattern matching none."""
    files: set[Path] = set()
    for pattern in SOURCES:
        matched = [path for path in repo.glob(pattern) if path.is_file() and "__pycache__" not in path.parts]
        if not matched:
            raise FileNotFoundError(f"{pattern}: no such file (tests/parity/report_digest.py SOURCES)")
        files.update(matched)
    return sorted(files, key=lambda path: path.relative_to(repo).as_posix())


def digest(repo: Path = REPO) -> str:
    """The hex sha256 of the source files as they are now."""
    sha = hashlib.sha256()
    for path in source_files(repo):
        data = path.read_bytes()
        sha.update(f"{path.relative_to(repo).as_posix()}\0{len(data)}\0".encode())
        sha.update(data)
    return sha.hexdigest()


def recorded_digest(report: str) -> str | None:
    """The digest a report's ``<!-- parity digest: sha256:... -->`` line records, or None."""
    for line in report.splitlines():
        if line.startswith(DIGEST_PREFIX) and line.endswith("-->"):
            return line[len(DIGEST_PREFIX) : -len("-->")].strip()
    return None
