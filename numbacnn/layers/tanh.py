"""tanh: y = tanh(x), elementwise."""

from __future__ import annotations

import math
from typing import Any

from ..layer import Ctx, Layer, Shape


class Tanh(Layer):
    """Hyperbolic tangent, y = tanh(x). Any shape -> same shape."""

    name = "tanh"
    inplace_ok = True

    def __init__(self) -> None:
        pass

    def output_shape(self, x_shape: Shape) -> Shape:
        return x_shape

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return math.prod(output_shape)

    def forward_cpu(self, ctx: Ctx, x: Any) -> Any:
        from .tanh_cpu import tanh_forward

        y = x if ctx.inplace else ctx.empty_like(x)
        tanh_forward(x.reshape(-1), y.reshape(-1))
        ctx.save(y)
        return y

    def backward_cpu(self, ctx: Ctx, gy: Any) -> Any:
        from .tanh_cpu import tanh_backward

        (y,) = ctx.saved
        gx = ctx.empty_like(gy)
        tanh_backward(y.reshape(-1), gy.reshape(-1), gx.reshape(-1))
        return gx

    def forward_cuda(self, ctx: Ctx, x: Any) -> Any:
        from .tanh_cuda import tanh_forward

        y = x if ctx.inplace else ctx.empty_like(x)
        tanh_forward(x.reshape(x.size), y.reshape(y.size))
        ctx.save(y)
        return y

    def backward_cuda(self, ctx: Ctx, gy: Any) -> Any:
        from .tanh_cuda import tanh_backward

        (y,) = ctx.saved
        gx = ctx.empty_like(gy)
        tanh_backward(y.reshape(y.size), gy.reshape(gy.size), gx.reshape(gx.size))
        return gx
