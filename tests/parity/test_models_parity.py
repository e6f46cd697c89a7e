"""Each Lightning model against the study's Keras model: parameter counts, and outputs after weight conversion."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import torch
from fixtures.make_lenet5_keras2_h5 import keras2_weights
from keras_models import brownlee_cnn, custom_cnn, lenet5, seed_efficientnet

from fmnist_lightning import UserInputError
from fmnist_lightning.commands.convert_keras import load_keras_weights
from fmnist_lightning.models import BrownleeCNN, CustomCNN, LeNet5, SeedEfficientNet, count_params
from support import study_arrays

KERAS2_FILE = Path(__file__).with_name("fixtures") / "lenet5_keras2.h5"
PAIRS = [(lenet5, LeNet5), (brownlee_cnn, BrownleeCNN), (custom_cnn, CustomCNN), (seed_efficientnet, SeedEfficientNet)]
IDS = [torch_class.__name__ for _, torch_class in PAIRS]


def randomize_batchnorm_statistics(keras_model: keras.Model, rng: np.random.Generator) -> None:
    """Fresh BN layers have mean 0 and variance 1, which would hide a mix-up of the running statistics."""
    for layer in keras_model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma * rng.uniform(0.5, 1.5, gamma.shape), beta + rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2.0, var.shape)])  # fmt: skip


def keras_probabilities(keras_model: keras.Model, images: torch.Tensor) -> np.ndarray:
    """Keras's softmax output for NCHW images (Keras reads them channels-last)."""
    return keras.ops.convert_to_numpy(keras_model(images.permute(0, 2, 3, 1).numpy(), training=False))


@pytest.mark.parametrize(("build_keras", "torch_class"), PAIRS, ids=IDS)
def test_parameter_counts_equal_keras_count_params(parity, build_keras, torch_class):
    keras_model, model = build_keras(), torch_class()
    keras_trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counts = {
        "total": (count_params(model), keras_model.count_params()),
        "trainable": (trainable, keras_trainable),
        "non-trainable": (count_params(model) - trainable, keras_model.count_params() - keras_trainable),
    }
    for kind, (ours, theirs) in counts.items():
        parity(torch_class.__name__, f"parameters: {kind} ({theirs:,} in Keras), |ours − Keras|", abs(ours - theirs), 0)


@pytest.mark.parametrize(("build_keras", "torch_class"), PAIRS, ids=IDS)
def test_converted_weights_give_keras_outputs(parity, build_keras, torch_class):
    keras.utils.set_random_seed(0)
    keras_model = build_keras()
    randomize_batchnorm_statistics(keras_model, np.random.default_rng(0))
    model = load_keras_weights(torch_class(), keras_model).eval()
    images = torch.rand(64, 1, 28, 28)
    with torch.no_grad():
        ours = model(images).softmax(1).numpy()
    difference = np.abs(ours - keras_probabilities(keras_model, images)).max()
    parity(torch_class.__name__, "forward: max |softmax difference|, 64 random images", difference, 1e-5)


SAVED = [(lenet5, LeNet5, ".keras"), (lenet5, LeNet5, ".h5"), (custom_cnn, CustomCNN, ".weights.h5"),
         (seed_efficientnet, SeedEfficientNet, ".weights.h5")]  # fmt: skip


@pytest.mark.parametrize(("build_keras", "torch_class", "suffix"), SAVED, ids=[f"{c.__name__}{s}" for _, c, s in SAVED])
def test_converter_reads_a_saved_keras_file(parity, tmp_path, build_keras, torch_class, suffix):
    """``.keras`` and legacy ``.h5`` hold the model; ``.weights.h5`` only weights, named by layer class."""
    keras.utils.set_random_seed(1)
    keras_model = build_keras()
    randomize_batchnorm_statistics(keras_model, np.random.default_rng(1))
    path = tmp_path / f"model{suffix}"
    keras_model.save_weights(path) if suffix == ".weights.h5" else keras_model.save(path)
    model = load_keras_weights(torch_class(), str(path)).eval()
    images = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        ours = model(images).softmax(1).numpy()
    difference = np.abs(ours - keras_probabilities(keras_model, images)).max()
    parity(torch_class.__name__, f"forward: {suffix} file converted, max |softmax difference|", difference, 1e-5)


