"""Training recipe features beyond the study: per-image augmentation, mixup, warmup, weight EMA, test-time flips."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from fmnist_lightning import UserInputError
from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.data.augment import RandomCrop, RandomErasing, RandomHorizontalFlip
from fmnist_lightning.models import FastCNN, LeNet5
from support import REPO


def garments(count: int = 64) -> torch.Tensor:
    """One asymmetric image repeated: any difference between the outputs comes from the augmentation."""
    image = torch.zeros(1, 28, 28)
    image[0, 5:23, 8:17] = torch.linspace(0.2, 1.0, 9)  # a left-to-right ramp: its mirror image differs
    return image.expand(count, 1, 28, 28).clone()


def test_random_crop_shifts_each_image_by_its_own_whole_pixel_offset():
    torch.manual_seed(0)
    images = garments()
    cropped = RandomCrop(padding=2, fill=-1.0)(images)
    padded = F.pad(images, (2, 2, 2, 2), value=-1.0)
    crops = {(dy, dx): padded[0, :, dy : dy + 28, dx : dx + 28] for dy in range(5) for dx in range(5)}
    offsets = []
    for image in cropped:  # exactly one of the 25 crops of the padded image, to float precision
        matches = [offset for offset, crop in crops.items() if torch.allclose(image, crop, atol=1e-5)]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 10  # drawn per image, not once for the batch


def test_horizontal_flip_mirrors_about_half_of_the_images_one_coin_each():
    torch.manual_seed(0)
    images = garments(200)
    flipped = RandomHorizontalFlip()(images)
    mirrored = torch.tensor([torch.equal(out, images[0].flip(-1)) for out in flipped])
    unchanged = torch.tensor([torch.equal(out, images[0]) for out in flipped])
    assert bool((mirrored ^ unchanged).all())
    assert 70 < int(mirrored.sum()) < 130


def test_random_erasing_blanks_one_rectangle_in_some_images_on_the_batch_device():
    torch.manual_seed(0)
    images = torch.full((64, 1, 28, 28), 5.0)  # noise never equals 5
    erased = RandomErasing(probability=0.5)(images.clone())
    changed = erased != 5.0
    counts = changed.flatten(1).sum(1)
    assert 15 < int((counts > 0).sum()) < 50
    for mask in changed[counts > 0, 0]:  # the changed pixels form one rectangle
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert int(mask.sum()) == len(rows) * len(cols) == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)


def make_cli(tiny_data, tmp_path, *args: str) -> FashionMNISTCLI:
    base = ["--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(tiny_data)]
    base += ["--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.max_epochs", "1"]
    return FashionMNISTCLI([*base, *args], run=False)


def test_mixup_mixes_each_batch_with_its_reverse_and_the_targets_alike(tiny_data, tmp_path):
    cli = make_cli(tiny_data, tmp_path, "--data.augmentation.mixup_alpha", "0.4", "--data.batch_size", "32")
    data = cli.datamodule
    data.prepare_data(), data.setup("fit")
    data.trainer = cli.trainer
    cli.trainer.state.stage = "train"  # on_after_batch_transfer augments training batches only
    images, targets = next(iter(data.train_dataloader()))
    mixed, mixed_targets = data.on_after_batch_transfer((images, targets), 0)
    assert torch.allclose(mixed_targets.sum(1), torch.ones(32))
    weights = mixed_targets.gather(1, targets.argmax(1, keepdim=True)).squeeze(1)  # own class
    reverse = mixed_targets.gather(1, targets.flip(0).argmax(1, keepdim=True)).squeeze(1)
    distinct = targets.argmax(1) != targets.flip(0).argmax(1)
    lam = weights[distinct][0].item()  # one λ for the batch (timm's batch mode)
    torch.testing.assert_close(weights[distinct], torch.full_like(weights[distinct], lam))
    torch.testing.assert_close(reverse[distinct], torch.full_like(reverse[distinct], 1 - lam))
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images.flip(0))
    assert len(data.train_dataloader()) == len(data.train_set) // 32  # drop_last: every batch pairs up


def test_mixup_needs_an_even_batch_and_bad_augmentation_values_are_refused(tiny_data, tmp_path):
    with pytest.raises(UserInputError, match="batch_size must be even"):
        make_cli(tiny_data, tmp_path, "--data.augmentation.cutmix_alpha", "1.0", "--data.batch_size", "33")
    with pytest.raises(UserInputError, match="erasing"):
        make_cli(tiny_data, tmp_path, "--data.augmentation.erasing", "1.5")


def test_every_augmentation_together_trains(tiny_data, tmp_path):
    cli = make_cli(
        tiny_data, tmp_path, "--data.augmentation", "{affine: true, crop_padding: 2, hflip: true, erasing: 0.5}",
        "--data.augmentation", "{mixup_alpha: 0.2, cutmix_alpha: 1.0, label_smoothing: 0.1}",
        "--model.init_args.standardize", "true", "--data.batch_size", "16",
    )  # fmt: skip
    cli.trainer.fit(cli.model, cli.datamodule)
    assert math.isfinite(cli.trainer.callback_metrics["train/loss_epoch"].item())


def test_tta_flip_averages_the_probabilities_of_image_and_mirror_in_test_and_predict():
    torch.manual_seed(0)
    plain, tta = LeNet5().eval(), LeNet5(tta_flip=True).eval()
    tta.load_state_dict(plain.state_dict())
    images = torch.rand(8, 1, 28, 28)
    expected = (plain(images).softmax(1) + plain(images.flip(-1)).softmax(1)) / 2
    torch.testing.assert_close(tta.predict_step(images, 0), expected)
    torch.testing.assert_close(tta._evaluate(images, "test").exp(), expected)
    torch.testing.assert_close(tta._evaluate(images, "val"), plain(images))  # validation picks on plain outputs


def learning_rates(cli: FashionMNISTCLI) -> list[float]:
    """The learning rate of each epoch, as the scheduler set it."""
    config = cli.model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step(), scheduler.step()
    return rates


def test_warmup_ramps_the_learning_rate_up_then_hands_over_to_the_schedule(tiny_data, tmp_path):
    cosine = '{"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR", "init_args": {"T_max": 4}}'
    cli = make_cli(tiny_data, tmp_path, "--model.init_args.warmup", "2", "--model.init_args.lr_scheduler", cosine)
    rates = learning_rates(cli)
    lr = 0.01  # lenet.yaml's SGD
    expected = [lr * 0.01, lr * (0.01 + 0.99 / 2)] + [lr * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)]
    assert rates == pytest.approx(expected)
    warmup_only = learning_rates(make_cli(tiny_data, tmp_path, "--model.init_args.warmup", "2"))
    assert warmup_only == pytest.approx([lr * 0.01, lr * 0.505, lr, lr, lr, lr])


def test_warmup_refuses_one_cycle(tiny_data, tmp_path):
    one_cycle = '{"class_path": "torch.optim.lr_scheduler.OneCycleLR", "init_args": {"max_lr": 0.1, "total_steps": 9}}'
    cli = make_cli(tiny_data, tmp_path, "--model.init_args.warmup", "3", "--model.init_args.lr_scheduler", one_cycle)
    with pytest.raises(UserInputError, match="OneCycleLR"):
        cli.model.configure_optimizers()


@pytest.mark.parametrize(
    ("callback", "follows_training"),
    [("fmnist_lightning.training.EMAWithWarmup", True), ("lightning.pytorch.callbacks.EMAWeightAveraging", False)],
)
def test_ema_warmup_lets_the_average_follow_the_weights_early(tiny_data, tmp_path, callback, follows_training):
    """After a few steps at decay 0.999 the fixed-decay average is still ~the random initial weights."""
    ema = f'{{"class_path": "{callback}", "init_args": {{"decay": 0.999}}}}'
    cli = make_cli(tiny_data, tmp_path, f"--trainer.callbacks+={ema}", "--trainer.max_epochs", "3")
    initial = {key: value.clone() for key, value in cli.model.state_dict().items()}
    cli.trainer.fit(cli.model, cli.datamodule)
    (last,) = (tmp_path / "logs").rglob("last.ckpt")
    checkpoint = torch.load(last, weights_only=False)
    averaged, trained = checkpoint["state_dict"], checkpoint["current_model_state"]
    weights = [key for key in averaged if averaged[key].is_floating_point()]

    def distance(state: dict[str, torch.Tensor]) -> float:
        return sum(float((averaged[key] - state[key]).square().sum()) for key in weights)

    assert (distance(trained) < distance(initial)) is follows_training


def test_ema_batch_norm_statistics_are_those_of_the_averaged_weights(tiny_data, tmp_path):
    """With ``bn_batches`` the averaged network's batch norm is recomputed on training batches before validation:
    the checkpoint's first running mean is the mean of that layer's inputs under the averaged weights, and the
    trained weights are those of the same run without it."""

    def fit_with_ema(bn_batches: int) -> tuple[dict, FashionMNISTCLI]:
        ema = {"class_path": "fmnist_lightning.training.EMAWithWarmup", "init_args": {"bn_batches": bn_batches}}
        logs = tmp_path / f"logs_{bn_batches}"
        cli = make_cli(
            tiny_data, tmp_path, "--config", str(REPO / "configs/fast.yaml"), "--data.data_dir", str(tiny_data),
            "--data.validation.protocol", "test", "--data.batch_size", "8", "--trainer.max_epochs", "2",
            "--data.augmentation.hflip", "true", "--trainer.logger.init_args.save_dir", str(logs),
            f"--trainer.callbacks+={json.dumps(ema)}",
        )  # fmt: skip
        cli.trainer.fit(cli.model, cli.datamodule)
        (last,) = logs.rglob("last.ckpt")
        return torch.load(last, weights_only=False), cli

    checkpoint, cli = fit_with_ema(bn_batches=100)
    averaged = checkpoint["state_dict"]
    model = FastCNN(standardize=True)  # as configs/fast.yaml
    model.load_state_dict(averaged)
    images, _ = cli.datamodule.train_set.__getitems__(range(len(cli.datamodule.train_set)))  # 15 batches of 8
    with torch.no_grad():
        inputs = model.net[:2](model.preprocess(images))  # what the first batch norm sees: conv, then max-pool
    torch.testing.assert_close(averaged["net.2.running_mean"], inputs.mean(dim=(0, 2, 3)))
    live = checkpoint["current_model_state"]["net.2.running_mean"]  # the trained weights' own, which differ
    assert not torch.allclose(averaged["net.2.running_mean"], live)

    without, _ = fit_with_ema(bn_batches=0)  # the recomputation's shuffle draws left the training draws alone
    for key, value in without["current_model_state"].items():
        assert torch.equal(checkpoint["current_model_state"][key], value), key


def test_ema_batch_norm_statistics_take_one_batch_under_fast_dev_run(tiny_data, tmp_path, monkeypatch):
    """fast_dev_run is Lightning's check on one batch: the averaged network's statistics take one batch too, not
    ``bn_batches`` of them (50 batches of 512 images in best_gpu.yaml)."""
    seen = []
    monkeypatch.setattr(torch.optim.swa_utils, "update_bn", lambda batches, model: seen.append(len(list(batches))))
    ema = {"class_path": "fmnist_lightning.training.EMAWithWarmup", "init_args": {"bn_batches": 100}}
    cli = make_cli(
        tiny_data, tmp_path, "--config", str(REPO / "configs/fast.yaml"), "--data.data_dir", str(tiny_data),
        "--data.validation.protocol", "test", "--data.batch_size", "8", "--trainer.fast_dev_run", "true",
        f"--trainer.callbacks+={json.dumps(ema)}",
    )  # fmt: skip
    cli.trainer.fit(cli.model, cli.datamodule)
    assert seen == [1]


def test_ema_decay_warms_up_to_its_ceiling():
    from fmnist_lightning.training.ema import ema_decay

    decays = [ema_decay(updates, 0.999) for updates in (0, 1, 10, 100, 1000, 10_000, 100_000)]
    assert decays[0] == 0  # the first update copies the weights
    assert decays == sorted(decays) and decays[-1] == 0.999
    assert ema_decay(430, 0.999) == pytest.approx(1 - 431**-0.75)


def test_weight_ema_is_what_validation_sees_and_what_checkpoints_hold(tiny_data, tmp_path):
    """Lightning's EMAWeightAveraging from the config: checkpoints hold the average, the raw weights beside it."""
    ema = '{"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.5}}'
    cli = make_cli(tiny_data, tmp_path, f"--trainer.callbacks+={ema}", "--trainer.max_epochs", "2")
    cli.trainer.fit(cli.model, cli.datamodule)
    fitted_val_loss = cli.trainer.callback_metrics["val/loss"].item()  # the last epoch's, on the averaged weights
    (last,) = (tmp_path / "logs").rglob("last.ckpt")
    checkpoint = torch.load(last, weights_only=False)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert averaged.keys() == raw.keys()
    assert not all(torch.equal(averaged[key], raw[key]) for key in averaged)
    model = LeNet5.load_from_checkpoint(last)  # test and predict load the average
    assert all(torch.equal(value, averaged[key]) for key, value in model.state_dict().items())
    validation = cli.trainer.validate(model, cli.datamodule, verbose=False)[0]
    assert validation["val/loss"] == pytest.approx(fitted_val_loss)
