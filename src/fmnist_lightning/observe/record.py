"""``metrics.json``, a run's record: written by ``RunMetrics``, read by ``compare``, ``publish`` and the docs.

The one place that reads and writes the file, so that its readers agree on what a missing, half-written or
damaged record means. ``RunMetrics`` rewrites it during a fit while ``compare`` may read it, hence the atomic write.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fmnist_lightning.safe_files import write_atomically

METRICS_FILE = "metrics.json"


class UnreadableRecordError(ValueError):
    """A run's metrics.json exists but holds no record; the message says why (``compare`` shows it in its table)."""


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """A reader (``compare`` on a live run) never sees a half-written file."""
    write_atomically(path, json.dumps(data, indent=2) + "\n")


def load_run_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's record, for readers that report each case: ``FileNotFoundError`` when the run has none (trained
    before ``RunMetrics``, or stopped before ``fit`` started), ``UnreadableRecordError`` when it is no JSON object."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UnreadableRecordError(f"{METRICS_FILE} unreadable: {error}") from None
    if not isinstance(data, dict):
        raise UnreadableRecordError(f"{METRICS_FILE} is not a JSON object")
    return data


def read_run_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's record, or ``{}`` when it has none or it is unreadable: for writers that start it afresh then."""
    try:
        return load_run_metrics(run_dir)
    except (FileNotFoundError, UnreadableRecordError):
        return {}


def number(metrics: dict[str, Any], key: str) -> float | None:
    """A measurement of the record: a finite JSON number, else None (booleans, strings and NaN are not measures)."""
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def text(metrics: dict[str, Any], key: str) -> str | None:
    """A text field of the record (``model``, ``device``, ``status``), else None."""
    value = metrics.get(key)
    return value if isinstance(value, str) else None
