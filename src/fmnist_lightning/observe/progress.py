"""What the console shows while a command runs: a progress bar that counts batches and a summary of the network.

- ``BatchProgressBar``: a Lightning training step may take several batches (a speed setting,
  ``training/multi_step.py``), where Lightning's bar would count 59 "steps" in an epoch of LeNet-5's 938 batches;
  this bar counts the batches.
- ``NetworkSummary`` and ``RichNetworkSummary``: the model summary at the start of ``fit``, two levels deep so the
  network's top layers show (``net``, ``net.0``, ...), without the model's torchmetrics objects (epoch means and
  confusion matrices), which hold no weights.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary, RichModelSummary, TQDMProgressBar
from lightning.pytorch.callbacks.progress.progress_bar import get_standard_metrics
from torch import Tensor
from torchmetrics import Metric

from fmnist_lightning.lightning_private import should_update_logs
from fmnist_lightning.training.multi_step import batches_done, batches_per_epoch, training_batches

SUMMARY_DEPTH = 2  # the LightningModule's children (the network) and theirs (its layers or blocks)


class BatchProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, counting training batches (optimizer steps) instead of Lightning's training steps.

    ``refresh_rate`` counts batches too: the bar is redrawn when a multiple of it is passed, and at an epoch's end.
    The figures beside it change only where they are logged: the training step's (``train/loss_step``, logged as
    ``*_step``) on the steps the logger writes (``log_every_n_steps``), the rest at an epoch's end or after a
    validation. The bar reads them then and only then: reading a figure makes it a Python number, which on a GPU
    waits for the device to finish every step queued so far (a host sync); Lightning's bar reads them at each redraw.
    """

    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        total = batches_per_epoch(trainer)
        if trainer.max_epochs == -1 and trainer.max_steps is not None and trainer.max_steps > 0:
            return min(total, trainer.max_steps - trainer.global_step)  # global_step counts batches (optimizer steps)
        return total

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Lightning's figures (the run's version and the ``prog_bar`` ones), with the training step's figures that
        the logger last wrote (the model logs them without ``prog_bar``, which would make Lightning read them after
        every step)."""
        shown = super().get_metrics(trainer, pl_module)
        steps = {
            name: value.item() if isinstance(value, Tensor) else value
            for name, value in trainer.logged_metrics.items()
            if name.endswith("_step")
        }
        return {**get_standard_metrics(trainer), **steps, **shown}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if bar is None or not self.is_enabled:
            return
        taken = len(training_batches(batch))
        done = batches_done(trainer, batch_idx, batch)
        last = trainer.is_last_batch
        redraw = done // self.refresh_rate != (done - taken) // self.refresh_rate or done == bar.total or last
        logged = should_update_logs(trainer)  # the step's figures are new only where the logger writes them
        if not redraw and not logged:
            return
        if last and bar.total is not None and done < bar.total:
            bar.total = done  # fewer than estimated: a data module that drops a short batch (mixup)
        if logged or last:
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        if redraw and not bar.disable:
            bar.n = done
            bar.refresh()


class _WithoutMetricRows:
    """Leaves the rows of torchmetrics objects, and what they hold, out of a ``ModelSummary`` callback's table."""

    _hidden: tuple[str, ...] = ()
    _hidden_training: int = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = [(name, module) for name, module in pl_module.named_modules() if isinstance(module, Metric)]
        self._hidden = tuple(name for name, _ in metrics)
        self._hidden_training = sum(inner.training for _, module in metrics for inner in module.modules())
        super().on_fit_start(trainer, pl_module)  # type: ignore[misc]

    def _shown(self, name: str) -> bool:
        return not any(name == hidden or name.startswith(f"{hidden}.") for hidden in self._hidden)

    def summarize(
        self,
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        names = dict(summary_data)["Name"]
        rows = [i for i, name in enumerate(names) if self._shown(name)]
        columns = [(title, [values[i] for i in rows]) for title, values in summary_data]
        if columns and columns[0][0] == " ":  # the row numbers, counted again
            columns[0] = (" ", [str(i) if value.strip() else value for i, value in enumerate(columns[0][1])])
        modes = {**total_training_modes, "train": total_training_modes["train"] - self._hidden_training}
        super().summarize(  # type: ignore[misc]
            columns, total_parameters, trainable_parameters, model_size, modes, total_flops, **summarize_kwargs
        )


class NetworkSummary(_WithoutMetricRows, ModelSummary):
    """Lightning's plain-text model summary of the network's layers."""

    def __init__(self, max_depth: int = SUMMARY_DEPTH, **summarize_kwargs: Any) -> None:
        super().__init__(max_depth, **summarize_kwargs)


class RichNetworkSummary(_WithoutMetricRows, RichModelSummary):
    """Lightning's Rich model summary (its default where ``rich`` is installed) of the network's layers."""

    def __init__(self, max_depth: int = SUMMARY_DEPTH, **summarize_kwargs: Any) -> None:
        super().__init__(max_depth, **summarize_kwargs)


def network_summary_like(default: ModelSummary) -> ModelSummary:
    """The network's summary in the style of the summary callback Lightning chose by default."""
    return RichNetworkSummary() if isinstance(default, RichModelSummary) else NetworkSummary()
