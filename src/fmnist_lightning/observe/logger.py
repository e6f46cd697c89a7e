"""The CLI's TensorBoard logger: Lightning's, with the Scalars tab opening on the training and validation curves."""

from __future__ import annotations

from collections.abc import Mapping

from lightning.pytorch.loggers import TensorBoardLogger
from typing_extensions import override

# the names Lightning's LearningRateMonitor gives its scalars: lr-SGD, lr-SGD/pg1, momentum-SGD, …
LEARNING_RATE_MONITOR = ("lr-", "momentum-", "weight_decay-")


def tensorboard_tag(key: str) -> str:
    """Where a logged value goes in TensorBoard: the learning-rate monitor's into the ``train/`` group, the rest as
    logged."""
    return f"train/{key}" if key.startswith(LEARNING_RATE_MONITOR) else key


class CurvesFirstTensorBoardLogger(TensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` (same arguments), with two of Lightning's scalars placed where they do not
    come before the learning curves.

    TensorBoard's Scalars and Time Series tabs group tags by the part before the first ``/`` and order the groups
    by name, so a group that sorts before ``train/`` is what the tab opens on:

    - ``epoch``: Lightning's logger connector adds the epoch number to everything logged with ``self.log`` ("added
      metrics for convenience"), a staircase chart first of all, which no option turns off. It is left out here:
      every chart's axis is the step, and Lightning's checkpoints, ``metrics.json`` and the CSV logger keep the
      epoch. A value a module logs as ``epoch`` itself is left out too.
    - ``lr-<Optimizer>``: ``LearningRateMonitor`` names its scalars so, without a prefix option; they are shown as
      ``train/lr-<Optimizer>``, last in the training group. Only the TensorBoard tag changes (no callback sees it).

    The project's own scalars are named to follow the curves (``~time/``, and ``~hp/`` and ``~run/`` in the run's
    ``summary/`` sub-run, ``observe/hparams.py``); ``test/`` after a ``test`` sorts first, with the run's result.
    """

    @override
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        shown = {tensorboard_tag(key): value for key, value in metrics.items() if key != "epoch"}
        if shown:
            super().log_metrics(shown, step)
