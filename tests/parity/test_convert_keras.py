"""``convert-keras`` as a user runs it, and the round trip of a Keras model trained on the real data."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest
from keras_models import brownlee_cnn, lenet5

from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.commands.main import main
from support import cli_in_process, run_in_process, study_arrays
from test_cli import one_line_error


@pytest.fixture
def keras_file(tmp_path: Path) -> Path:
    path = tmp_path / "lenet.keras"
    lenet5().save(path)
    return path


def test_converted_checkpoint_is_accepted_by_test_and_predict(tmp_path, tiny_data, keras_file, monkeypatch, capsys):
    convert = ["convert-keras", str(keras_file), "--model", "LeNet5", "--out", "lenet.ckpt"]
    assert run_in_process(convert, tmp_path, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "wrote lenet.ckpt: LeNet5" in out and "61,706 parameters" in out
    data = ["--data.data_dir", str(tiny_data)]
    for command in ("test", "predict"):  # no --config: the checkpoint names its model
        assert run_in_process([command, "--ckpt_path", "lenet.ckpt", *data], tmp_path, monkeypatch) == 0
    # a checkpoint outside a run folder is evaluated without making a run folder (issue 28; asked for with a logger)
    assert not (tmp_path / "tensorboard_logs").exists()


def test_convert_keras_never_overwrites_and_names_the_mismatch(tmp_path, keras_file, monkeypatch, capsys):
    def cli(*args: str, cwd: Path):  # in the test's process: a new one would import Keras again to say one line
        return cli_in_process(args, cwd, monkeypatch, capsys)

    existing = tmp_path / "lenet.ckpt"
    existing.write_bytes(b"a user's checkpoint")
    error = one_line_error(cli("convert-keras", str(keras_file), "--model", "LeNet5", cwd=tmp_path))
    assert "lenet.ckpt already exists; choose another --out" in error
    assert existing.read_bytes() == b"a user's checkpoint"
    brownlee = tmp_path / "brownlee.weights.h5"
    brownlee_cnn().save_weights(brownlee)
    error = one_line_error(cli("convert-keras", str(brownlee), "--model", "LeNet5", "--out", "b.ckpt", cwd=tmp_path))
    assert "Keras layer 'conv2d' (Conv2D, weights [(3, 3, 1, 32), (32,)]) does not match LeNet5 layer net.0" in error
    assert not (tmp_path / "b.ckpt").exists()


@pytest.mark.real_data
def test_keras_model_trained_one_epoch_keeps_its_test_accuracy(parity, real_data, tmp_path, monkeypatch):
    """The study's LeNet-5 recipe (SGD lr 0.01, batch 64) for one epoch in Keras, converted, tested by the CLI."""
    keras.utils.set_random_seed(0)
    (x_train, train_labels), (x_test, test_labels) = (study_arrays(real_data, split) for split in ("train", "test"))
    y_train, y_test = keras.utils.to_categorical(train_labels, 10), keras.utils.to_categorical(test_labels, 10)
    model = lenet5()
    model.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    _, keras_accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    model.save(tmp_path / "lenet.keras")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["fmnist"])  # LightningCLI warns when pytest's own arguments are there
    assert main(["convert-keras", "lenet.keras", "--model", "LeNet5", "--out", "lenet.ckpt"]) == 0
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    run = FashionMNISTCLI(["test", "--ckpt_path", "lenet.ckpt", "--data.data_dir", str(real_data), *quiet])
    accuracy = run.trainer.callback_metrics["test/acc"].item()
    print(f"one-epoch Keras LeNet-5: Keras test accuracy {keras_accuracy:.4%}, converted checkpoint {accuracy:.4%}")
    assert keras_accuracy > 0.7  # it learned, so equal accuracies are not two chance levels
    check = f"convert-keras round trip, one epoch: test accuracy (Keras {keras_accuracy:.2%}) − checkpoint's, in pp"
    parity("LeNet5", check, abs(accuracy - keras_accuracy) * 100, 0.01)
