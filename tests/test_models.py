from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from fmnist_lightning import UserInputError
from fmnist_lightning.models import (
    MODELS,
    BrownleeCNN,
    CustomCNN,
    EfficientNet,
    LeNet5,
    SeedEfficientNet,
    WideResNet,
    count_params,
)
from fmnist_lightning.networks.keras_layers import BatchNorm, Dropout, MaxPooling2D
from fmnist_lightning.networks.wide_resnet import WideBlock

# The study's Keras count_params(): total and trainable.
KERAS_COUNTS = {
    LeNet5: (61_706, 61_706),
    BrownleeCNN: (542_230, 542_230),
    CustomCNN: (225_930, 225_482),
    SeedEfficientNet: (321_418, 317_450),
}
STUDY_MODELS = list(KERAS_COUNTS)


@pytest.mark.parametrize("model_class", MODELS, ids=lambda m: m.__name__)
def test_output_is_ten_logits_per_image(model_class):
    model = model_class().eval()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("model_class", STUDY_MODELS, ids=lambda m: m.__name__)
def test_parameter_counts_equal_the_keras_models(model_class):
    model = model_class()
    total, trainable = KERAS_COUNTS[model_class]
    assert count_params(model) == total
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable


def test_efficientnet_is_timms_model_with_a_stride_one_stem():
    model = EfficientNet()
    reference = timm.create_model("efficientnet_b0", in_chans=1, num_classes=10)
    assert count_params(model) == count_params(reference)
    assert model.net.conv_stem.stride == (1, 1) and model.net.conv_stem.in_channels == 1
    assert model.net.forward_features(torch.rand(1, 1, 28, 28)).shape == (1, 1280, 2, 2)


def test_efficientnet_starts_from_a_local_pretrained_file(tmp_path):
    imagenet_like = timm.create_model("efficientnet_b0", num_classes=1000)  # 3 channels, 1000 classes
    path = tmp_path / "b0.pth"
    torch.save(imagenet_like.state_dict(), path)
    model = EfficientNet(pretrained_path=str(path))
    rgb_stem = imagenet_like.conv_stem.weight.sum(dim=1, keepdim=True)  # timm folds RGB into one channel
    torch.testing.assert_close(model.net.conv_stem.weight, rgb_stem)
    torch.testing.assert_close(model.net.blocks[3][0].conv_pw.weight, imagenet_like.blocks[3][0].conv_pw.weight)


def test_efficientnet_pretrained_asks_timm_for_its_imagenet_weights(monkeypatch):
    """``pretrained: true`` is timm's own download (no network here): the call timm gets is what is checked."""
    calls = []
    create_model = timm.create_model
    monkeypatch.setattr(
        timm, "create_model", lambda *a, **kw: calls.append(kw) or create_model(*a, **kw | {"pretrained": False})
    )
    EfficientNet(pretrained=True)
    assert calls[0]["pretrained"] is True and calls[0]["in_chans"] == 1 and calls[0]["num_classes"] == 10


def test_efficientnet_can_upsample_its_input():
    model = EfficientNet(input_size=64, stem_stride=2).eval()
    seen = []
    model.net.conv_stem.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert seen == [(2, 1, 64, 64)]
    with pytest.raises(UserInputError, match="input_size"):
        EfficientNet(input_size=16)


def test_wide_resnet_has_the_papers_sizes():
    """Zagoruyko & Komodakis, table 1 (CIFAR, 3 input channels): WRN-28-10 36.5M and WRN-16-8 11.0M weights."""
    for depth, widen_factor, millions in ((28, 10, 36.5), (16, 8, 11.0)):
        model = WideResNet(depth=depth, widen_factor=widen_factor)
        stem = 16 * 3 * 3 * 2  # the paper's stem sees RGB: two more input channels
        assert round((sum(p.numel() for p in model.parameters()) + stem) / 1e6, 1) == millions
    blocks = [m for m in WideResNet(depth=22).net if isinstance(m, WideBlock)]
    assert len(blocks) == 9  # three stages of (22 − 4) / 6


@pytest.mark.parametrize(("option", "value"), [("depth", 15), ("depth", 4), ("widen_factor", 0)])
def test_wide_resnet_refuses_impossible_shapes(option, value):
    with pytest.raises(UserInputError, match=f"--model.init_args.{option}"):
        WideResNet(**{option: value})


@pytest.mark.parametrize("model_class", MODELS, ids=lambda m: m.__name__)
def test_one_training_step_lowers_the_loss_on_a_fixed_batch(model_class):
    torch.manual_seed(0)
    model = model_class(optimizer=lambda params: torch.optim.SGD(params, lr=0.001)).train()
    images, targets = torch.rand(32, 1, 28, 28), F.one_hot(torch.arange(32) % 10, 10).float()
    optimizer = model.configure_optimizers()

    def loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks before and after the step
        return F.cross_entropy(model(images), targets)

    before = loss()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        assert loss() < before


