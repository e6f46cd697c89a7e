"""scripts/gpu/train_seeds.py, the prepared GPU session of issue 31, run on the CPU on tiny data: probe, plan,
fit, test once, publish with the other seeds' spread, and pack no more than the device tool brings back."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

from fmnist_lightning.weights import read_card
from support import REPO

RECIPE = """seed_everything: 1
model:
  class_path: fmnist_lightning.models.LeNet5
data:
  batch_size: 16
  validation: {protocol: split, val_size: 0.25}
trainer:
  max_epochs: 3
"""


def test_a_budgeted_session_trains_tests_publishes_and_packs_what_comes_back(tiny_data, tmp_path):
    recipe, overlay = tmp_path / "tiny_recipe.yaml", tmp_path / "cpu.yaml"
    recipe.write_text(RECIPE)
    overlay.write_text("trainer:\n  accelerator: cpu\n  devices: 1\n")
    out = tmp_path / "out"
    # a budget the probe alone outruns: the plan falls back to one epoch, which the card's command must repeat
    args = ["--recipe", f"tiny={recipe}", "--overlay", str(overlay), "--seeds", "1", "2", "--budget-s", "1"]
    args += ["--tail-s", "0", "--probe-fraction", "0.5", "--data-dir", str(tiny_data), "--out", str(out)]
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/gpu/train_seeds.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    files = [path.relative_to(out) for path in out.rglob("*") if path.is_file()]
    assert len(files) <= 8 and all(len(path.parts) <= 3 for path in files)  # the device tool's limits
    summary = json.loads((out / "summary.json").read_text())
    assert summary["probe_exit"] == summary["fit_exit"] == summary["test_exit"] == {"tiny_s1": 0, "tiny_s2": 0}
    assert summary["recipes"]["tiny"]["epochs"] == 1 and summary["publish_exit"] == {"tiny": 0}

    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
        metrics = {job: json.load(tar.extractfile(f"{job}/metrics.json")) for job in ("tiny_s1", "tiny_s2")}
    assert not any(name.endswith(".ckpt") for name in names)
    assert {f"tiny_s{seed}/config.yaml" for seed in (1, 2)} <= set(names)
    assert all(m["epochs"] == 1 and "test_acc" in m for m in metrics.values())  # each run tested once, on itself
    assert {job: run["test_acc"] for job, run in summary["runs"].items()} == {
        job: m["test_acc"] for job, m in metrics.items()
    }

    card = read_card(out / "weights" / "tiny.md")
    assert (out / "weights" / "tiny.ckpt").is_file() and card["seed"] == 1
    assert set(card["seed_test_accuracy"]) == {1, 2}
    assert card["config"] == [str(recipe), str(overlay)]
    assert " --trainer.max_epochs 1 " in card["fit_command"]
