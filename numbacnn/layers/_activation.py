"""The shape shared by activations whose gradient is read off their output (relu, sigmoid,
tanh): forward y = f(x), backward gx = gy * f'(y); in inference they may write y over x.

A subclass names itself and its cost; its kernels live in ``<name>_cpu.py`` /
``<name>_cuda.py`` as ``<name>_forward(x, y)`` and ``<name>_backward(y, gy, gx)`` on flat
arrays, imported on first use.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, ClassVar

from ..layer import Ctx, Layer, Shape


_KERNELS: dict[tuple[type, str, str], Any] = {}


def _flat(a: Any) -> Any:
    return a.reshape(a.size)


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

    def _kernel(self, device: str, which: str) -> Any:
        # Looked up once per class, device and direction: an import per call costs more than
        # a small kernel runs.
        key = (type(self), device, which)
        kernel = _KERNELS.get(key)
        if kernel is None:
            module = importlib.import_module(f"{__package__}.{self.name}_{device}")
            kernel = _KERNELS[key] = getattr(module, f"{self.name}_{which}")
        return kernel

    def _forward(self, ctx: Ctx, x: Any) -> Any:
        y = x if ctx.inplace else ctx.empty_like(x)
        self._kernel(ctx.device, "forward")(_flat(x), _flat(y))
        ctx.save(y)
        return y

    def _backward(self, ctx: Ctx, gy: Any) -> Any:
        (y,) = ctx.saved
        gx = ctx.empty_like(gy)
        self._kernel(ctx.device, "backward")(_flat(y), _flat(gy), _flat(gx))
        return gx

    forward_cpu = forward_cuda = _forward
    backward_cpu = backward_cuda = _backward
