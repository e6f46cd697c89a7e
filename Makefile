# `make train` and `make test` each set everything up first (a venv in .venv with pip; torch comes from
# pip's configured index or wheel cache). DATA_DIR: the real files beside the repo when present, else data/
# (torchvision downloads there).
PYTHON ?= python3
VENV ?= .venv
DATA_DIR ?= $(firstword $(wildcard ../shared/data/fashion-mnist) data)
CONFIG ?= configs/lenet.yaml

.PHONY: setup train test lint tensorboard parity-report docs study

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

train: setup
	$(VENV)/bin/python -m fmnist_lightning fit --config $(CONFIG) --data.data_dir $(DATA_DIR)

lint: setup
	$(VENV)/bin/ruff check src tests

# two workers (pytest-xdist) that take tests from each other's queue when idle (worksteal): a worker may then build a
# file's module fixtures too, but neither waits on the other's biggest files (10 min 08 s with whole files per worker,
# 7 min 42 s so, on the 2-core zen4, 2026-12-07)
test: lint
	$(VENV)/bin/python -m pytest -n 2 --dist worksteal

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir tensorboard_logs

# README.md's models-and-results table, from the registry and the weights' cards (a test fails when it is stale)
docs: setup
	$(VENV)/bin/python -m fmnist_lightning.commands.doc_tables

# docs/parity.md: the parity tests' measured differences against Keras, from a run that asserts them
parity-report: setup
	$(VENV)/bin/python -m pytest tests/parity -q --parity-report docs/parity.md

# The four study recipes in full, each tested as the study reported it (the final epoch; the "EfficientNet" on its
# best val-loss epoch, Keras's restore_best_weights), then compared: reports/comparison.md. About 25 min on 2 cores.
study: setup
	for config in lenet brownlee custom_cnn seed_efficientnet; do \
	  ckpt=last; [ $$config = seed_efficientnet ] && ckpt=best; \
	  $(VENV)/bin/python -m fmnist_lightning fit --config configs/$$config.yaml --data.data_dir $(DATA_DIR) && \
	  $(VENV)/bin/python -m fmnist_lightning test --config configs/$$config.yaml --data.data_dir $(DATA_DIR) \
	    --ckpt_path $$ckpt || exit 1; \
	done
	$(VENV)/bin/python -m fmnist_lightning compare tensorboard_logs --out reports
