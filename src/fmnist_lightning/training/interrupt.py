"""Stopping a fit cleanly: a SIGTERM or Ctrl-C saves the run where it stands, for ``fit --ckpt_path last``."""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fmnist_lightning.lightning_private import rewind_to_validation_start


class SaveOnInterrupt(L.Callback):
    """A SIGTERM (a cluster's pre-emption, ``kill``, ``docker stop``) or Ctrl-C during ``fit`` rewrites the run's
    ``last.ckpt`` with the state after the last finished step before the process exits, so ``fit --ckpt_path last``
    resumes from there instead of from the end of the last epoch.

    Lightning stops at the next batch boundary on SIGTERM (on all DDP ranks together) and calls ``on_exception``.
    Its own ``OnExceptionCheckpoint`` needs its folder before the run folder exists and deletes its file after a fit
    that finishes; this writes into the run's checkpoint folder the file that resuming already looks for.
    """

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        folder = getattr(trainer.checkpoint_callback, "dirpath", None)  # None before fit set up its run folder
        if trainer.state.fn == "fit" and folder and isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            if trainer.validating:  # stopped between two batches of the epoch's validation
                rewind_to_validation_start(trainer)
            trainer.save_checkpoint(os.path.join(folder, "last.ckpt"))  # written whole or not at all (fsspec)
