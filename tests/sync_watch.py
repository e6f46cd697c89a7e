"""A callback for the `gpu` tests' processes: CUDA's sync debug mode made an error during the middle of an epoch's
training steps, so any host synchronisation there (``.item()``, a blocking copy, ``nonzero``) fails the fit with a
traceback that names it (``--trainer.callbacks+=``)."""

import lightning as L
import torch


class NoSyncInTrainingSteps(L.Callback):
    """From the start of training batch ``first`` to the end of batch ``last`` of each epoch (so the loader's fetches
    of the batches between are inside too); epoch starts and ends, where logging may sync, stay outside."""

    def __init__(self, first: int = 2, last: int = 12) -> None:
        self.first, self.last = first, last

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == self.first:
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.last:
            torch.cuda.set_sync_debug_mode("default")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.cuda.set_sync_debug_mode("default")
