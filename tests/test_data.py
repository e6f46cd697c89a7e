from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace
from urllib.error import URLError

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from sklearn.model_selection import KFold
from torchvision.datasets import FashionMNIST

from fmnist_lightning import CLASS_NAMES, UserInputError
from fmnist_lightning.data import Augmentation, DataFiles, Validation
from fmnist_lightning.data.datasets import InMemoryImages, kfold_indices
from fmnist_lightning.fashion_mnist import MEAN, STD
from fmnist_lightning.models import LeNet5
from support import idx_bytes, sample_ids, write_dataset


def batch_of(loader) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(loader))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_class_names_are_the_ten_fashion_mnist_classes():
    assert CLASS_NAMES == (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )


def test_batches_are_scaled_images_and_one_hot_targets(tmp_path, make_datamodule):
    arrays = write_dataset(tmp_path / "d")
    dm = make_datamodule(tmp_path / "d", batch_size=16, validation=Validation(protocol="test"))
    images, targets = batch_of(dm.train_dataloader())
    assert images.shape == (16, 1, 28, 28) and images.dtype == torch.float32
    assert targets.shape == (16, 10) and targets.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(targets.sum(1), torch.ones(16)) and set(targets.unique().tolist()) == {0.0, 1.0}

    test_images, test_targets = batch_of(dm.test_dataloader())  # unshuffled: the file's order
    expected = torch.from_numpy(arrays["test", "images"]).float().unsqueeze(1) / 255
    assert torch.equal(test_images, expected)
    assert torch.equal(test_targets.argmax(1), torch.from_numpy(arrays["test", "labels"]).long())
    assert len(dm.train_set) == 120 and len(dm.test_set) == 40


def test_standardize_uses_the_training_mean_and_std(tmp_path, make_datamodule):
    """The model owns its standardisation: the data stays x / 255, the model's ``preprocess`` standardises."""
    arrays = write_dataset(tmp_path / "d")
    dm = make_datamodule(tmp_path / "d")
    images, _ = batch_of(dm.test_dataloader())
    expected = (torch.from_numpy(arrays["test", "images"]).float().unsqueeze(1) / 255 - MEAN) / STD
    torch.testing.assert_close(LeNet5(standardize=True).preprocess(images), expected)
    assert torch.equal(LeNet5().preprocess(images), images)


