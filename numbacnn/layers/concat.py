"""concat: join two or more inputs along the channel dimension (an Inception join)."""

from __future__ import annotations

import math
from typing import Any

from ..layer import Ctx, Layer, Shape, ShapeError


class Concat(Layer):
    """Channel concatenation. (C0, H, W), (C1, H, W), ... -> (C0 + C1 + ..., H, W)."""

    name = "concat"
    n_inputs = None

    def __init__(self, dim: int = 1) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, found {dim!r}")
        if dim != 1:
            raise ValueError(f"concat supports dim=1 only (the channels of NCHW data), found {dim}")
        self.dim = dim

    def output_shape(self, *x_shapes: Shape) -> Shape:
        first = x_shapes[0]
        for shape in x_shapes[1:]:
            if len(shape) != len(first):
                raise ShapeError(f"concat expects inputs of one rank, found {first} and {shape}")
            if shape[1:] != first[1:]:
                raise ShapeError(f"concat along channels needs equal spatial sizes, found {first} and {shape}")
        return (sum(shape[0] for shape in x_shapes), *first[1:])

    # Backward needs only the input shapes, so the inputs themselves are not kept alive.
    # Each input is copied as a flat (N*M,) block into rows of y viewed as (N, L): every array
    # a kernel sees is contiguous, so one specialisation serves all inputs and shapes (one
    # sample: a single copy of them all, concat_all). The shapes were checked when the graph was.
    def forward(self, ctx: Ctx, *xs: Any) -> Any:
        y = ctx.empty((xs[0].shape[0], sum(x.shape[1] for x in xs), *xs[0].shape[2:]))
        ctx._repeatable(ctx.kernels.concat_all, xs, y)
        ctx.save(*(x.shape for x in xs))
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        N = gy.shape[0]
        rows = gy.reshape(N, gy.size // N)
        gxs = []
        offset = 0
        for shape, need in zip(ctx.saved, ctx.needs_input_grad):
            gx = None
            if need:
                gx = ctx.empty(shape)
                ctx.kernels.concat_backward_input(rows, offset, gx.reshape(gx.size))
            gxs.append(gx)
            offset += math.prod(shape[1:])
        return tuple(gxs)
