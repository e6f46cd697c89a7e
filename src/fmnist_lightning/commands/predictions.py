"""The CSV that ``predict`` writes of users' images (``fmnist_lightning.load`` is ``runs.loading``)."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from fmnist_lightning.data.datasets import ImageBatch
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.runs.folders import run_folder
from fmnist_lightning.safe_files import create_first_free, numbered
from fmnist_lightning.training.prediction import Prediction, rank_classes

CSV_COLUMNS = ("file", "class_index", "class_name", "probability", "top3")


class PredictionCSV(BasePredictionWriter):
    """Writes the predictions of ``--data.predict.path``'s images to ``predictions.csv`` and prints a summary.

    One row per image: file, class_index, class_name, probability and the top three classes. The file goes into the
    checkpoint's run folder when it lies in one, else into the current directory, and never replaces an earlier
    one (``predictions.2.csv``, …). The images the data module could not read are listed on stderr.
    """

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self.rows: list[tuple[str, Prediction]] = []

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: torch.Tensor,
        batch_indices: Any,
        batch: ImageBatch,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self.rows += zip(batch.files, rank_classes(prediction), strict=True)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        folder = output_folder(trainer.ckpt_path)
        with open_new_csv(folder) as file:
            writer = csv.writer(file)
            writer.writerow(CSV_COLUMNS)
            for name, p in self.rows:
                writer.writerow((name, p.class_index, p.class_name, f"{p.probability:.4f}", p.top3_text()))
        counts = Counter(prediction.class_name for _, prediction in self.rows).most_common()
        images = "image" if len(self.rows) == 1 else "images"
        print(f"predicted {len(self.rows)} {images}: " + ", ".join(f"{name} {n}" for name, n in counts))
        print(f"wrote {file.name}")
        unreadable = getattr(trainer.datamodule, "unreadable", [])
        if unreadable:
            print(f"skipped {len(unreadable)} unreadable image files:", file=sys.stderr)
            for name, reason in unreadable:
                print(f"  {name}: {reason}", file=sys.stderr)


def output_folder(checkpoint: str | None) -> Path:
    """The checkpoint's run folder (``<save_dir>/<Model>/version_<N>/``) when it lies in one, else the current
    directory."""
    return (run_folder(Path(checkpoint)) if checkpoint else None) or Path()


def open_new_csv(folder: Path) -> IO[str]:
    """``predictions.csv`` in ``folder``, or ``predictions.<k>.csv`` with the first k from 2 whose file does not
    exist: created exclusively, so an earlier prediction is never overwritten."""
    try:
        return create_first_free(folder, numbered("predictions.csv", "predictions.{}.csv"), newline="")
    except OSError as error:
        raise UserInputError(
            f"cannot write {error.filename} ({error.strerror}); predictions go into the checkpoint's run folder, "
            "else the current directory: make it writable"
        ) from None
