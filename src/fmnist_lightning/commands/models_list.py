"""``models``: the registered models with their facts and published weights, without importing torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmnist_lightning.registry import ModelInfo, list_models
from fmnist_lightning.weights import read_card


def models_command(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fmnist_lightning models",
        description="List the models: registry name, class path, parameters (Keras's count_params() of the default "
        "build), the study's figure, and the published weights with their test accuracy (from weights/*.md).",
    )
    parser.add_argument("--weights_dir", type=Path, default=Path("weights"), help="where the cards are (weights/)")
    options = parser.parse_args(args)
    print(f"{'name':<18} {'class path':<42} {'parameters':>11}  study / published weights (test accuracy)")
    for info in list_models():
        print(f"{info.name:<18} {info.class_path:<42} {info.parameters:>11,}  {_results(info, options.weights_dir)}")
    return 0


def _results(info: ModelInfo, weights_dir: Path) -> str:
    parts = [f"study {info.study.figure}"] if info.study else []
    for name in info.weights:
        card_path = weights_dir / f"{name}.md"
        if not card_path.is_file():
            parts.append(f"{name} (no card here)")
            continue
        card = read_card(card_path)
        # a published build other than the default (best_gpu.yaml's WRN-16-4 beside WideResNet's WRN-16-2)
        size = f" ({card['parameters']:,} parameters)" if card["parameters"] != info.parameters else ""
        parts.append(f"{name} {100 * card['test_accuracy']:.2f} %{size}")
    return "; ".join(parts) or "—"
