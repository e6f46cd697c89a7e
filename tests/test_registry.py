"""The registry: every model's facts are true of the model, and adding one is one file and one decorator."""

from __future__ import annotations

import re
import sys

import pytest

from fmnist_lightning import registry
from fmnist_lightning.commands.main import main
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.models import MODELS, count_params
from support import REPO


@pytest.mark.parametrize("info", registry.BUILTIN, ids=lambda info: info.name)
def test_builtin_facts_are_the_models(info):
    model = registry.create_model(info.name)
    assert f"{type(model).__module__.rsplit('.', 1)[0]}.{type(model).__name__}" == info.class_path
    assert count_params(model) == info.parameters
    assert all((REPO / config).is_file() for config in info.configs)
    assert all((REPO / "weights" / f"{name}.ckpt").is_file() for name in info.weights)


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


def test_a_builtin_name_cannot_be_taken_by_another_class():
    with pytest.raises(ValueError, match=r"the project's own model is fmnist_lightning\.models\.LeNet5"):
        registry.register_model("lenet")(type("Impostor", (), {}))


def architecture_example() -> str:
    """The code block under docs/architecture.md's ``<!-- example: my_models.py -->`` marker."""
    text = (REPO / "docs" / "architecture.md").read_text()
    return re.search(r"<!-- example: my_models.py -->\n```python\n(.*?)```", text, re.S).group(1)


def test_the_documented_way_to_add_a_model(tmp_path, tiny_data, monkeypatch, capsys):
    (tmp_path / "my_models.py").write_text(architecture_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the toy model stays in this test
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
