"""The README's models-and-results table is the registry's and the cards' (``make docs`` regenerates it)."""

from __future__ import annotations

from fmnist_lightning.commands.doc_tables import BEGIN, END, models_table, render
from support import REPO


def test_readme_models_table_is_current():
    readme = (REPO / "README.md").read_text()
    assert BEGIN in readme and END in readme
    assert render(readme, REPO / "weights") == readme, "README.md's models table is stale: run `make docs`"


def test_the_table_carries_the_registry_and_the_cards():
    table = models_table(REPO / "weights")
    assert "| `LeNet5` LeNet-5 | `lenet` | 61,706 | 89.16 % (test accuracy after epoch 20) |" in table
    assert "[`lenet`](weights/lenet.md) 88.88 %" in table and "[`best`](weights/best.md) 94.61 %" in table
