"""The CIFAR models built from blocks: structure, parameter counts, FLOPs, a few training steps."""

import re

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import zoo

INCEPTIONS = [  # (input channels, c1, c3_reduce, c3, c5_reduce, c5, pool_proj, H*W)
    (32, 16, 24, 32, 4, 8, 8, 16 * 16),
    (64, 32, 32, 48, 8, 16, 16, 16 * 16),
    (112, 48, 32, 64, 8, 16, 32, 8 * 8),
    (160, 64, 48, 96, 12, 32, 32, 8 * 8),
    (224, 96, 64, 128, 16, 32, 32, 4 * 4),
]


def conv(c, k, r, bias=True):
    return k * c * r * r + (k if bias else 0)


def googlenet_mini_counts():
    """Parameters and conv multiply-adds per sample, counted from the architecture."""
    params, macs = conv(3, 32, 3), 3 * 32 * 9 * 32 * 32
    for c, c1, c3r, c3, c5r, c5, pp, hw in INCEPTIONS:
        layers = [(c, c1, 1), (c, c3r, 1), (c3r, c3, 3), (c, c5r, 1), (c5r, c5, 5), (c, pp, 1)]
        params += sum(conv(*l) for l in layers)
        macs += sum(ci * k * r * r * hw for ci, k, r in layers)
    assert c1 + c3 + c5 + pp == 288
    return params + 288 * 10 + 10, macs


def resnet_counts(block, n):
    """Parameters and conv multiply-adds per sample of He et al.'s CIFAR layout."""
    params, macs = conv(3, 16, 3, False) + 2 * 16, 3 * 16 * 9 * 32 * 32
    c = 16
    for stage, width in enumerate((16, 32, 64)):
        hw = (32 >> stage) ** 2
        for i in range(n):
            stride = 2 if stage and not i else 1
            if block == "bottleneck":
                out = 4 * width
                layers = [(c, width, 1, hw * stride * stride), (width, width, 3, hw), (width, out, 1, hw)]
            else:
                out = width
                layers = [(c, width, 3, hw), (width, width, 3, hw)]
            if stride != 1 or c != out:
                layers.append((c, out, 1, hw))
            params += sum(conv(ci, k, r, False) + 2 * k for ci, k, r, _ in layers)
            macs += sum(ci * k * r * r * p for ci, k, r, p in layers)
            c = out
    return params + c * 10 + 10, macs


def check_summary(model, params, macs):
    assert model.param_count() == params
    assert model.output_shape == (10,)
    flops = model.flops()
    # convolutions dominate: 2 FLOPs per multiply-add, plus biases, BN, ReLU, pooling
    assert 2 * macs <= flops <= 2.2 * macs, (flops, 2 * macs)
    total = model.summary().splitlines()[-1]
    assert re.search(rf"\b{params:,}\b", total) and re.search(rf"\b{flops:,}\b", total), total


def test_googlenet_mini_builds_with_counted_parameters_and_flops():
    model = zoo.googlenet_mini()
    check_summary(model, *googlenet_mini_counts())
    assert model.shapes["inc3a.concat"] == (64, 16, 16)
    assert model.shapes["inc5a.concat"] == (288, 4, 4)
    assert "inc4a.conv5_reduce.weight" in model.params


def test_resnet_bottleneck_29_builds_with_counted_parameters_and_flops():
    model = zoo.resnet_bottleneck(depth=29)
    check_summary(model, *resnet_counts("bottleneck", 3))
    adds = [n for n in model.order if n.endswith(".add")]
    assert len(adds) == 9
    projections = sorted(k.rpartition(".proj.")[0] for k in model.params if ".proj.weight" in k)
    assert projections == ["stage1.block1", "stage2.block1", "stage3.block1"]
    stages = [model.shapes[f"stage{s}.block3.relu"] for s in (1, 2, 3)]
    assert stages == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]
    # ResNet v1.5: the stride sits on the 3x3 convolution
    assert model.shapes["stage2.block1.conv1"] == (32, 32, 32)
    assert model.shapes["stage2.block1.conv2"] == (32, 16, 16)


def test_resnet_basic_20_builds_with_counted_parameters():
    model = zoo.resnet_basic(20)
    check_summary(model, *resnet_counts("basic", 3))
    assert sum(n.endswith(".add") for n in model.order) == 9
    assert "stage1.block1.proj.weight" not in model.params  # 16 -> 16 channels, stride 1


@pytest.mark.parametrize("build, depth", [(zoo.resnet_bottleneck, 28), (zoo.resnet_bottleneck, 2),
                                          (zoo.resnet_basic, 21), (zoo.resnet_basic, 8.0)])
def test_resnet_depth_is_validated(build, depth):
    with pytest.raises(ValueError, match="depth must be"):
        build(depth)


def test_models_take_other_image_sizes_and_class_counts():
    assert zoo.googlenet_mini(num_classes=3, input_shape=(1, 8, 8)).shapes["inc5a.concat"] == (288, 1, 1)
    model = zoo.resnet_basic(8, num_classes=3, input_shape=(1, 28, 28))
    assert model.shapes["stage3.block1.relu"] == (64, 7, 7) and model.output_shape == (3,)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        zoo.resnet_bottleneck(29, num_classes=1)


# googlenet_mini has no batch norm and PyTorch's small default init: it starts slowly and
# wants momentum; ResNet-29 moves fast (and overshoots with momentum at batch 8), and two of
# its steps cost as much as googlenet_mini's three.
@pytest.mark.parametrize("name, kwargs, lr, momentum, steps",
                         [("googlenet_mini", {}, 0.1, 0.9, 3),
                          ("resnet_bottleneck", {"depth": 29}, 0.02, 0.0, 2)],
                         ids=["googlenet_mini", "resnet_bottleneck29"])
def test_a_few_sgd_steps_lower_the_loss_on_cifar_shaped_data(name, kwargs, lr, momentum, steps):
    model = getattr(zoo, name)(seed=0, **kwargs)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    opt = nc.optim.SGD(model, lr=lr, momentum=momentum)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss, gy = nc.losses.cross_entropy(model.forward(x, training=True), labels)
        model.backward(gy, input_grad=False)
        opt.step()
        losses.append(loss)
    final, _ = nc.losses.cross_entropy(model.forward(x, training=True), labels)
    assert np.isfinite(losses).all() and np.isfinite(final)
    assert final < losses[0] - 0.05, (losses, final)