def test_label_smoothing_softens_training_targets_only(tiny_data, make_datamodule):
    dm = make_datamodule(tiny_data, augmentation=Augmentation(label_smoothing=0.1))
    _, train_targets = batch_of(dm.train_dataloader())
    assert torch.allclose(train_targets.max(1).values, torch.tensor(0.91)) and torch.allclose(
        train_targets.min(1).values, torch.tensor(0.01)
    )
    _, val_targets = batch_of(dm.val_dataloader())
    assert set(val_targets.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize(
    ("layout", "compress"), [("flat", True), ("flat", False), ("torchvision", True), ("torchvision", False)]
)
def test_every_layout_loads_the_same_data_without_writing_to_data_dir(tmp_path, make_datamodule, layout, compress):
    arrays = write_dataset(tmp_path / "d", compress=compress, layout=layout)
    before = snapshot(tmp_path / "d")
    dm = make_datamodule(tmp_path / "d", validation=Validation(protocol="test"))
    assert snapshot(tmp_path / "d") == before
    assert np.array_equal(dm.test_set.images.squeeze(1).numpy(), arrays["test", "images"])
    assert np.array_equal(dm.train_set.labels.numpy(), arrays["train", "labels"])


@pytest.mark.parametrize(("val_size", "expected"), [(0.25, 30), (20, 20)])
def test_split_holds_out_a_seeded_disjoint_part_of_train(tiny_data, make_datamodule, val_size, expected):
    dm = make_datamodule(tiny_data, validation=Validation(val_size=val_size))
    val_ids, train_ids = sample_ids(dm.val_set.images), sample_ids(dm.train_set.images)
    assert len(val_ids) == expected and len(train_ids) == 120 - expected
    assert set(val_ids).isdisjoint(train_ids) and set(val_ids) | set(train_ids) == set(range(120))
    again = make_datamodule(tiny_data, validation=Validation(val_size=val_size))
    assert np.array_equal(sample_ids(again.val_set.images), val_ids)
    other_seed = make_datamodule(tiny_data, validation=Validation(val_size=val_size, split_seed=2))
    assert not np.array_equal(sample_ids(other_seed.val_set.images), val_ids)


def test_test_validation_uses_the_official_test_set_and_all_of_train(tiny_data, make_datamodule):
    dm = make_datamodule(tiny_data, validation=Validation(protocol="test"))
    assert dm.val_set is dm.test_set
    assert set(sample_ids(dm.train_set.images)) == set(range(120))


def test_kfold_indices_are_sklearns_kfold_on_60000_images():
    folds = kfold_indices(60_000, 5, seed=1)
    sklearn = [val for _, val in KFold(5, shuffle=True, random_state=1).split(np.zeros(60_000))]
    assert [len(f) for f in folds] == [12_000] * 5
    for ours, theirs in zip(folds, sklearn, strict=True):
        assert np.array_equal(np.sort(ours), theirs)


@pytest.mark.parametrize("fold", range(5))
def test_kfold_validates_on_the_studys_fold(tiny_data, make_datamodule, fold):
    dm = make_datamodule(tiny_data, validation=Validation(protocol="kfold", num_folds=5, fold=fold))
    _, expected = list(KFold(5, shuffle=True, random_state=1).split(np.zeros(120)))[fold]
    assert np.array_equal(np.sort(sample_ids(dm.val_set.images)), expected)
    assert set(sample_ids(dm.train_set.images)) == set(range(120)) - set(expected)


class SeenImages(Callback):
    """The image batches the model receives, after the DataModule's device-side hooks."""

    def __init__(self) -> None:
        self.train: list[torch.Tensor] = []
        self.val: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.append(batch[0])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val.append(batch[0])


def test_training_batches_are_augmented_with_one_draw_per_image(tmp_path, make_datamodule):
    write_dataset(tmp_path / "d")
    dm = make_datamodule(
        tmp_path / "d",
        augmentation=Augmentation(affine=True),
        validation=Validation(protocol="test"),
        batch_size=64,
        eval_batch_size=40,
    )
    garment = torch.zeros(28, 28, dtype=torch.uint8)
    garment[6:22, 9:19] = 200  # one image repeated: any difference comes from the augmentation
    dm.train_set = InMemoryImages(garment.expand(64, 28, 28).clone(), torch.zeros(64, dtype=torch.long))
    seen = SeenImages()
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[seen],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(LeNet5(), datamodule=dm)
    (images,) = seen.train
    assert images.shape == (64, 1, 28, 28) and images.min() >= 0 and images.max() <= 200 / 255 + 1e-6
    assert len({tuple(img.flatten().tolist()) for img in images}) == 64
    assert not torch.equal(images[0], garment[None].float() / 255)
    # validation (here the test set) is never augmented
    assert all(torch.equal(batch, dm.test_set.__getitems__(range(40))[0]) for batch in seen.val)


def test_augmentation_fills_with_the_nearest_edge_pixel_before_standardisation(tmp_path, make_datamodule):
    """ImageDataGenerator's fill_mode 'nearest' on [0, 1] pixels: a uniform image, black or grey, stays uniform."""
    write_dataset(tmp_path / "d")
    dm = make_datamodule(tmp_path / "d", augmentation=Augmentation(affine=True))
    for grey in (0.0, 0.6):
        uniform = torch.full((16, 1, 28, 28), grey)
        standardised = LeNet5(standardize=True).preprocess(dm.image_transform(uniform))
        torch.testing.assert_close(standardised, torch.full_like(uniform, (grey - MEAN) / STD))


def test_download_is_used_only_when_files_are_missing(tmp_path, monkeypatch, make_datamodule):
    calls = []

    def fake_download(self):
        calls.append(self.root)
        write_dataset(Path(self.root), compress=False, layout="torchvision")

    monkeypatch.setattr(FashionMNIST, "download", fake_download)
    dm = make_datamodule(tmp_path / "empty", download=True)
    assert calls and len(dm.test_set) == 40
    calls.clear()
    make_datamodule(tmp_path / "empty", download=True)
    assert calls == []


def test_failed_download_names_the_folder_and_the_flag(tmp_path, monkeypatch, make_datamodule):
    def offline(self):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(FashionMNIST, "download", offline)
    with pytest.raises(UserInputError, match=r"could not download .*empty.*name resolution.*--data.data_dir"):
        make_datamodule(tmp_path / "empty", download=True)


def test_missing_file_error_names_folder_file_and_flag(tiny_data, make_datamodule):
    (tiny_data / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserInputError) as error:
        make_datamodule(tiny_data)
    message = str(error.value)
    assert str(tiny_data) in message and "t10k-labels-idx1-ubyte" in message and "--data.data_dir" in message
    assert "train-images" not in message


@pytest.mark.parametrize("damage", ["not_gzip", "truncated"])
def test_corrupt_gz_error_names_the_file(tiny_data, make_datamodule, damage):
    path = tiny_data / "train-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(b"this is not gzip data" if damage == "not_gzip" else data[: len(data) // 2])
    with pytest.raises(UserInputError, match=r"train-images-idx3-ubyte.gz is corrupt or truncated.*--data.data_dir"):
        make_datamodule(tiny_data)


def test_wrong_idx_magic_is_a_clear_error(tiny_data, make_datamodule):
    path = tiny_data / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x00\x00" + gzip.decompress(path.read_bytes())[4:]))
    with pytest.raises(UserInputError, match=r"cannot read the Fashion-MNIST t10k files .*--data.data_dir"):
        make_datamodule(tiny_data)


def test_images_and_labels_of_different_lengths_are_rejected(tiny_data, make_datamodule):
    labels = np.zeros(39, dtype=np.uint8)
    (tiny_data / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(UserInputError, match="has 40 images but t10k-labels has 39 labels"):
        make_datamodule(tiny_data)


def test_labels_outside_0_to_9_are_rejected(tiny_data, make_datamodule):
    labels = np.arange(40, dtype=np.uint8) % 10
    labels[[3, 7]] = [10, 255]
    (tiny_data / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(UserInputError, match=r"t10k-labels holds 2 labels outside 0–9 \(the first: 10\)"):
        make_datamodule(tiny_data)


def test_an_item_count_the_data_does_not_hold_is_a_clear_error(tiny_data, make_datamodule):
    """The IDX header promises 120 images; the file holds 119."""
    path = tiny_data / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[: -28 * 28]))
    with pytest.raises(UserInputError, match=r"cannot read the Fashion-MNIST train files .*--data.data_dir"):
        make_datamodule(tiny_data)


def test_unwritable_cache_is_a_clear_error(tiny_data, tmp_path):
    from fmnist_lightning import FashionMNISTDataModule

    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should go")
    dm = FashionMNISTDataModule(str(tiny_data), files=DataFiles(download=False, cache_dir=str(blocker / "cache")))
    with pytest.raises(UserInputError, match=r"--data\.files\.cache_dir"):
        dm.prepare_data()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"validation": Validation(protocol="kfold", fold=5)}, "--data.validation.fold"),
        ({"augmentation": Augmentation(label_smoothing=1.0)}, "--data.augmentation.label_smoothing"),
        ({"validation": Validation(val_size=0)}, "--data.validation.val_size"),
    ],
)
def test_bad_options_are_rejected_with_the_flag_name(kwargs, message):
    from fmnist_lightning import FashionMNISTDataModule

    with pytest.raises(UserInputError, match=message):
        FashionMNISTDataModule(**kwargs)