def limits(layer: nn.Conv2d | nn.Linear) -> tuple[float, float]:
    """(glorot-uniform, he-uniform) bounds for a layer's kernel."""
    receptive = layer.weight[0, 0].numel()
    fan_in, fan_out = layer.weight.shape[1] * receptive, layer.weight.shape[0] * receptive
    return math.sqrt(6 / (fan_in + fan_out)), math.sqrt(6 / fan_in)


def weighted_layers(model: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    return [m for m in model.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# Which layers the study gave he_uniform; all others use Keras's glorot_uniform.
HE_UNIFORM = {LeNet5: [], BrownleeCNN: [0], CustomCNN: [0, 1, 2], SeedEfficientNet: []}


@pytest.mark.parametrize("model_class", STUDY_MODELS, ids=lambda m: m.__name__)
def test_initializers_are_the_studys_keras_ones(model_class):
    torch.manual_seed(0)
    layers = weighted_layers(model_class())
    for index, layer in enumerate(layers):
        glorot, he = limits(layer)
        bound = he if index in HE_UNIFORM[model_class] else glorot
        weight = layer.weight.detach()
        assert weight.abs().max() <= bound
        if weight.numel() >= 2000:  # a uniform distribution fills its range: std = bound / √3
            assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        if layer.bias is not None:
            assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("model_class", [CustomCNN, SeedEfficientNet], ids=lambda m: m.__name__)
def test_batchnorm_uses_keras_epsilon_and_momentum(model_class):
    norms = [m for m in model_class().modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)
    assert all(m.running_var_update == "torch" for m in norms)  # the default: as the model trained before the option
    keras_norms = [m for m in model_class(bn_running_var="keras").modules() if hasattr(m, "running_var_update")]
    assert len(keras_norms) == len(norms) and all(m.running_var_update == "keras" for m in keras_norms)


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "features"])
@pytest.mark.parametrize("momentum", [0.01, None], ids=["momentum", "cumulative"])
def test_keras_running_variance_is_the_biased_batch_variance(layout, momentum):
    """With "keras" running_var moves toward the batch's biased variance, with "torch" toward the unbiased one, in
    every layout and in update_bn's cumulative mode; the outputs and gradients are torch's own either way."""
    torch.manual_seed(0)
    shape = (16, 8) if layout == "features" else (16, 8, 5, 5)
    x = (torch.randn(shape) * 2 + 1).requires_grad_()
    if layout == "nhwc":
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    dims = (0,) if layout == "features" else (0, 2, 3)
    count, var = x.numel() // 8, x.detach().double().var(dims, correction=0)
    results = {}
    for form in ("keras", "torch"):
        norm = BatchNorm(8, dims=1 if layout == "features" else 2, running_var_update=form)
        norm.momentum = momentum
        output = norm(x)
        (grad,) = torch.autograd.grad(output, x, torch.ones_like(output).cumsum(0))
        expected = var if form == "keras" else var * count / (count - 1)
        expected = 0.99 + 0.01 * expected if momentum else expected  # cumulative: the first batch's own
        torch.testing.assert_close(norm.running_var.double(), expected, atol=1e-9, rtol=1e-6)
        results[form] = output, grad, norm.running_mean
    torch.testing.assert_close(results["keras"], results["torch"], atol=0, rtol=0)
    with pytest.raises(ValueError, match="'keras' or 'torch'"):
        BatchNorm(8, running_var_update="Keras")


def test_seed_efficientnet_pads_like_keras_same():
    model = SeedEfficientNet().eval()
    sizes = []
    for module in model.net:
        if isinstance(module, nn.SiLU):
            module.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1]))
    image = torch.rand(1, 1, 28, 28)
    model(image)
    assert sizes[::2][:6] == [14, 14, 7, 4, 4, 2]  # stem, then each block's pointwise output

    stem = model.net[0]  # Keras 'same', stride 2, even input: pad 0 before and 1 after
    expected = F.conv2d(F.pad(image, (0, 1, 0, 1)), stem.weight, stride=2)
    torch.testing.assert_close(stem(image), expected)


def test_brownlee_pooling_option():
    assert isinstance(BrownleeCNN().net[2], nn.AvgPool2d)
    assert isinstance(BrownleeCNN(pool="max").net[2], nn.MaxPool2d)


