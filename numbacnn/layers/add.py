"""add: the elementwise sum of two or more inputs of one shape (a residual join)."""

from __future__ import annotations

import math
from typing import Any

from ..layer import Ctx, Layer, Shape, ShapeError


class Add(Layer):
    """Elementwise sum y = x0 + x1 + ... . Two or more inputs of one shape -> that shape."""

    name = "add"
    n_inputs = None
    #: Set on the executor's copy of an add whose output only a relu reads (inference's
    #: numbacnn._fold, training's numbacnn._fuse_train): the last sum applies that relu. The
    #: model's own layer never has it.
    fused_relu = False

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
        add_forward, last = ctx.kernels.add_forward, len(xs) - 1
        y = ctx.empty_like(xs[0])
        flat = y.reshape(y.size)
        for i in range(1, len(xs)):
            kernel = ctx.kernels.add_relu_forward if self.fused_relu and i == last else add_forward
            kernel(xs[0].reshape(y.size) if i == 1 else flat, xs[i].reshape(y.size), flat)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        # d(sum)/dx_i is the identity: every input gets gy itself (the executor copies before
        # it sums into a gradient it does not own).
        return tuple(gy if need else None for need in ctx.needs_input_grad)