def test_class_names_are_torchvisions():
    assert tuple(FashionMNIST.classes) == CLASS_NAMES


def test_data_on_the_device_is_gathered_there(tiny_data, make_datamodule):
    dm = make_datamodule(tiny_data, on_device=True, batch_size=16, validation=Validation(val_size=20))
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))  # a device not the host
    dm.setup("fit")
    for dataset in (dm.train_set, dm.val_set, dm.test_set):
        assert dataset.images.device.type == dataset.targets.device.type == "meta"
    loader = dm.train_dataloader()
    images, targets = next(iter(loader))
    assert not loader.pin_memory and images.device.type == targets.device.type == "meta"
    assert images.shape == (16, 1, 28, 28) and images.dtype == torch.float32 and targets.shape == (16, 10)


def test_data_on_the_device_gives_the_host_paths_batches(tmp_path, make_datamodule):
    write_dataset(tmp_path / "d")
    seen = {}
    for on_device in (False, True):
        dm = make_datamodule(tmp_path / "d", on_device=on_device, batch_size=16, validation=Validation(val_size=20))
        seen[on_device] = SeenImages()
        L.seed_everything(3)
        trainer = L.Trainer(
            max_epochs=2, callbacks=[seen[on_device]], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        )  # fmt: skip
        trainer.fit(LeNet5(), datamodule=dm)
    # 100 training images in batches of 16; 20 validation images, in the sanity check and after each epoch
    assert len(seen[True].train) == 2 * 7 and len(seen[True].val) == 1 + 2
    for stage in ("train", "val"):
        for host, device in zip(getattr(seen[False], stage), getattr(seen[True], stage), strict=True):
            assert torch.equal(host, device)


def test_data_on_the_device_refuses_loader_workers(tiny_data, make_datamodule):
    with pytest.raises(UserInputError, match=r"--data\.num_workers 0"):
        make_datamodule(tiny_data, on_device=True, num_workers=2)
