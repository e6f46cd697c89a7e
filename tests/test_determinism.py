"""``seed_everything`` + ``--trainer.deterministic true``: the same config trains to the same weights, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fmnist_lightning.commands.cli import FashionMNISTCLI
from support import REPO

# custom_cnn_plus: dropout, batch norm, per-image crops and flips, label smoothing, weight EMA; seed_efficientnet: the
# study's affine augmentation; both with the speed options the study's configs have on (channels-last memory,
# torch.compile)
CONFIGS = {
    "custom_cnn_plus": (["custom_cnn", "plus"], ["--data.validation.val_size", "0.2"]),
    "seed_efficientnet": (["seed_efficientnet"], []),
}


@pytest.mark.parametrize("config", CONFIGS)
def test_two_deterministic_runs_give_identical_weights_and_metrics(config, tiny_data, tmp_path):
    """With the random parts of the recipe on, and its speed options."""
    runs = []
    for name in ("first", "second"):
        configs, options = CONFIGS[config]
        args = ["fit", *(arg for stem in configs for arg in ("--config", str(REPO / f"configs/{stem}.yaml")))]
        args += ["--data.data_dir", str(tiny_data), *options, "--data.batch_size", "16", "--trainer.max_epochs", "2"]
        args += ["--trainer.deterministic", "true", "--trainer.enable_progress_bar", "false"]
        args += ["--run_metrics.latency", "false", "--trainer.logger.init_args.save_dir", str(tmp_path / name)]
        FashionMNISTCLI(args)
        (run,) = (tmp_path / name).glob("*/version_0")
        runs.append(run)
    first, second = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=False) for run in runs)
    # the weights; with weight EMA, the averaged ones (state_dict) and the trained ones
    weights = [key for key in ("state_dict", "current_model_state") if key in first]
    assert "state_dict" in weights and all(key in second for key in weights)
    torch.testing.assert_close(
        {key: first[key] for key in weights}, {key: second[key] for key in weights}, rtol=0, atol=0
    )
    first_state, second_state = (c["optimizer_states"][0]["state"] for c in (first, second))
    torch.testing.assert_close(first_state, second_state, rtol=0, atol=0)  # Adam's moments and step counts, exactly
    assert curves(runs[0]) == curves(runs[1]) and len(curves(runs[0])["val_acc_by_epoch"]) == 2


def curves(run: Path) -> dict[str, list[float]]:
    """The run's per-epoch losses and accuracies (not its timings)."""
    metrics = json.loads((run / "metrics.json").read_text())
    return {key: value for key, value in metrics.items() if key.endswith("_by_epoch") and "per_s" not in key}
