"""add: the elementwise sum of two or more inputs of one shape (a residual join)."""

from __future__ import annotations

import math
from typing import Any

from ..layer import Ctx, Layer, Shape, ShapeError


class Add(Layer):
    """Elementwise sum y = x0 + x1 + ... . Two or more inputs of one shape -> that shape."""

    name = "add"
    n_inputs = None

    def __init__(self) -> None:
        pass

    def output_shape(self, *x_shapes: Shape) -> Shape:
        first = x_shapes[0]
        for shape in x_shapes[1:]:
            if shape != first:
                raise ShapeError(f"add expects inputs of one shape, found {first} and {shape}")
        return first

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return (len(input_shapes) - 1) * math.prod(output_shape)

    def forward(self, ctx: Ctx, *xs: Any) -> Any:
        add_forward = ctx.kernels.add_forward
        y = ctx.empty_like(xs[0])
        flat = y.reshape(y.size)
        add_forward(xs[0].reshape(y.size), xs[1].reshape(y.size), flat)
        for x in xs[2:]:
            add_forward(flat, x.reshape(y.size), flat)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        # d(sum)/dx_i is the identity: every input gets gy itself (the executor copies before
        # it sums into a gradient it does not own).
        return tuple(gy if need else None for need in ctx.needs_input_grad)
