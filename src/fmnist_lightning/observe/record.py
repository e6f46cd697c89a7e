"""``metrics.json``, a run's record: written by ``RunMetrics``, read by ``compare``, ``publish`` and the docs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """A reader (``compare`` on a live run) never sees a half-written file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def read_run_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METRICS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
