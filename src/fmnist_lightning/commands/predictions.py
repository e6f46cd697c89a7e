"""Predicting users' images: a trained checkpoint as a model (``load``), and the CSV that ``predict`` writes."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from fmnist_lightning.commands import checkpoints, runs
from fmnist_lightning.data.datasets import ImageBatch
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.safe_files import create_first_free, numbered
from fmnist_lightning.training.module import FashionMNISTClassifier
from fmnist_lightning.training.prediction import Prediction, rank_classes

CSV_COLUMNS = ("file", "class_index", "class_name", "probability", "top3")


def load(path: str | Path, map_location: str | torch.device = "cpu") -> FashionMNISTClassifier:
    """The model of any project checkpoint (a run's, a published ``weights/*.ckpt``, a converted Keras model), in
    eval mode; it standardises its inputs as it was trained to (``model.standardize``), so ``predict_images`` and
    ``model(pixels)`` take plain [0, 1] pixels.

    The file is read by the one safe loader first (``checkpoints.read_checkpoint``: weights only, a registered
    model), and Lightning's second read is weights-only too, whatever torch's default or the environment say.
    """
    path = Path(path)
    saved = checkpoints.read_checkpoint(path, f"--ckpt_path {path}")  # a damaged or foreign file: UserInputError
    # on the registered class the file records, not the base: Lightning builds the class the checkpoint names only
    # through a class whose __init__ takes **kwargs
    model_class = checkpoints.model_class(saved)
    with checkpoints.safe_globals():
        model = model_class.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    return model.eval()


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
    run = runs.run_of_checkpoint(Path(checkpoint)) if checkpoint else None
    return run[0] / run[1] / f"version_{run[2]}" if run else Path()


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
