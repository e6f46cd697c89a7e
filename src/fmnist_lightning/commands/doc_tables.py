"""The README's models-and-results table, generated from the registry and the weights' cards, never typed.

``make docs`` rewrites the block between ``<!-- BEGIN GENERATED: models -->`` and ``<!-- END GENERATED: models -->``
in README.md; tests/test_doc_tables.py fails when the README's block is not what this renders.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from fmnist_lightning.registry import list_models
from fmnist_lightning.weights import read_card

BEGIN, END = "<!-- BEGIN GENERATED: models -->", "<!-- END GENERATED: models -->"


def models_table(weights_dir: Path) -> str:
    """One row per model: its facts, the study's figure, its published weights with their measured accuracy."""
    rows = [
        "| model | `create_model` name | parameters | the study's figure | published weights: test accuracy |",
        "|---|---|---:|---|---|",
    ]
    for info in list_models():
        study = f"{info.study.figure} ({info.study.measure})" if info.study else "—"
        published = []
        for name in info.weights:
            card = read_card(weights_dir / f"{name}.md")
            published.append(f"[`{name}`](weights/{name}.md) {100 * card['test_accuracy']:.2f} %")
        row = [f"`{info.class_name}` {info.title}", f"`{info.name}`", f"{info.parameters:,}", study]
        rows.append("| " + " | ".join([*row, ", ".join(published) or "—"]) + " |")
    return "\n".join(rows)


def render(readme: str, weights_dir: Path) -> str:
    """``readme`` with its generated block replaced by the current table."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no {BEGIN} … {END} block")
    return pattern.sub(lambda _: f"{BEGIN}\n{models_table(weights_dir)}\n{END}", readme)


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate README.md's models-and-results table.")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--weights_dir", type=Path, default=Path("weights"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's table is stale; write nothing")
    options = parser.parse_args(args)
    current = options.readme.read_text()
    wanted = render(current, options.weights_dir)
    if options.check:
        if wanted != current:
            print(f"{options.readme}'s models table is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    options.readme.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
