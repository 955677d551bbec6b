"""Model zoo: functions that build a ready-to-train ``Model`` (each takes ``seed``).

``lenet5`` (LeCun et al. 1998, with ReLU and max pooling), ``network3`` (the MNIST nets of
Nielsen's *Neural Networks and Deep Learning*, chapter 6), ``vgg_small`` (stacked 3x3
convolutions for 32x32 RGB input), googlenet_mini, resnet_bottleneck and resnet_basic (CIFAR-shaped,
built from nc.blocks). ``MODELS`` maps the names the CLI accepts to builders.
"""

from __future__ import annotations

from typing import Any, Callable

from .graph import Graph, Node
from .model import Model

__all__ = ["lenet5", "network3", "vgg_small", "NETWORK3_VARIANTS", "MODELS", "build"]

Shape3 = tuple[int, int, int]


def _check_input(fn: str, input_shape: Any, num_classes: Any) -> Shape3:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: input_shape must be (C, H, W), found {input_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{fn}: input_shape must be three positive sizes (C, H, W), found {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{fn}: num_classes must be an int >= 2, found {num_classes!r}")
    return shape  # type: ignore[return-value]


def lenet5(num_classes: int = 10, input_shape: Shape3 = (1, 28, 28), seed: int = 0) -> Model:
    """LeNet-5: conv 6@5x5 (padding 2), pool, conv 16@5x5, pool, linear 120, 84, classes.

    The second convolution is padded ("same") when the first pooling leaves fewer than 10
    pixels a side, so the net also fits small images such as the 8x8 digits.
    """
    c, h, w = _check_input("lenet5", input_shape, num_classes)
    g = Graph()
    x = g.input((c, h, w))
    y = g.max_pool2d(g.relu(g.conv2d(x, out_channels=6, kernel_size=5, padding=2, name="conv1")),
                     kernel_size=2, name="pool1")
    pad2 = 0 if min(h, w) // 2 >= 10 else 2
    y = g.max_pool2d(g.relu(g.conv2d(y, out_channels=16, kernel_size=5, padding=pad2, name="conv2")),
                     kernel_size=2, name="pool2")
    y = g.relu(g.linear(g.flatten(y), out_features=120, name="fc1"))
    y = g.relu(g.linear(y, out_features=84, name="fc2"))
    g.output(g.linear(y, out_features=num_classes, name="fc3"))
    return Model(g, seed=seed)


def _conv_pool(g: Graph, x: Node, out_channels: int, act: str, i: int) -> Node:
    # network3's ConvPoolLayer applies the activation after pooling; for ReLU that is the
    # same function as pooling after it (max commutes with a monotone map), on 4x fewer values.
    y = g.conv2d(x, out_channels=out_channels, kernel_size=5, name=f"conv{i}")
    return g.layer(act, g.max_pool2d(y, kernel_size=2, name=f"pool{i}"), name=f"act{i}")


NETWORK3_VARIANTS = {
    "fc": "linear 100 (sigmoid), linear 10 -- network3's shallow baseline",
    "conv1": "conv 20@5x5 + pool 2 (sigmoid), linear 100 (sigmoid), linear 10",
    "conv2": "two conv-pool layers 20@5x5, 40@5x5 (sigmoid), linear 100 (sigmoid), linear 10",
    "conv2_relu": "two conv-pool layers 20@5x5, 40@5x5, linear 100, linear 10, all ReLU",
    "conv2_relu_dropout": "two ReLU conv-pool layers, two linear 1000 (ReLU), dropout 0.5 before each linear",
}


def network3(variant: str = "conv2_relu", num_classes: int = 10, input_shape: Shape3 = (1, 28, 28),
             seed: int = 0) -> Model:
    """One of network3's MNIST nets (see ``NETWORK3_VARIANTS``); convolutions are unpadded."""
    if variant not in NETWORK3_VARIANTS:
        raise ValueError(f"network3: unknown variant {variant!r}; expected one of {', '.join(NETWORK3_VARIANTS)}")
    shape = _check_input("network3", input_shape, num_classes)
    act = "relu" if "relu" in variant else "sigmoid"
    g = Graph()
    y = g.input(shape)
    for i, k in enumerate((20, 40)[: {"fc": 0, "conv1": 1}.get(variant, 2)], start=1):
        y = _conv_pool(g, y, k, act, i)
    y = g.flatten(y)
    if variant == "conv2_relu_dropout":
        for i in (1, 2):
            y = g.dropout(y, p=0.5, name=f"drop{i}")
            y = g.relu(g.linear(y, out_features=1000, name=f"fc{i}"))
        y = g.dropout(y, p=0.5, name="drop3")
        g.output(g.linear(y, out_features=num_classes, name="fc3"))
    else:
        y = g.layer(act, g.linear(y, out_features=100, name="fc1"))
        g.output(g.linear(y, out_features=num_classes, name="fc2"))
    return Model(g, seed=seed)


def vgg_small(num_classes: int = 10, input_shape: Shape3 = (3, 32, 32), width: int = 32,
              batch_norm: bool = False, seed: int = 0) -> Model:
    """VGG-style: three stages of two 3x3 convolutions (width, 2 width, 4 width) each ending
    in a 2x2 max pool, then linear 256 with dropout 0.5 and the classifier."""
    shape = _check_input("vgg_small", input_shape, num_classes)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"vgg_small: width must be a positive int, found {width!r}")
    if min(shape[1:]) < 8:
        raise ValueError(f"vgg_small: input must be at least 8x8 (three 2x2 poolings), found {shape}")
    g = Graph()
    y = g.input(shape)
    for stage, k in enumerate((width, 2 * width, 4 * width), start=1):
        for j in (1, 2):
            name = f"conv{stage}_{j}"
            y = g.conv2d(y, out_channels=k, kernel_size=3, padding=1, bias=not batch_norm, name=name)
            if batch_norm:
                y = g.batch_norm2d(y, name=f"bn{stage}_{j}")
            y = g.relu(y)
        y = g.max_pool2d(y, kernel_size=2, name=f"pool{stage}")
    y = g.relu(g.linear(g.flatten(y), out_features=256, name="fc1"))
    y = g.dropout(y, p=0.5, name="drop1")
    g.output(g.linear(y, out_features=num_classes, name="fc2"))
    return Model(g, seed=seed)


MODELS: dict[str, Callable[..., Model]] = {"lenet5": lenet5, "network3": network3, "vgg_small": vgg_small}


def build(name: str, **kwargs: Any) -> Model:
    """A zoo model by name (``MODELS``), with its keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; the zoo has: {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


# CIFAR models built from blocks (32x32 RGB in by default, logits out; global average pooling
# lets them take other image sizes) -----------------------------------------------------------
def googlenet_mini(num_classes: int = 10, input_shape: Shape3 = (3, 32, 32), seed: int = 0) -> Model:
    """A small GoogLeNet (v1) for 32x32 RGB: 3x3 stem, five Inception modules, GAP, linear.

    As in GoogLeNet, the stem's max-pool lowers the resolution before the first module:
    Inception 3a/3b run at 16x16, 4a/4b at 8x8 and 5a at 4x4 (3x3 stride-2 max-pools between
    the groups); dropout 0.4 before the classifier. About 38 MFLOPs per image.
    """
    from . import blocks

    g = Graph()
    x = g.input(_check_input("googlenet_mini", input_shape, num_classes))
    h = g.relu(g.conv2d(x, out_channels=32, kernel_size=3, padding=1, name="stem"), name="stem_relu")
    h = g.max_pool2d(h, kernel_size=3, stride=2, padding=1, name="stem_pool")
    h = blocks.inception(g, h, c1=16, c3_reduce=24, c3=32, c5_reduce=4, c5=8, pool_proj=8, name="inc3a")
    h = blocks.inception(g, h, c1=32, c3_reduce=32, c3=48, c5_reduce=8, c5=16, pool_proj=16, name="inc3b")
    h = g.max_pool2d(h, kernel_size=3, stride=2, padding=1, name="pool3")
    h = blocks.inception(g, h, c1=48, c3_reduce=32, c3=64, c5_reduce=8, c5=16, pool_proj=32, name="inc4a")
    h = blocks.inception(g, h, c1=64, c3_reduce=48, c3=96, c5_reduce=12, c5=32, pool_proj=32, name="inc4b")
    h = g.max_pool2d(h, kernel_size=3, stride=2, padding=1, name="pool4")
    h = blocks.inception(g, h, c1=96, c3_reduce=64, c3=128, c5_reduce=16, c5=32, pool_proj=32, name="inc5a")
    h = g.dropout(g.global_avg_pool2d(h, name="gap"), p=0.4, name="drop")
    g.output(g.linear(h, out_features=num_classes, name="fc"))
    return Model(g, seed=seed)


def _cifar_resnet(fn: str, block: str, depth: int, per_block: int, num_classes: int,
                  input_shape: Shape3, seed: int) -> Model:
    """He et al.'s CIFAR ResNet layout: 3x3 stem (16 channels), three stages of ``n`` blocks
    at 32x32, 16x16 and 8x8 with stride-2 transitions into stages 2 and 3, GAP, linear."""
    from . import blocks

    if isinstance(depth, bool) or not isinstance(depth, int) or depth < per_block + 2 \
            or (depth - 2) % per_block:
        raise ValueError(f"{fn}: depth must be {per_block}n+2 for n >= 1 "
                         f"(e.g. {3 * per_block + 2}), found {depth!r}")
    n = (depth - 2) // per_block
    g = Graph()
    h = g.input(_check_input(fn, input_shape, num_classes))
    with g.scope("stem"):
        h = g.conv2d(h, out_channels=16, kernel_size=3, padding=1, bias=False, name="conv")
        h = g.relu(g.batch_norm2d(h, name="bn"), name="relu")
    for stage, width in enumerate((16, 32, 64), start=1):
        with g.scope(f"stage{stage}"):
            for i in range(1, n + 1):
                stride = 2 if stage > 1 and i == 1 else 1
                if block == "bottleneck":
                    h = blocks.bottleneck(g, h, mid_channels=width, out_channels=4 * width,
                                          stride=stride, name=f"block{i}")
                else:
                    h = blocks.basic_block(g, h, out_channels=width, stride=stride, name=f"block{i}")
    h = g.global_avg_pool2d(h, name="gap")
    g.output(g.linear(h, out_features=num_classes, name="fc"))
    return Model(g, seed=seed)


def resnet_bottleneck(depth: int = 29, num_classes: int = 10, input_shape: Shape3 = (3, 32, 32),
                      seed: int = 0) -> Model:
    """CIFAR ResNet of bottleneck blocks, depth = 9n + 2 (29: n = 3): 16/32/64 mid channels
    expanded x4 to 64/128/256, stride-2 transitions into stages 2 and 3 (ResNet v1.5)."""
    return _cifar_resnet("resnet_bottleneck", "bottleneck", depth, 9, num_classes, input_shape, seed)


def resnet_basic(depth: int = 20, num_classes: int = 10, input_shape: Shape3 = (3, 32, 32),
                 seed: int = 0) -> Model:
    """CIFAR ResNet of basic blocks (He et al.'s ResNet-20/32/56), depth = 6n + 2: widths
    16/32/64, stride-2 transitions into stages 2 and 3, projection shortcuts where shapes change."""
    return _cifar_resnet("resnet_basic", "basic_block", depth, 6, num_classes, input_shape, seed)


__all__ += ["googlenet_mini", "resnet_bottleneck", "resnet_basic"]
MODELS.update({"googlenet_mini": googlenet_mini, "resnet_bottleneck": resnet_bottleneck,
               "resnet_basic": resnet_basic})
