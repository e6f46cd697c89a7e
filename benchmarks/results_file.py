"""Where a benchmark writes its results: a new file, never one that holds earlier results."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def new_results_file(parser: argparse.ArgumentParser, out: Path | None, name: str) -> Path:
    """``out``, or ``results/<name>_<UTC time>.json``; refused (before the minutes of measuring) if it exists."""
    path = out or RESULTS / f"{name}_{datetime.now(timezone.utc).strftime('%Y%m%dT%H%MZ')}.json"
    if path.exists():
        parser.error(f"--out {path} exists; give a new file name (earlier results are kept, not overwritten)")
    return path
