"""End to end on the real Fashion-MNIST (../shared/data/fashion-mnist in CI)."""

from __future__ import annotations

from functools import partial

import lightning as L
import torch

from fmnist_lightning import FashionMNISTDataModule, LeNet5
from fmnist_lightning.data import DataFiles, Validation


def test_lenet5_reaches_85_percent_after_one_epoch(real_data, tmp_path):
    torch.set_num_threads(2)
    L.seed_everything(0)
    files = DataFiles(download=False, cache_dir=str(tmp_path))
    data = FashionMNISTDataModule(str(real_data), batch_size=64, validation=Validation(protocol="test"), files=files)
    model = LeNet5(optimizer=partial(torch.optim.Adam, lr=2e-3))
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0
    )
    trainer.fit(model, data)
    (result,) = trainer.test(model, data, verbose=False)
    assert len(data.train_set) == 60_000 and len(data.test_set) == 10_000
    assert result["test/acc"] >= 0.85
