"""The run's hyperparameters with its results in TensorBoard's HPARAMS tab (``RunMetrics`` calls it after fit and
test)."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.tensorboard.summary import hparams as hparams_summary

from fmnist_lightning.lightning_private import tensorboard_file_writer
from fmnist_lightning.observe.evaluation import tensorboard_logger

HPARAM_RESULTS = ("best_val_acc", "final_val_acc", "test_acc", "fit_time_s", "peak_rss_mb")


def log_hparams_with_results(
    trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict[str, Any], declare: bool = True
) -> None:
    """The run's hyperparameters (model and data) with its results, for TensorBoard's HPARAMS tab.

    Lightning's ``log_hyperparams`` declares only the results it is given, and TensorBoard keeps the first
    declaration in a run folder; the test accuracy comes later, usually from another process. So every result is
    declared at once when ``fit`` ends and each is logged as an ``hp/`` scalar whenever it is known.
    """
    logger = tensorboard_logger(trainer)
    if logger is None:
        return
    logger.log_metrics(
        {f"hp/{key}": float(metrics[key]) for key in HPARAM_RESULTS if key in metrics}, trainer.global_step
    )
    if not declare:
        return
    params = {**pl_module.hparams, **(trainer.datamodule.hparams if trainer.datamodule is not None else {})}
    params = {key: v if isinstance(v, (bool, int, float, str)) else str(v) for key, v in params.items()}
    params["model"] = type(pl_module).__name__
    writer = tensorboard_file_writer(logger)
    for summary in hparams_summary(params, {f"hp/{key}": 0.0 for key in HPARAM_RESULTS}):
        writer.add_summary(summary)
