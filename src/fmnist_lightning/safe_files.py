"""Writing files that other processes read or that must never be lost: one atomic writer, one free-name search.

Two promises the commands make, each kept in one place:

- **A reader never sees half a file.** ``compare`` reads a live run's ``metrics.json`` while ``fit`` rewrites it,
  DDP ranks share the data cache, and a published checkpoint or an exported model interrupted by Ctrl-C must not be
  left behind half-written under its final name. ``write_atomically`` (and ``atomic_path`` for writers that need a
  path of their own, like ONNX's) writes a temporary file beside the target and renames it over the target: a
  rename within one folder is atomic on POSIX and Windows, so the target is the old file or the whole new one.
- **An earlier result is never overwritten.** Run configs, ``predictions.csv`` and cv's summaries get the next free
  name instead (``predictions.2.csv``): ``first_free_name`` finds it, ``create_first_free`` also creates it in the
  same step (``open(..., "x")``), so two processes racing for one name cannot both get it.

Nothing heavy is imported: ``fmnist_lightning.data`` and ``observe`` use it on every run.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A new, empty temporary file beside ``path`` to write into; when the block ends without an error it replaces
    ``path``, and on any error (Ctrl-C included) it is removed and ``path`` is left as it was.

    The temporary name is unique (``.<name>.<random>.partial``), so concurrent writers of one target (DDP ranks
    filling the data cache) never write into each other's file; it is created with ``open(..., "x")``, so it gets
    the permissions of any new file (the umask's), not ``tempfile``'s owner-only ones.
    """
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    partial.open("xb").close()
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)  # after a successful replace there is nothing left to remove


def write_atomically(path: Path, content: str | bytes | Callable[[BinaryIO], Any]) -> None:
    """Write ``content`` (text as UTF-8, bytes, or a function that writes into the open binary file, such as
    ``lambda file: torch.save(data, file)``) to ``path`` so that readers see the old file or the whole new one."""
    with atomic_path(path) as partial, partial.open("wb") as file:
        if callable(content):
            content(file)
        else:
            file.write(content.encode() if isinstance(content, str) else content)


def numbered(first: str, later: str, start: int = 2) -> Iterator[str]:
    """``first``, then ``later`` with ``{}`` replaced by ``start``, ``start + 1``, …: the candidate names of a result
    that must not overwrite an earlier one, e.g. ``numbered("predictions.csv", "predictions.{}.csv")``."""
    yield first
    for k in itertools.count(start):
        yield later.format(k)


def first_free_name(
    folder: Path, names: Iterable[str], is_free: Callable[[Path], bool] = lambda path: not path.exists()
) -> Path:
    """The first of ``folder / name`` for which ``is_free`` holds (by default: nothing exists there).

    ``is_free`` decides for results made of several files, such as cv's ``<stem>.json``, ``.md`` and ``.png``.
    Where a second process may pick the same name in between, create the file with ``create_first_free`` instead,
    or open it with ``"x"`` and search again when that fails.
    """
    return next(folder / name for name in names if is_free(folder / name))


def create_first_free(folder: Path, names: Iterable[str], mode: str = "x", **open_args: Any) -> IO[Any]:
    """The first of ``folder / name`` that does not exist, created and opened for writing in one step (``mode``
    ``"x"`` or ``"xb"``), so it is never an existing file even with another process writing the same names.
    Errors other than an existing file (an unwritable folder) are raised; their ``filename`` names the file."""
    for name in names:
        try:
            return (folder / name).open(mode, **open_args)
        except FileExistsError:
            continue
    raise FileExistsError(f"every candidate name in {folder} is taken")
