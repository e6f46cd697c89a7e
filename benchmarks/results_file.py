"""Where a benchmark writes its results (a new file, never one that holds earlier results), and their record header."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def new_results_file(parser: argparse.ArgumentParser, out: Path | None, name: str) -> Path:
    """``out``, or ``results/<name>_<UTC time>.json``; refused (before the minutes of measuring) if it exists."""
    path = out or RESULTS / f"{name}_{datetime.now(timezone.utc).strftime('%Y%m%dT%H%MZ')}.json"
    if path.exists():
        parser.error(f"--out {path} exists; give a new file name (earlier results are kept, not overwritten)")
    return path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_results(path: Path, script: str, fields: dict[str, Any]) -> None:
    """``fields`` after when, by which command and on which CPU they were measured."""
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]]),
        "cpu": cpu_name(),
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
