"""The registry: every model's facts are true of the model, and adding one is one file and one decorator."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys

import pytest

from fmnist_lightning import registry
from fmnist_lightning.commands.main import main
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.models import MODELS, count_params
from support import REPO


@pytest.mark.parametrize("info", registry.builtin_models(), ids=lambda info: info.name)
def test_builtin_facts_are_the_models(info):
    """The facts read from the file's decorator are the class's: where it is defined, its public class path, its
    parameter count in a real build, its configs and weights."""
    model = registry.create_model(info.name)
    assert f"{type(model).__module__}.{type(model).__qualname__}" == info.defined_at
    module, _, class_name = info.class_path.rpartition(".")
    assert getattr(importlib.import_module(module), class_name) is type(model)
    assert count_params(model) == info.parameters
    assert all((REPO / config).is_file() for config in info.configs)
    assert all((REPO / "weights" / f"{name}.ckpt").is_file() for name in info.weights)


def test_the_listing_order_is_the_study_s_four_then_the_others_by_name():
    assert [info.name for info in registry.list_models()][: len(MODELS)] == [
        "lenet",
        "brownlee",
        "custom_cnn",
        "seed_efficientnet",
        "efficientnet",
        "fast_cnn",
        "wide_resnet",
    ]
    assert [info.name for info in registry.list_models() if info.study is not None] == [
        "lenet",
        "brownlee",
        "custom_cnn",
        "seed_efficientnet",
    ]


def test_every_model_class_is_registered_under_its_class_path():
    assert [registry.model_class(model.__name__) for model in MODELS] == list(MODELS)
    assert [info.class_path for info in registry.list_models()][: len(MODELS)] == [
        f"fmnist_lightning.models.{model.__name__}" for model in MODELS
    ]


def test_lookup_by_name_class_name_or_path_and_unknown_names():
    assert registry.get_model_info("lenet") is registry.get_model_info("fmnist_lightning.models.LeNet5")
    assert registry.get_model_info("LeNet5").name == "lenet"
    with pytest.raises(UserInputError, match=r"unknown model 'os\.system'"):
        registry.model_class("os.system")


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry's tables as copies, so that what a test registers stays in the test."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_CLASSES", dict(registry._CLASSES))


def test_a_taken_name_refuses_another_class(scratch_registry):
    taken = (
        r"register_model\('lenet'\): the name is taken by fmnist_lightning\.models\.LeNet5; .*Impostor needs another"
    )
    with pytest.raises(ValueError, match=taken):
        registry.register_model("lenet", parameters=0)(type("Impostor", (), {}))
    registry.register_model("toy", parameters=1)(type("Toy", (), {}))
    with pytest.raises(ValueError, match=r"the name is taken by .*\.Toy; .*\.OtherToy needs another"):
        registry.register_model("toy", parameters=1)(type("OtherToy", (), {}))


def test_the_same_class_again_replaces_its_entry(scratch_registry):
    """A re-import or ``importlib.reload`` makes a new class object of the same module and qualname."""
    first = registry.register_model("toy", parameters=1)(type("Toy", (), {}))
    again = registry.register_model("toy", parameters=2)(type("Toy", (), {}))
    assert first is not again and registry.model_class("toy") is again
    assert [info.parameters for info in registry.list_models() if info.name == "toy"] == [2]


def architecture_example(file_name: str) -> str:
    """The code block under docs/architecture.md's ``<!-- example: FILE_NAME -->`` marker."""
    text = (REPO / "docs" / "architecture.md").read_text()
    return re.search(rf"<!-- example: {re.escape(file_name)} -->\n```python\n(.*?)```", text, re.S).group(1)


def test_the_documented_way_to_add_a_model(tmp_path, tiny_data, monkeypatch, capsys, scratch_registry):
    (tmp_path / "my_models.py").write_text(architecture_example("my_models.py"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import my_models

    try:
        assert count_params(my_models.TinyMLP()) == registry.get_model_info("tiny_mlp").parameters
        fit = ["fit", "--config", str(REPO / "configs/lenet.yaml"), "--model", "my_models.TinyMLP"]
        quick = ["--data.data_dir", str(tiny_data), "--trainer.fast_dev_run", "true"]
        assert main([*fit, *quick]) == 0
        capsys.readouterr()
        assert main(["models"]) == 0
        assert re.search(r"^tiny_mlp +my_models\.TinyMLP +50,890", capsys.readouterr().out, re.M)
    finally:
        sys.modules.pop("my_models", None)


# run in a copy of the package holding the documented file: listed without torch, then built and found by class path
BUILTIN_EXAMPLE_CHECK = """
import sys
from fmnist_lightning.commands.main import main
main(["models"])
print("torch imported:", "torch" in sys.modules)
import fmnist_lightning
from fmnist_lightning.models import MLP, count_params
model = fmnist_lightning.create_model("mlp")
print(type(model) is MLP is fmnist_lightning.MLP, count_params(model))
"""


def test_the_documented_way_to_add_a_builtin_model(tmp_path):
    package = tmp_path / "fmnist_lightning"
    shutil.copytree(REPO / "src" / "fmnist_lightning", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "models" / "mlp.py").write_text(architecture_example("models/mlp.py"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", BUILTIN_EXAMPLE_CHECK], capture_output=True, text=True, check=True, cwd=REPO, env=env
    )
    listing = run.stdout.splitlines()
    study_s_four = ["lenet", "brownlee", "custom_cnn", "seed_efficientnet"]
    others_by_name = ["efficientnet", "fast_cnn", "mlp", "wide_resnet"]
    assert [line.split()[0] for line in listing[1:9]] == study_s_four + others_by_name
    assert re.search(r"^mlp +fmnist_lightning\.models\.MLP +50,890  —$", run.stdout, re.M)
    assert listing[9:] == ["torch imported: False", "True 50890"]


def test_models_lists_published_accuracy_and_a_build_other_than_the_default(tmp_path, capsys):
    """The card's accuracy beside its model; a card whose file has another parameter count than the model's default
    build (a WRN-16-4 published for WideResNet, whose default is WRN-16-2) says so."""
    card = "---\nfile: best.ckpt\nmodel: WideResNet\nparameters: {}\ntest_accuracy: 0.9561\n---\n"
    (tmp_path / "best.md").write_text(card.format(2748890))
    (tmp_path / "fast.md").write_text(card.format(registry.get_model_info("fast_cnn").parameters))
    assert main(["models", "--weights_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^wide_resnet .*  best 95\.61 % \(2,748,890 parameters\)$", out, re.M)
    assert "fast 95.61 %; fast93 (no card here)" in out
