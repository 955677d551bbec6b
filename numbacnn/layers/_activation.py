"""The shape shared by activations whose gradient is read off their output (relu, sigmoid,
tanh): forward y = f(x), backward gx = gy * f'(y); in inference they may write y over x.

A subclass names itself and its cost; its kernels, in ``<name>_cpu.py`` / ``<name>_cuda.py``,
are ``<name>_forward(x, y)`` and ``<name>_backward(y, gy, gx)`` on flat arrays.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from ..layer import Ctx, Layer, Shape


class OutputGradActivation(Layer):
    """Elementwise y = f(x) with f' computable from y. Any shape -> same shape."""

    inplace_ok = True
    #: Operations per element, for ``flops``.
    flops_per_element: ClassVar[int] = 1

    def __init__(self) -> None:
        pass

    def output_shape(self, x_shape: Shape) -> Shape:
        return x_shape

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return self.flops_per_element * math.prod(output_shape)

    def forward(self, ctx: Ctx, x: Any) -> Any:
        y = x if ctx.inplace else ctx.empty_like(x)
        getattr(ctx.kernels, self.name + "_forward")(x.reshape(x.size), y.reshape(y.size))
        ctx.save(y)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        (y,) = ctx.saved
        gx = ctx.empty_like(gy)
        getattr(ctx.kernels, self.name + "_backward")(y.reshape(y.size), gy.reshape(gy.size), gx.reshape(gx.size))
        return gx
