"""relu: y = max(x, 0), elementwise."""

from __future__ import annotations

from typing import Any

from ..layer import Ctx, Layer, Shape


class ReLU(Layer):
    """Rectified linear unit, y = max(x, 0). Any shape -> same shape."""

    name = "relu"
    inplace_ok = True

    def __init__(self) -> None:
        pass

    def output_shape(self, x_shape: Shape) -> Shape:
        return x_shape

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        n = 1
        for s in output_shape:
            n *= s
        return n

    def forward_cpu(self, ctx: Ctx, x: Any) -> Any:
        from .relu_cpu import relu_forward

        y = x if ctx.inplace else ctx.empty_like(x)
        relu_forward(x.reshape(-1), y.reshape(-1))
        ctx.save(y)
        return y

    def backward_cpu(self, ctx: Ctx, gy: Any) -> Any:
        from .relu_cpu import relu_backward

        (y,) = ctx.saved
        gx = ctx.empty_like(gy)
        relu_backward(y.reshape(-1), gy.reshape(-1), gx.reshape(-1))
        return gx

    def forward_cuda(self, ctx: Ctx, x: Any) -> Any:
        from .relu_cuda import relu_forward

        y = x if ctx.inplace else ctx.empty_like(x)
        relu_forward(x.reshape(x.size), y.reshape(y.size))
        ctx.save(y)
        return y

    def backward_cuda(self, ctx: Ctx, gy: Any) -> Any:
        from .relu_cuda import relu_backward

        (y,) = ctx.saved
        gx = ctx.empty_like(gy)
        relu_backward(y.reshape(y.size), gy.reshape(gy.size), gx.reshape(gx.size))
        return gx