def test_converter_reads_a_keras2_h5_file(parity):
    """A LeNet-5 saved by Keras 2 (tf_keras 2.21, ``fixtures/make_lenet5_keras2_h5.py``), as the study's era saved."""
    keras_model = lenet5()
    keras_model.set_weights(keras2_weights([tuple(w.shape) for w in keras_model.weights]))
    model = load_keras_weights(LeNet5(), KERAS2_FILE).eval()
    images = torch.rand(64, 1, 28, 28)
    with torch.no_grad():
        ours = model(images).softmax(1).numpy()
    difference = np.abs(ours - keras_probabilities(keras_model, images)).max()
    parity("LeNet5", "forward: Keras-2 .h5 file converted, max |softmax difference|", difference, 1e-5)


def test_weights_file_of_another_architecture_names_the_first_mismatch(tmp_path):
    path = tmp_path / "brownlee.weights.h5"
    brownlee_cnn().save_weights(path)
    with pytest.raises(UserInputError, match=r"Keras layer 'conv2d' \(Conv2D, weights \[\(3, 3, 1, 32\), \(32,\)\]\)"):
        load_keras_weights(LeNet5(), path)
    mismatch = r"Keras layer 'dense' \(Dense, .*\) does not match CustomCNN layer net.2 \(\w*BatchNorm2d"
    with pytest.raises(UserInputError, match=mismatch):
        load_keras_weights(CustomCNN(), path)


def test_missing_or_unreadable_keras_file_is_a_clear_error(tmp_path):
    with pytest.raises(UserInputError, match=r"Keras file .*absent.keras not found"):
        load_keras_weights(LeNet5(), tmp_path / "absent.keras")
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(UserInputError, match=r"cannot read Keras weights .*broken.weights.h5"):
        load_keras_weights(LeNet5(), broken)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(UserInputError, match=r"cannot load Keras model .*broken.keras"):
        load_keras_weights(LeNet5(), broken)


def test_wrong_architecture_names_the_first_mismatching_layer():
    expected = (
        r"Keras layer 'conv2d\w*' \(Conv2D, weights \[\(3, 3, 1, 32\), \(32,\)\]\) does not match "
        r"LeNet5 layer net.0 \(Conv2d, weights \[\(6, 1, 5, 5\), \(6,\)\]\)"
    )
    with pytest.raises(UserInputError, match=expected):
        load_keras_weights(LeNet5(), brownlee_cnn())
    longer = lenet5()
    longer.add(keras.layers.Dense(10, name="extra_dense"))
    with pytest.raises(UserInputError, match="has 6 weighted layers, LeNet5 has 5: Keras layer 'extra_dense' has no"):
        load_keras_weights(LeNet5(), longer)


@pytest.fixture(scope="module")
def real_test_set(real_data, tmp_path_factory):
    from fmnist_lightning import FashionMNISTDataModule
    from fmnist_lightning.data import DataFiles, Validation

    files = DataFiles(download=False, cache_dir=str(tmp_path_factory.mktemp("c")))
    data = FashionMNISTDataModule(str(real_data), validation=Validation(protocol="test"), files=files)
    data.setup("test")
    return data.test_set


@pytest.mark.parametrize(("build_keras", "torch_class"), PAIRS, ids=IDS)
def test_converted_weights_give_keras_outputs_on_real_images(parity, real_test_set, build_keras, torch_class):
    keras.utils.set_random_seed(0)
    keras_model = build_keras()
    randomize_batchnorm_statistics(keras_model, np.random.default_rng(0))
    model = load_keras_weights(torch_class(), keras_model).eval()
    images, _ = real_test_set.__getitems__(list(range(256)))
    with torch.no_grad():
        ours = model(images).softmax(1).numpy()
    difference = np.abs(ours - keras_probabilities(keras_model, images)).max()
    parity(torch_class.__name__, "forward: max |softmax difference|, first 256 real test images", difference, 1e-5)


def test_preprocessing_equals_the_studys_keras_preprocessing(parity, real_test_set, real_data):
    """The study: ``x / 255.0`` as float32 and ``to_categorical(y)``, read from the same files."""
    x_keras, labels = study_arrays(real_data, "test")
    y_keras = keras.utils.to_categorical(labels, 10)
    images, targets = real_test_set.__getitems__(list(range(len(labels))))
    assert images.dtype == targets.dtype == torch.float32
    count = f"{len(labels):,} test images"
    parity(
        "DataModule",
        f"preprocessing: images vs x / 255.0, {count}",
        np.abs(images.permute(0, 2, 3, 1).numpy() - x_keras).max(),
        0,
    )
    parity(
        "DataModule",
        f"preprocessing: targets vs to_categorical(y), {count}",
        np.abs(targets.numpy() - y_keras).max(),
        0,
    )
