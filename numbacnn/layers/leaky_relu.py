"""leaky_relu: y = x if x > 0 else negative_slope * x, elementwise."""

from __future__ import annotations

import math
from typing import Any

from ..layer import Ctx, Layer, Shape


class LeakyReLU(Layer):
    """Leaky rectified linear unit, y = x if x > 0 else negative_slope * x. Any shape -> same shape."""

    name = "leaky_relu"
    inplace_ok = True

    def __init__(self, negative_slope: float = 0.01) -> None:
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
            raise TypeError(f"negative_slope must be a number, found {negative_slope!r}")
        if not math.isfinite(negative_slope):
            raise ValueError(f"negative_slope must be finite, found {negative_slope}")
        self.negative_slope = float(negative_slope)

    def output_shape(self, x_shape: Shape) -> Shape:
        return x_shape

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return math.prod(output_shape)

    def _sign_source(self, x: Any, y: Any) -> Any:
        # With a slope >= 0, y > 0 exactly where x > 0, so backward reads y as relu does; a
        # negative slope makes y > 0 on both sides, and only x tells them apart.
        return y if self.negative_slope >= 0 else x

    def forward(self, ctx: Ctx, x: Any) -> Any:
        y = x if ctx.inplace else ctx.empty_like(x)
        ctx.kernels.leaky_relu_forward(x.reshape(x.size), x.dtype.type(self.negative_slope), y.reshape(y.size))
        ctx.save(self._sign_source(x, y))
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        (s,) = ctx.saved
        gx = ctx.empty_like(gy)
        ctx.kernels.leaky_relu_backward(s.reshape(s.size), gy.reshape(gy.size), gy.dtype.type(self.negative_slope),
                                        gx.reshape(gx.size))
        return gx
