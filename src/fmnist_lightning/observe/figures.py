"""The figures a run writes: confusion matrices, sample grids and learning curves (matplotlib, no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torchmetrics.classification import MulticlassConfusionMatrix

from fmnist_lightning.fashion_mnist import CLASS_NAMES

CURVES = {"acc": "accuracy", "loss": "loss"}


def confusion_matrix_figure(matrix: torch.Tensor, title: str, numbers: bool = True) -> Figure:
    """Counts and row-normalised (recall per true class) side by side, drawn by torchmetrics' own ``plot``.

    ``numbers=False`` leaves out the 200 cell labels, which take most of the ~1 s the figure costs to render.
    """
    figure = Figure(figsize=(18, 8), dpi=60, layout="constrained")
    counts_ax, normalised_ax = figure.subplots(1, 2)
    plotter = MulticlassConfusionMatrix(len(CLASS_NAMES))
    matrix = matrix.cpu()
    normalised = (matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1)).round(decimals=2)
    plotter.plot(val=matrix, ax=counts_ax, labels=list(CLASS_NAMES), add_text=numbers)
    plotter.plot(val=normalised, ax=normalised_ax, labels=list(CLASS_NAMES), add_text=numbers)
    counts_ax.set_title(f"{title}: counts", fontsize=16)
    normalised_ax.set_title(f"{title}: row-normalised", fontsize=16)
    return figure


def per_class_table(matrix: torch.Tensor) -> str:
    """Precision, recall and F1 per class as Markdown, derived from the (DDP-synced) confusion matrix.

    Derived here rather than with three more torchmetrics objects: the matrix already holds every count.
    """
    matrix = matrix.double()
    correct = matrix.diag()
    precision = correct / matrix.sum(dim=0).clamp(min=1)
    recall = correct / matrix.sum(dim=1).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    rows = [
        f"| {name} | {p:.4f} | {r:.4f} | {f:.4f} | {int(n)} |"
        for name, p, r, f, n in zip(CLASS_NAMES, precision, recall, f1, matrix.sum(dim=1), strict=True)
    ]
    return "\n".join(["| class | precision | recall | F1 | support |", "|---|---|---|---|---|", *rows])


def confusion_matrix_markdown(matrix: torch.Tensor) -> str:
    """Rows are true classes, columns predicted ones, as a Markdown table TensorBoard's TEXT tab renders."""
    header = "| true \\ predicted | " + " | ".join(CLASS_NAMES) + " |"
    rule = "|---" * (len(CLASS_NAMES) + 1) + "|"
    rows = [
        f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |"
        for name, row in zip(CLASS_NAMES, matrix, strict=True)
    ]
    return "\n".join([header, rule, *rows])


def sample_grid(images: torch.Tensor, labels: torch.Tensor, probabilities: torch.Tensor, title: str) -> Figure:
    """Images with their true class, predicted class and its probability (red where they differ)."""
    columns = 8
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(2 * columns, 2.3 * rows + 0.6), layout="constrained")
    figure.suptitle(title, fontsize=14)
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for ax in axes:
        ax.axis("off")
    for ax, image, label, probs in zip(axes, images, labels, probabilities, strict=False):
        predicted = int(probs.argmax())
        ax.imshow(image.squeeze(0).cpu().float(), cmap="gray")
        ax.set_title(
            f"true {CLASS_NAMES[int(label)]}\npred {CLASS_NAMES[predicted]} {probs[predicted]:.2f}",
            fontsize=9,
            color="black" if predicted == int(label) else "red",
        )
    return figure


def save_learning_curves(metrics: dict[str, Any], path: Path) -> None:
    """Training and validation accuracy and loss by epoch, as the study plotted them."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    for ax, (name, label) in zip(figure.subplots(1, 2), CURVES.items(), strict=True):
        for stage in ("train", "val"):
            values = metrics.get(f"{stage}_{name}_by_epoch", [])
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=stage)
        ax.set(xlabel="epoch", ylabel=label, title=f"{metrics['model']}: {label}")
        ax.legend()
        ax.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
