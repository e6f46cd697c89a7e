"""A callback for subprocess tests: a real signal at a known training step (``--trainer.callbacks+=``)."""

import os
import signal

import lightning as L


class SignalAtStep(L.Callback):
    def __init__(self, step: int, signal_name: str) -> None:
        self.step, self.signal = step, getattr(signal, signal_name)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


class SignalInValidation(L.Callback):
    """SIGTERM after the first batch of an epoch's validation during fit: the epoch's training is done, its
    validation is not."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == self.epoch and trainer.validating:
            os.kill(os.getpid(), signal.SIGTERM)
