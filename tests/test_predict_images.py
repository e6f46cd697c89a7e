"""Predicting users' own images: any image to Fashion-MNIST's format, ``predict_images``, and
``predict --data.predict.path`` writing predictions.csv, with the published LeNet-5 (no training)."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fmnist_lightning import CLASS_NAMES, UserInputError, load
from fmnist_lightning.commands.main import main
from fmnist_lightning.data import MEAN, STD, FashionMNISTDataModule, PredictImages
from fmnist_lightning.data.datasets import ImageBatch
from fmnist_lightning.data.images import UnreadableImageError, fashion_mnist_pixels
from support import FILES, REPO, read_idx

LENET = REPO / "weights" / "lenet.ckpt"  # trained on x / 255
LENET_PLUS = REPO / "weights" / "lenet_plus.ckpt"  # trained standardised
TOP3 = re.compile(r"^(\S[^;]* [01]\.\d\d; ){2}\S[^;]* [01]\.\d\d$")


@pytest.fixture(scope="module")
def lenet():
    return load(LENET)


def rectangle(size: tuple[int, int], box: tuple[int, int, int, int], background: int, foreground: int) -> np.ndarray:
    """An H×W uint8 array of ``background`` with ``box`` (top, left, bottom, right; exclusive ends) filled."""
    pixels = np.full(size, background, dtype=np.uint8)
    top, left, bottom, right = box
    pixels[top:bottom, left:right] = foreground
    return pixels


def lit_box(image: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the pixels above mid-grey, exclusive ends."""
    rows, columns = (np.flatnonzero((image[0] > 127).any(dim=dim).numpy()) for dim in (1, 0))
    return rows[0], columns[0], rows[-1] + 1, columns[-1] + 1


LIGHT_ON_BLACK = rectangle((40, 60), (5, 10, 25, 50), background=0, foreground=255)  # a 20×40 box


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(LIGHT_ON_BLACK),
        Image.fromarray(LIGHT_ON_BLACK).convert("RGB"),
        Image.fromarray(LIGHT_ON_BLACK).convert("RGBA"),  # opaque
        Image.fromarray(LIGHT_ON_BLACK).convert("P"),
        Image.fromarray(LIGHT_ON_BLACK.astype(np.uint16) * 257),  # 16-bit, full range: I;16
        Image.fromarray(LIGHT_ON_BLACK.astype(np.uint16) * 16),  # 12 bits of data in a 16-bit file
        Image.fromarray(LIGHT_ON_BLACK.astype(np.int32) * 1000),  # mode I
    ],
    ids=["L", "RGB", "RGBA", "P", "I;16", "I;16 12-bit", "I"],
)
def test_every_mode_gives_the_same_fashion_mnist_image(image):
    expected = fashion_mnist_pixels(Image.fromarray(LIGHT_ON_BLACK), invert=False)
    assert expected.shape == (1, 28, 28) and expected.dtype == torch.uint8
    assert lit_box(expected) == (7, 0, 21, 28)  # trimmed to the box, resized to 14×28, centred
    assert torch.equal(fashion_mnist_pixels(image), expected)


def palette_cutout() -> Image.Image:
    image = Image.new("P", (60, 40), 0)
    image.putpalette([255, 0, 0, 60, 60, 60])  # index 0 (red, but transparent), index 1 dark grey
    image.paste(1, (10, 5, 50, 25))  # (left, top, right, bottom): the box of LIGHT_ON_BLACK
    image.info["transparency"] = 0
    return image


def rgba_cutout() -> Image.Image:
    rgba = np.zeros((40, 60, 4), dtype=np.uint8)  # transparent black
    rgba[5:25, 10:50] = (60, 60, 60, 255)
    return Image.fromarray(rgba)


@pytest.mark.parametrize("cutout", [rgba_cutout, palette_cutout], ids=["RGBA", "P with transparency"])
def test_a_transparent_background_is_a_product_photos_white_background(cutout):
    """A dark garment cut out of its photo: like the same garment photographed on white, inverted."""
    on_white = Image.fromarray(rectangle((40, 60), (5, 10, 25, 50), background=255, foreground=60))
    assert torch.equal(fashion_mnist_pixels(cutout()), fashion_mnist_pixels(on_white))
    assert fashion_mnist_pixels(cutout()).unique().tolist() == [0, 255 - 60]
    # not inverted: the transparent background still becomes black, the garment keeps its grey
    assert fashion_mnist_pixels(cutout(), invert=False).unique().tolist() == [0, 60]


