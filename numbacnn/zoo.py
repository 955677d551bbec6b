"""Model zoo: functions that build a ready-to-train ``Model`` (each takes ``seed``).

``lenet5`` (LeCun et al. 1998, with ReLU and max pooling), ``network3`` (the MNIST nets of
Nielsen's *Neural Networks and Deep Learning*, chapter 6), ``vgg_small`` (stacked 3x3
convolutions for 32x32 RGB input), googlenet_mini, resnet_bottleneck and resnet_basic (CIFAR-shaped,
built from nc.blocks); alexnet_small (32x32), text_cnn (conv1d over (C, L) sequences), c3d_small
(conv3d over (C, D, H, W) clips) and encoder_decoder (image to image, its decoder upsampling
by transposed convolution or by resize-convolution). ``MODELS`` maps the names the CLI accepts
to builders; every builder but encoder_decoder's takes ``num_classes``.
"""

from __future__ import annotations

from typing import Any, Callable

from .graph import Graph, Node
from .model import Model

__all__ = ["lenet5", "network3", "vgg_small", "NETWORK3_VARIANTS", "MODELS", "build"]

Shape3 = tuple[int, int, int]


def _check_input(fn: str, input_shape: Any, num_classes: Any, layout: str = "(C, H, W)") -> Any:
    """``input_shape`` as a tuple of ints, of as many sizes as ``layout`` names."""
    ndim = layout.count(",") + 1
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: input_shape must be {layout}, found {input_shape!r}") from None
    if len(shape) != ndim or min(shape) < 1:
        count = ("one", "two", "three", "four")[ndim - 1]
        raise ValueError(f"{fn}: input_shape must be {count} positive sizes {layout}, found {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{fn}: num_classes must be an int >= 2, found {num_classes!r}")
    return shape


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