def test_predict_step_returns_probabilities():
    probabilities = LeNet5().predict_step((torch.rand(5, 1, 28, 28), torch.zeros(5, 10)), 0)
    assert probabilities.shape == (5, 10)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(5))


def test_batchnorm_is_accurate_on_channels_last_features():
    """NHWC arrays permuted to NCHW (and the channels_last option) make convs return channels-last memory, where
    torch's CPU kernel is inexact: the project's batch norm keeps the layout and is exact, gradients and running
    statistics included."""
    torch.manual_seed(0)
    nhwc = (torch.rand(32, 28, 28, 1) > 0.5) * torch.rand(32, 28, 28, 1)  # half background, like Fashion-MNIST
    features = torch.relu(nn.Conv2d(1, 32, 3)(nhwc.permute(0, 3, 1, 2))).detach().requires_grad_()
    assert features.is_contiguous(memory_format=torch.channels_last)
    reference = features.detach().double().requires_grad_()
    mean, var = reference.mean((0, 2, 3)), reference.var((0, 2, 3), correction=0)
    exact = (reference - mean[:, None, None]) / (var[:, None, None] + 1e-3).sqrt()
    upstream = torch.randn_like(exact)
    (exact_grad,) = torch.autograd.grad(exact, reference, upstream)

    def errors(batch_norm: nn.Module) -> tuple[float, float, torch.Tensor]:
        """Of the output, and of the input's gradient relative to its largest value; the output."""
        normalised = batch_norm(features)
        (grad,) = torch.autograd.grad(normalised, features, upstream.float())
        grad_error = (grad.double() - exact_grad).abs().max() / exact_grad.abs().max()
        return (normalised.double() - exact).abs().max(), grad_error, normalised

    plain_error, plain_grad_error, _ = errors(nn.BatchNorm2d(32, eps=1e-3))
    ours = BatchNorm(32)
    ours_error, ours_grad_error, normalised = errors(ours)
    assert ours_error < 1e-6 < 1e-5 < plain_error
    assert ours_grad_error < 5e-7 < 5e-6 < plain_grad_error
    assert normalised.is_contiguous(memory_format=torch.channels_last)  # no copy to the contiguous layout
    count = features[:, 0].numel()
    torch.testing.assert_close(ours.running_mean.double(), 0.01 * mean.detach(), atol=1e-9, rtol=1e-6)
    unbiased = var.detach() * count / (count - 1)
    torch.testing.assert_close(ours.running_var.double(), 0.99 + 0.01 * unbiased, atol=1e-9, rtol=1e-6)
    assert ours.num_batches_tracked == 1


def test_dropout_keeps_a_share_of_one_minus_the_rate_and_scales_it_up():
    """Keras's form: a value survives where a uniform draw is ≥ the rate, and survivors are scaled by 1/(1 − rate)."""
    torch.manual_seed(0)
    dropout, values = Dropout(0.4), torch.full((200, 1600), 3.0)
    dropped = dropout(values)
    kept = dropped != 0
    assert torch.all(dropped[kept] == 3.0 / 0.6)
    assert abs(kept.float().mean().item() - 0.6) < 0.005  # 320,000 draws: the standard error is 0.0009
    assert torch.equal(Dropout(0.0)(values), values) and not torch.any(Dropout(1.0)(values))
    assert torch.equal(dropout.eval()(values), values)


@pytest.mark.parametrize("size", [26, 11])
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
def test_max_pooling_compiles_to_the_same_values_and_gradients_as_torchs(size, memory_format):
    """In a compiled training step the pooling is element-wise operations (no max_pool2d in the graph), and gives
    torch's values and gradients bit for bit, ties included: the whole gradient to each window's first maximum."""
    torch.manual_seed(0)
    # ReLU'd, rounded values: many windows hold two or more equal maxima, zeros and positive values alike
    features = torch.randn(4, 8, size, size).relu().round(decimals=1).contiguous(memory_format=memory_format)
    upstream = torch.randn(4, 8, size // 2, size // 2)
    graphs = []

    def capture(graph: torch.fx.GraphModule, _: list) -> torch.fx.GraphModule:
        graphs.append(graph)
        return graph

    results = []
    for layer in (nn.MaxPool2d(2), torch.compile(MaxPooling2D(), backend=capture, fullgraph=True)):
        x = features.clone().requires_grad_()
        pooled = layer(x)
        (grad,) = torch.autograd.grad(pooled, x, upstream)
        results.append((pooled, grad))
    (expected, expected_grad), (pooled, grad) = results
    assert len(graphs) == 1 and "max_pool2d" not in graphs[0].code
    assert torch.equal(pooled, expected) and torch.equal(grad, expected_grad)
    assert torch.equal(MaxPooling2D()(features), expected)  # outside compile: torch's own kernel
