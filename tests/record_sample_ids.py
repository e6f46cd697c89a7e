"""A callback for subprocess tests: which training images each DDP rank saw (``--trainer.callbacks+=``)."""

from pathlib import Path

import lightning as L

from fmnist_lightning.training.multi_step import training_batches
from support import sample_ids


class RecordSampleIds(L.Callback):
    """Appends the ids (tests/support.py encodes one in each synthetic image's first pixels) of every training
    image this rank trains on to ``<folder>/rank<N>.txt``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        for images, _ in training_batches(batch):
            pixels = (images.detach().cpu() * 255).round().byte()  # lenet.yaml's inputs are x / 255
            with open(self.folder / f"rank{trainer.global_rank}.txt", "a") as out:
                out.writelines(f"{sample_id}\n" for sample_id in sample_ids(pixels.numpy()))
