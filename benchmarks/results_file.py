"""Where a benchmark writes its results: one file per benchmark and machine kind, replaced by a rerun.

``results/<benchmark>_<machine kind>.json``, e.g. ``throughput_zen4.json``; time to accuracy keeps an entry per config
in its file, replaced by a rerun of that config (``write_result_entry``). The machine kind names what the figures
depend on: the CPU's microarchitecture or family and its widest vector instructions (``zen4``, ``xeon-avx512``,
``amd-epyc-avx2``), or the GPU (``cuda-nvidia-h200``). ``$BENCHMARK_RESULTS_DIR`` puts the files elsewhere; a
script's ``--out`` names one file.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fmnist_lightning.safe_files import write_atomically

RESULTS = Path(__file__).resolve().parent / "results"


def results_dir() -> Path:
    return Path(os.environ.get("BENCHMARK_RESULTS_DIR") or RESULTS)


def results_path(benchmark: str, device: str = "cpu") -> Path:
    """The one results file of ``benchmark`` on this machine kind."""
    return results_dir() / f"{benchmark}_{machine_kind(device)}.json"


def slug(text: str) -> str:
    """``Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz`` → ``intel-core-i7-8650u``."""
    text = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_fields(cpuinfo: str) -> dict[str, str]:
    """The first processor's ``key: value`` lines of a ``/proc/cpuinfo`` text."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_kind(cpuinfo: str | None = None) -> str:
    """``zen4``, ``zen5``, ``xeon-<vector>``, else ``<slug of the model name>-<vector>`` (vector: avx512, avx2)."""
    fields = cpu_fields(read_cpuinfo() if cpuinfo is None else cpuinfo)
    flags = set(fields.get("flags", "").split())
    vector = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else ""
    if fields.get("vendor_id") == "AuthenticAMD":
        family = fields.get("cpu family")
        if family == "25" and vector == "avx512":  # family 19h is Zen 3 and Zen 4; only Zen 4 has AVX-512
            return "zen4"
        if family == "26":  # 1Ah
            return "zen5"
    name = fields.get("model name") or platform.processor() or platform.machine()
    base = "xeon" if "xeon" in name.lower() else slug(name)
    return f"{base}-{vector}" if vector else base


def gpu_kind(name: str) -> str:
    """``NVIDIA H200`` → ``cuda-nvidia-h200``."""
    return f"cuda-{slug(name)}"


def machine_kind(device: str = "cpu") -> str:
    """The kind of machine a benchmark ran on: its GPU's when ``device`` is CUDA, else its CPU's."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        return gpu_kind(torch.cuda.get_device_name(index) if torch.cuda.is_available() else "unknown")
    return cpu_kind()


def cpu_name() -> str:
    return cpu_fields(read_cpuinfo()).get("model name") or platform.processor() or platform.machine()


def measured(script: str, fields: dict[str, Any], device: str) -> dict[str, Any]:
    """``fields`` after when, by which command and on which device they were measured."""
    command = " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "device": device,
        **fields,
    }


def write_results(path: Path, script: str, fields: dict[str, Any], device: str = "cpu") -> None:
    """The machine's record of ``fields`` (with ``measured``'s facts); replaces ``path`` whole."""
    record = {"machine_kind": machine_kind(device), "cpu": cpu_name(), **measured(script, fields, device)}
    _write(path, record)


def write_result_entry(path: Path, script: str, entry: str, fields: dict[str, Any], device: str = "cpu") -> None:
    """One entry (e.g. a recipe's time to accuracy) of the machine's results file: a rerun of ``entry`` replaces it,
    the file's other entries stay."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        earlier = {}
    entries = earlier.get("entries", {}) if isinstance(earlier, dict) else {}
    entries[entry] = measured(script, fields, device)
    _write(path, {"machine_kind": machine_kind(device), "cpu": cpu_name(), "entries": dict(sorted(entries.items()))})


def _write(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(record, indent=2) + "\n")  # an interrupted write leaves the earlier results
