"""The shapes shared by elementwise activations; in inference they may write y over x.

``OutputGradActivation`` (relu, sigmoid, tanh): forward y = f(x), backward gx = gy * f'(y); a
subclass names itself and its cost; its kernels, in ``<name>_cpu.py`` / ``<name>_cuda.py``,
are ``<name>_forward(x, y)`` and ``<name>_backward(y, gy, gx)`` on flat arrays.
``ConstantActivation`` (elu, gelu, hardtanh, relu6): the same with hyper-parameters, passed to
its kernels as one tuple of constants.
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


def number(value: Any, what: str, infinite: bool = False) -> float:
    """A hyper-parameter that must be a real number: finite, or (``infinite``) at least not NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, found {value!r}")
    if math.isnan(value) or (not infinite and math.isinf(value)):
        raise ValueError(f"{what} must be {'a number, not NaN' if infinite else 'finite'}, found {value}")
    return float(value)


class ConstantActivation(Layer):
    """Elementwise y = f(x; constants) (elu's alpha, hardtanh's bounds, gelu's mode), its
    gradient read from the output or, where f' needs it, the input. Any shape -> same shape.

    A subclass names its kernel prefix (``kernel``, its own name by default) and ``constants``;
    its kernels are ``<kernel>_forward(x, k, y)`` and ``<kernel>_backward(s, gy, k, gx)`` on
    flat arrays, ``k`` the constants tuple and ``s`` the saved output or input.
    """

    inplace_ok = True
    flops_per_element: ClassVar[int] = 1
    #: The kernels' name prefix ("" is the layer's name).
    kernel: ClassVar[str] = ""
    #: What backward differentiates from: "output" or "input".
    grad_from: ClassVar[str] = "output"

    def output_shape(self, x_shape: Shape) -> Shape:
        return x_shape

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return self.flops_per_element * math.prod(output_shape)

    def constants(self, dtype: Any) -> tuple:
        """The kernels' constants, floats typed as ``dtype`` (a Python float would make the
        CUDA kernels compute in float64)."""
        return ()

    def _kernel(self, ctx: Ctx, which: str) -> Any:
        return getattr(ctx.kernels, f"{self.kernel or self.name}_{which}")

    def forward(self, ctx: Ctx, x: Any) -> Any:
        y = x if ctx.inplace else ctx.empty_like(x)
        self._kernel(ctx, "forward")(x.reshape(x.size), self.constants(x.dtype), y.reshape(y.size))
        # In place, x is y; that happens only in inference, where no backward follows.
        ctx.save(y if self.grad_from == "output" else x)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        (s,) = ctx.saved
        gx = ctx.empty_like(gy)
        self._kernel(ctx, "backward")(s.reshape(s.size), gy.reshape(gy.size), self.constants(gy.dtype),
                                      gx.reshape(gx.size))
        return gx
