"""Each private Lightning name in lightning_private.py exists in the installed Lightning with the shape used there.

Behaviour is tested where each is used (tests/test_faults.py: the validation rewind; tests/test_recipe_features.py:
the EMA's averaging function and batch-norm statistics; tests/test_speed_options.py: steps without hooks, weight
averaging after each step; tests/test_published_weights.py: a checkpoint read once, of an earlier version too); this
names what broke when a Lightning release renames one."""

from __future__ import annotations

import inspect

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.core import saving
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loops.progress import _BatchProgress

from fmnist_lightning import lightning_private


def test_the_private_names_exist(tmp_path):
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert isinstance(lightning_private.should_update_logs(trainer), bool)
    assert lightning_private.training_step_index(trainer) == -1  # no training step yet
    progress = trainer.fit_loop.epoch_loop.val_loop.batch_progress
    assert isinstance(progress, _BatchProgress)
    assert {"ready", "started", "processed", "completed"} <= set(vars(progress.total))
    optimizer = LightningOptimizer(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    assert callable(optimizer._on_before_step) and callable(optimizer._on_after_step)
    ema = EMAWeightAveraging()
    assert isinstance(ema._kwargs, dict) and ema._average_model is None
    assert "multi_avg_fn" in inspect.signature(torch.optim.swa_utils.AveragedModel).parameters
    writer = TensorBoardLogger(tmp_path).experiment
    assert callable(writer._get_file_writer().add_summary)
    with lightning_private.jit_is_scripting():
        pass
    assert list(inspect.signature(LightningCLI._instantiate_trainer).parameters) == ["self", "config", "callbacks"]
    assert isinstance(saving._ALLOWED_INSTANTIATORS, set)
    assert list(inspect.signature(saving._load_state).parameters) == ["cls", "checkpoint", "strict", "cls_kwargs_new"]


def test_the_private_names_of_steps_per_execution():
    """The fit loop's loader source, the logger's step count and the two optimizer-step counts (behaviour:
    tests/test_speed_options.py)."""
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    loader = torch.utils.data.DataLoader(range(10), batch_size=2)
    trainer.fit_loop._data_source.instance = loader  # as Trainer.fit attaches loaders passed to it
    undo = lightning_private.regroup_train_loaders(trainer, lambda given: ("regrouped", given))
    assert trainer.fit_loop._data_source.dataloader() == ("regrouped", loader)
    assert trainer.fit_loop._data_source.is_defined() and not trainer.fit_loop._data_source.is_module()
    undo()
    assert trainer.fit_loop._data_source.dataloader() is loader
    assert lightning_private.logger_step(trainer) == 0
    lightning_private.set_logger_step(trainer, 41)
    assert lightning_private.logger_step(trainer) == 41
    automatic, manual = lightning_private.optimizer_step_counters(trainer)
    manual.completed = 3
    automatic.load_state_dict(manual.state_dict())
    assert automatic.completed == 3 and automatic is not manual
    trainer.strategy.connect(BoringModel())
    assert trainer.global_step == 3  # the automatic count, read in automatic optimization
    trainer.lightning_module.automatic_optimization = False
    manual.completed = 5
    assert trainer.global_step == 5
