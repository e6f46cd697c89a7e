"""``seed_everything`` + ``--trainer.deterministic true``: the same config trains to the same weights, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fmnist_lightning.cli import FashionMNISTCLI
from support import REPO


def test_two_deterministic_runs_give_identical_weights_and_metrics(tiny_data, tmp_path):
    """With the random parts on: dropout, batch norm, per-image crops and flips, label smoothing, weight EMA."""
    runs = []
    for name in ("first", "second"):
        args = ["fit", "--config", str(REPO / "configs/custom_cnn_plus.yaml"), "--data.data_dir", str(tiny_data)]
        args += ["--data.val_size", "0.2", "--data.batch_size", "16", "--trainer.max_epochs", "2"]
        args += ["--trainer.deterministic", "true", "--trainer.enable_progress_bar", "false"]
        args += ["--run_metrics.latency", "false", "--trainer.logger.init_args.save_dir", str(tmp_path / name)]
        FashionMNISTCLI(args)
        (run,) = (tmp_path / name).glob("*/version_0")
        runs.append(run)
    first, second = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=False) for run in runs)
    for key in ("state_dict", "current_model_state"):  # the averaged weights and the trained ones
        assert first[key].keys() == second[key].keys()
        assert all(torch.equal(first[key][name], second[key][name]) for name in first[key])
    first_state, second_state = (c["optimizer_states"][0]["state"] for c in (first, second))
    assert first_state.keys() == second_state.keys()
    for param in first_state:  # AdamW's moments
        assert all(torch.equal(value, second_state[param][key]) for key, value in first_state[param].items())
    assert curves(runs[0]) == curves(runs[1]) and len(curves(runs[0])["val_acc_by_epoch"]) == 2


def curves(run: Path) -> dict[str, list[float]]:
    """The run's per-epoch losses and accuracies (not its timings)."""
    metrics = json.loads((run / "metrics.json").read_text())
    return {key: value for key, value in metrics.items() if key.endswith("_by_epoch") and "per_s" not in key}