# The second phase's models: AlexNet at 32x32, a text CNN, a 3-D CNN, an encoder-decoder ------
def alexnet_small(num_classes: int = 10, input_shape: Shape3 = (1, 32, 32), width: int = 16,
                  seed: int = 0) -> Model:
    """AlexNet's layout (Krizhevsky et al. 2012) scaled to 32x32: five ReLU convolutions (5x5,
    5x5, 3x3, 3x3, 3x3; widths w, 2w, 3w, 3w, 2w, "same" padding), overlapping 3x3 stride-2 max
    pools after the first, second and fifth (32 -> 15 -> 7 -> 3), then as torchvision's
    classifier: dropout 0.5, linear 16w, ReLU, dropout 0.5, linear 16w, ReLU, linear. AlexNet's
    local response normalisation is left out, as in most later re-implementations."""
    shape = _check_input("alexnet_small", input_shape, num_classes)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"alexnet_small: width must be a positive int, found {width!r}")
    if min(shape[1:]) < 15:
        raise ValueError(f"alexnet_small: input must be at least 15x15 (three 3x3 stride-2 poolings), "
                         f"found {shape}")
    g = Graph()
    y = g.input(shape)
    convs = ((width, 5), (2 * width, 5), (3 * width, 3), (3 * width, 3), (2 * width, 3))
    for i, (k, r) in enumerate(convs, start=1):
        y = g.relu(g.conv2d(y, out_channels=k, kernel_size=r, padding=r // 2, name=f"conv{i}"))
        if i in (1, 2, 5):  # AlexNet's overlapping pooling: windows of 3 every 2 pixels
            y = g.max_pool2d(y, kernel_size=3, stride=2, name=f"pool{i}")
    y = g.flatten(y)
    for i in (1, 2):
        y = g.dropout(y, p=0.5, name=f"drop{i}")
        y = g.relu(g.linear(y, out_features=16 * width, name=f"fc{i}"))
    g.output(g.linear(y, out_features=num_classes, name="fc3"))
    return Model(g, seed=seed)


def text_cnn(num_classes: int = 10, input_shape: tuple[int, int] = (28, 28), filters: int = 32,
             widths: tuple[int, ...] = (3, 4, 5), seed: int = 0) -> Model:
    """Kim (2014)'s CNN for sentence classification over (C, L) sequences of C features a step
    (an embedded sentence; ``mnist-rows-t10k``'s image rows): one conv1d per kernel width
    (``filters`` each, ReLU), each max-pooled over the whole sequence, concatenated, dropout
    0.5 and a linear classifier. Kim's embedding layer is left to the data."""
    c, length = _check_input("text_cnn", input_shape, num_classes, "(C, L)")
    if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
        raise ValueError(f"text_cnn: filters must be a positive int, found {filters!r}")
    if not widths or any(isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= length for r in widths):
        raise ValueError(f"text_cnn: widths must be kernel widths from 1 to the length {length}, found {widths!r}")
    g = Graph()
    x = g.input((c, length))
    branches = []
    for r in widths:
        h = g.relu(g.conv1d(x, out_channels=filters, kernel_size=r, name=f"conv{r}"))
        # max over all of time: one value per filter, whatever the position of the feature
        branches.append(g.max_pool1d(h, kernel_size=length - r + 1, name=f"pool{r}"))
    y = g.concat(*branches, name="concat") if len(branches) > 1 else branches[0]
    y = g.dropout(g.flatten(y), p=0.5, name="drop")
    g.output(g.linear(y, out_features=num_classes, name="fc"))
    return Model(g, seed=seed)


def c3d_small(num_classes: int = 10, input_shape: tuple[int, int, int, int] = (1, 8, 22, 22), width: int = 8,
              seed: int = 0) -> Model:
    """A small C3D (Tran et al. 2015) for (C, D, H, W) clips: three 3x3x3 convolutions (widths w,
    2w, 4w, padding 1), each with batch_norm3d and ReLU, max pools of 1x2x2 (space only, as C3D's
    first, so early layers keep every frame), 2x2x2 and 2x2x2, then flatten and a linear classifier."""
    shape = _check_input("c3d_small", input_shape, num_classes, "(C, D, H, W)")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"c3d_small: width must be a positive int, found {width!r}")
    if shape[1] < 4 or min(shape[2:]) < 8:
        raise ValueError(f"c3d_small: clips must be at least 4 frames of 8x8 (pools of 1x2x2, 2x2x2, 2x2x2), "
                         f"found {shape}")
    g = Graph()
    y = g.input(shape)
    for i, (k, pool) in enumerate(((width, (1, 2, 2)), (2 * width, 2), (4 * width, 2)), start=1):
        y = g.conv3d(y, out_channels=k, kernel_size=3, padding=1, bias=False, name=f"conv{i}")
        y = g.relu(g.batch_norm3d(y, name=f"bn{i}"))
        y = g.max_pool3d(y, kernel_size=pool, name=f"pool{i}")
    g.output(g.linear(g.flatten(y), out_features=num_classes, name="fc"))
    return Model(g, seed=seed)


ENCODER_DECODER_VARIANTS = {
    "transposed": "decoder upsamples by conv_transpose2d 3x3, stride 2, padding 1, output_padding 1",
    "resize": "decoder upsamples by nearest upsample x2, then conv2d 3x3, padding 1 (resize-convolution)",
}


def encoder_decoder(variant: str = "transposed", input_shape: Shape3 = (1, 28, 28), width: int = 16,
                    seed: int = 0) -> Model:
    """An image-to-image net (denoising): two 3x3 stride-2 ReLU convolutions (widths w, 2w) down
    to a quarter of the size, then two x2 upsampling steps back (2w -> w, ReLU; w -> C) by the
    ``variant``'s method (``ENCODER_DECODER_VARIANTS``): transposed convolution, or resize-
    convolution (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts"). Both variants
    have the same parameter count. The output is linear (no squashing), so it shows what the
    last upsampling step draws."""
    if variant not in ENCODER_DECODER_VARIANTS:
        raise ValueError(f"encoder_decoder: unknown variant {variant!r}; expected one of "
                         f"{', '.join(ENCODER_DECODER_VARIANTS)}")
    c, h, w = _check_input("encoder_decoder", input_shape, 2)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"encoder_decoder: width must be a positive int, found {width!r}")
    if h % 4 or w % 4:
        raise ValueError(f"encoder_decoder: height and width must be multiples of 4 (two x2 downsamplings "
                         f"and back), found {input_shape!r}")
    g = Graph()
    y = g.input((c, h, w))
    y = g.relu(g.conv2d(y, out_channels=width, kernel_size=3, stride=2, padding=1, name="enc1"))
    y = g.relu(g.conv2d(y, out_channels=2 * width, kernel_size=3, stride=2, padding=1, name="enc2"))
    for i, k in ((1, width), (2, c)):
        if variant == "transposed":
            y = g.conv_transpose2d(y, out_channels=k, kernel_size=3, stride=2, padding=1, output_padding=1,
                                   name=f"dec{i}")
        else:
            y = g.upsample(y, scale_factor=2, mode="nearest", name=f"up{i}")
            y = g.conv2d(y, out_channels=k, kernel_size=3, padding=1, name=f"dec{i}")
        if i == 1:
            y = g.relu(y)
    g.output(y)
    return Model(g, seed=seed)


__all__ += ["alexnet_small", "text_cnn", "c3d_small", "encoder_decoder", "ENCODER_DECODER_VARIANTS"]
MODELS.update({"alexnet_small": alexnet_small, "text_cnn": text_cnn, "c3d_small": c3d_small,
               "encoder_decoder": encoder_decoder})
