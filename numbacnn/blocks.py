"""Multi-branch building blocks: the GoogLeNet Inception module and the ResNet residual blocks.

A block is a function that adds ordinary registered layers to a graph and returns the node of
its output. Every node it adds is named inside the block's scope (``"inc3a.conv3"``,
``"b2.add"``), so ``model.params`` keys read ``"b2.conv1.weight"`` and a shape error points at
the block and the node. Without ``name=``, a block is named ``"<block>_<k>"`` with the first
``k`` not yet used in the graph (``"inception_1"``, ``"bottleneck_2"``).
"""

from __future__ import annotations

from typing import Any

from ._shapes import show
from .graph import Graph, GraphError, Node
from .layer import ShapeError

__all__ = ["inception", "bottleneck", "basic_block", "node_shape"]


def node_shape(g: Graph, x: Node) -> tuple[int | None, ...]:
    """The per-sample output shape of node ``x`` (None where it follows a free input size).

    A block needs the channel count of its input to decide between an identity and a
    projection shortcut. The inference is the graph's own (``Graph.shapes``), errors included.
    """
    return g.shapes(upto=[x.name])[x.name]


def _in_channels(g: Graph, x: Node, block: str) -> int:
    shape = node_shape(g, x)
    if len(shape) != 3 or shape[0] is None:
        raise ShapeError(f"{block}: expected an input of shape (C, H, W) with a fixed C, found node "
                         f"'{x.name}' of shape {show(shape)}")
    return shape[0]


def _block_name(g: Graph, kind: str, name: str | None) -> str:
    if name is not None:
        return name
    taken = {part for node in g.nodes for part in node.split(".")}
    k = 1
    while f"{kind}_{k}" in taken:
        k += 1
    return f"{kind}_{k}"


def _node(g: Graph, x: Any, block: str) -> Node:
    if not isinstance(x, Node) or x.graph is not g:
        raise GraphError(f"{block}: expected a node of this graph as input, found {x!r}")
    return x


def _channels(**sizes: int) -> None:
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{key} must be a positive int, found {value!r}")


def _conv_relu(g: Graph, x: Node, out_channels: int, kernel_size: int, name: str) -> Node:
    h = g.conv2d(x, out_channels=out_channels, kernel_size=kernel_size, padding=kernel_size // 2,
                 name=name)
    return g.relu(h, name=f"{name}_relu")


def inception(g: Graph, x: Node, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int,
              pool_proj: int, name: str | None = None) -> Node:
    """GoogLeNet (v1) Inception module: (C, H, W) -> (c1 + c3 + c5 + pool_proj, H, W).

    Four branches of biased convolutions, each followed by ReLU: 1x1; 1x1 reduce then 3x3;
    1x1 reduce then 5x5; 3x3 max-pool (stride 1, padding 1) then 1x1 projection. They are
    concatenated along channels in that order.
    """
    _channels(c1=c1, c3_reduce=c3_reduce, c3=c3, c5_reduce=c5_reduce, c5=c5, pool_proj=pool_proj)
    x = _node(g, x, "inception")
    with g.scope(_block_name(g, "inception", name)):
        b1 = _conv_relu(g, x, c1, 1, "conv1")
        b3 = _conv_relu(g, _conv_relu(g, x, c3_reduce, 1, "conv3_reduce"), c3, 3, "conv3")
        b5 = _conv_relu(g, _conv_relu(g, x, c5_reduce, 1, "conv5_reduce"), c5, 5, "conv5")
        pool = g.max_pool2d(x, kernel_size=3, stride=1, padding=1, name="pool")
        bp = _conv_relu(g, pool, pool_proj, 1, "pool_proj")
        return g.concat(b1, b3, b5, bp, name="concat")


def _conv_bn(g: Graph, x: Node, out_channels: int, kernel_size: int, stride: int, name: str,
             bn: str) -> Node:
    h = g.conv2d(x, out_channels=out_channels, kernel_size=kernel_size, stride=stride,
                 padding=kernel_size // 2, bias=False, name=name)
    return g.batch_norm2d(h, name=bn)


def _residual(g: Graph, x: Node, branch: Node, out_channels: int, stride: int,
              in_channels: int) -> Node:
    """Join ``branch`` to the shortcut of ``x`` (identity, or 1x1 conv + BN) and apply ReLU."""
    shortcut = x
    if stride != 1 or in_channels != out_channels:
        shortcut = _conv_bn(g, x, out_channels, 1, stride, "proj", "proj_bn")
    return g.relu(g.add(branch, shortcut, name="add"), name="relu")


def bottleneck(g: Graph, x: Node, mid_channels: int, out_channels: int, stride: int = 1,
               name: str | None = None) -> Node:
    """ResNet v1.5 bottleneck: (C, H, W) -> (out_channels, H', W'), H' = (H - 1) // stride + 1.

    1x1 reduce to ``mid_channels``, 3x3 carrying the stride, 1x1 expand to ``out_channels``;
    bias-free convolutions each followed by batch_norm2d, ReLU after the first two and after
    the add. The shortcut is the identity when stride is 1 and channels match, otherwise a
    1x1 convolution with that stride followed by batch_norm2d.
    """
    _channels(mid_channels=mid_channels, out_channels=out_channels, stride=stride)
    x = _node(g, x, "bottleneck")
    in_channels = _in_channels(g, x, "bottleneck")
    with g.scope(_block_name(g, "bottleneck", name)):
        h = g.relu(_conv_bn(g, x, mid_channels, 1, 1, "conv1", "bn1"), name="relu1")
        h = g.relu(_conv_bn(g, h, mid_channels, 3, stride, "conv2", "bn2"), name="relu2")
        h = _conv_bn(g, h, out_channels, 1, 1, "conv3", "bn3")
        return _residual(g, x, h, out_channels, stride, in_channels)


def basic_block(g: Graph, x: Node, out_channels: int, stride: int = 1,
                name: str | None = None) -> Node:
    """ResNet basic block: (C, H, W) -> (out_channels, H', W'), H' = (H - 1) // stride + 1.

    Two bias-free 3x3 convolutions (the first carries the stride), each followed by
    batch_norm2d, ReLU after the first and after the add; shortcut as in ``bottleneck``.
    """
    _channels(out_channels=out_channels, stride=stride)
    x = _node(g, x, "basic_block")
    in_channels = _in_channels(g, x, "basic_block")
    with g.scope(_block_name(g, "basic_block", name)):
        h = g.relu(_conv_bn(g, x, out_channels, 3, stride, "conv1", "bn1"), name="relu1")
        h = _conv_bn(g, h, out_channels, 3, 1, "conv2", "bn2")
        return _residual(g, x, h, out_channels, stride, in_channels)