@pytest.mark.parametrize(
    ("size", "box", "expected"),
    [
        ((300, 500), (100, 100, 200, 300), (7, 0, 21, 28)),  # wide: 2:1 → 28×14, centred vertically
        ((500, 300), (100, 100, 300, 200), (0, 7, 28, 21)),  # tall: 1:2 → 14×28, centred horizontally
        ((5, 6), (1, 1, 3, 5), (7, 0, 21, 28)),  # tiny: a 4×2 box scaled up
        ((2000, 3000), (500, 500, 1000, 1500), (7, 0, 21, 28)),  # large
    ],
    ids=["wide", "tall", "tiny", "large"],
)
def test_the_object_keeps_its_aspect_ratio_and_is_centred(size, box, expected):
    image = fashion_mnist_pixels(Image.fromarray(rectangle(size, box, background=0, foreground=255)))
    top, left, bottom, right = expected
    inside = torch.zeros(28, 28, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    assert torch.all(image[0][inside] == 255) and torch.all(image[0][~inside] == 0)


def test_the_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "phone.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° to display
    Image.fromarray(rectangle((300, 500), (100, 100, 200, 300), background=0, foreground=255)).save(path, exif=exif)
    assert lit_box(fashion_mnist_pixels(path)) == (0, 7, 28, 21)  # the wide box, shown upright, is tall


def test_auto_inversion_negates_dark_on_light_only():
    photo = rectangle((80, 120), (10, 20, 70, 100), background=230, foreground=40)  # dark garment, light table
    converted = fashion_mnist_pixels(Image.fromarray(photo).convert("RGB"))
    assert converted[0, 0, 0] == 255 - 230 and converted[0, 14, 14] == 255 - 40
    assert torch.equal(converted, fashion_mnist_pixels(Image.fromarray(photo), invert=True))
    fashion_like = rectangle((80, 120), (10, 20, 70, 100), background=0, foreground=200)
    assert fashion_mnist_pixels(Image.fromarray(fashion_like))[0, 14, 14] == 200
    assert fashion_mnist_pixels(Image.fromarray(fashion_like), invert=True)[0, 14, 14] == 255 - 200


def test_a_28_by_28_image_is_taken_as_framed():
    """Fashion-MNIST's own images, saved as files, come back unchanged (negated if light on dark)."""
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    pixels[[0, -1]], pixels[:, [0, -1]] = 0, 0
    assert torch.equal(fashion_mnist_pixels(Image.fromarray(pixels)), torch.from_numpy(pixels)[None])
    assert torch.equal(fashion_mnist_pixels(Image.fromarray(255 - pixels)), torch.from_numpy(pixels)[None])


def test_an_unreadable_file_is_an_error_naming_it(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(LIGHT_ON_BLACK).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image")
    for path in (truncated, garbage):
        with pytest.raises(UnreadableImageError, match=f"cannot read {re.escape(str(path))}: "):
            fashion_mnist_pixels(path)


@pytest.mark.parametrize(
    ("checkpoint", "standardized"), [(LENET, False), (LENET_PLUS, True)], ids=["lenet", "lenet_plus"]
)
def test_predict_images_is_the_models_softmax_with_its_training_normalisation(tmp_path, checkpoint, standardized):
    model = load(checkpoint)
    assert not model.training and model.device.type == "cpu" and model.standardize is standardized
    path = tmp_path / "photo.jpg"
    Image.fromarray(rectangle((90, 60), (10, 5, 80, 55), background=240, foreground=30)).save(path)
    cutout = rgba_cutout()
    pixels = torch.stack([fashion_mnist_pixels(path), fashion_mnist_pixels(cutout)]).float() / 255
    inputs = (pixels - MEAN) / STD if standardized else pixels
    with torch.no_grad():  # the bare network on inputs standardised here: the model's own standardisation checked
        expected = model.net(inputs).softmax(dim=1)
        if model.hparams.tta_flip:  # lenet_plus: the mean with the mirror image's, as in test and predict
            expected = (expected + model.net(inputs.flip(-1)).softmax(dim=1)) / 2
    model.train()  # predict_images evaluates in eval mode and leaves the mode as it was
    predictions = model.predict_images([path, cutout])
    assert model.training
    for prediction, probabilities in zip(predictions, expected, strict=True):
        values, indices = probabilities.topk(3)
        assert prediction.class_index == indices[0] and prediction.class_name == CLASS_NAMES[indices[0]]
        assert prediction.probability == pytest.approx(values[0].item(), abs=1e-5)
        assert [name for name, _ in prediction.top3] == [CLASS_NAMES[i] for i in indices]
        assert TOP3.match(prediction.top3_text())


def test_load_refuses_a_damaged_checkpoint(tmp_path):
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(LENET.read_bytes()[:1000])
    with pytest.raises(UserInputError, match="not a readable checkpoint"):
        load(damaged)


def test_the_data_module_reads_user_images_without_fashion_mnist(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(LIGHT_ON_BLACK).save(folder / "b.png")
    Image.fromarray(LIGHT_ON_BLACK).save(folder / "a.bmp")
    (folder / "c.webp").write_bytes(b"damaged")
    (folder / "notes.txt").write_text("not an image, not listed")
    data = FashionMNISTDataModule(str(tmp_path / "no_data_here"), predict=PredictImages(path=str(folder)))
    data.setup("predict")
    (batch,) = data.predict_dataloader()
    assert isinstance(batch, ImageBatch) and batch.files == [str(folder / "a.bmp"), str(folder / "b.png")]
    # [0, 1] pixels: a model that standardises does so itself (test_predict_images_is_the_models_softmax_...)
    expected = fashion_mnist_pixels(folder / "a.bmp").float() / 255
    torch.testing.assert_close(batch.images[0], expected)
    assert data.unreadable == [(str(folder / "c.webp"), "not an image Pillow recognises")]


def write_user_images(folder: Path) -> list[str]:
    """One image per format and mode, a damaged file and a text file; the names of the readable images."""
    folder.mkdir()
    photo = Image.fromarray(rectangle((90, 60), (10, 5, 80, 55), background=240, foreground=30))
    photo.convert("RGB").save(folder / "shirt.jpg")
    photo.convert("P").save(folder / "palette.bmp")
    rgba_cutout().save(folder / "cutout.webp", lossless=True)
    Image.fromarray(LIGHT_ON_BLACK.astype(np.uint16) * 257).save(folder / "deep.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut off")
    (folder / "readme.txt").write_text("ignored")
    return sorted(str(folder / name) for name in ("shirt.jpg", "palette.bmp", "cutout.webp", "deep.png"))


def predict(*args: str) -> int:
    return main(["predict", "--trainer.enable_progress_bar", "false", *args])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_predict_writes_a_csv_row_per_readable_image_and_exits_1_for_the_damaged_one(
    tmp_path, monkeypatch, capsys, lenet
):
    monkeypatch.chdir(tmp_path)
    files = write_user_images(tmp_path / "photos")
    assert predict("--ckpt_path", str(LENET), "--data.predict.path", "photos") == 1
    out, err = capsys.readouterr()
    assert f"predicted {len(files)} images: " in out and "wrote predictions.csv" in out
    assert "skipped 1 unreadable image files:" in err and "photos/broken.png: " in err
    rows = read_csv(tmp_path / "predictions.csv")
    assert [row["file"] for row in rows] == [str(Path(file).relative_to(tmp_path)) for file in files]
    assert list(rows[0]) == ["file", "class_index", "class_name", "probability", "top3"]
    expected = lenet.predict_images(files)
    for row, prediction in zip(rows, expected, strict=True):
        assert int(row["class_index"]) == prediction.class_index and row["class_name"] == prediction.class_name
        assert float(row["probability"]) == pytest.approx(prediction.probability, abs=1e-4)
        assert row["top3"] == prediction.top3_text() and TOP3.match(row["top3"])
    assert not (tmp_path / "data").exists()  # no Fashion-MNIST needed, none downloaded


def test_predict_into_the_run_folder_never_overwrites_an_earlier_csv(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "logs" / "LeNet5" / "version_3"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(LENET, run / "checkpoints" / "best.ckpt")
    image = tmp_path / "one.png"
    Image.fromarray(LIGHT_ON_BLACK).save(image)
    args = ["--ckpt_path", str(run), "--data.predict.path", str(image)]
    assert predict(*args) == 0
    first = (run / "predictions.csv").read_bytes()
    assert predict(*args) == 0
    assert (run / "predictions.csv").read_bytes() == first
    assert read_csv(run / "predictions.2.csv") == read_csv(run / "predictions.csv")
    assert f"wrote {run / 'predictions.2.csv'}" in capsys.readouterr().out
    assert not (tmp_path / "predictions.csv").exists()


@pytest.mark.parametrize("case", ["missing", "no images", "none readable"])
def test_a_predict_path_without_readable_images_is_a_one_line_error(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "photos"
    if case != "missing":
        folder.mkdir()
        (folder / "readme.txt").write_text("no images")
    if case == "none readable":
        (folder / "broken.jpg").write_bytes(b"damaged")
    assert predict("--ckpt_path", str(LENET), "--data.predict.path", "photos") == 2
    err = capsys.readouterr().err
    (line,) = (line for line in err.splitlines() if line.startswith("error:"))
    assert line.startswith("error: --data.predict.path photos: ") and "Traceback" not in err
    assert not list(tmp_path.glob("predictions*.csv"))


def test_predict_without_predict_path_still_predicts_the_test_set(tmp_path, monkeypatch, tiny_data):
    monkeypatch.chdir(tmp_path)
    assert predict("--ckpt_path", str(LENET), "--data.data_dir", str(tiny_data)) == 0
    assert not list(tmp_path.glob("predictions*.csv"))


@pytest.mark.real_data
def test_a_fashion_mnist_image_saved_as_png_is_predicted_as_from_the_dataset(real_data, tmp_path, lenet):
    images = read_idx(real_data / f"{FILES['test', 'images']}.gz")[:50]
    paths = []
    for index, pixels in enumerate(images):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(pixels).save(paths[-1])
    with torch.no_grad():
        expected = lenet(torch.from_numpy(images.copy()).unsqueeze(1).float() / 255).softmax(dim=1)
    predictions = lenet.predict_images(paths)
    assert [p.class_index for p in predictions] == expected.argmax(dim=1).tolist()
    assert [p.probability for p in predictions] == pytest.approx(expected.max(dim=1).values.tolist(), abs=1e-6)
