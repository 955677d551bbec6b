"""max_pool2d: the largest value of each (dilated) window, as torch.nn.MaxPool2d computes it.

The window geometry (``pair``, ``pooled_size``, ``pool_window_check``) is shared with
avg_pool2d, which has the same output-size rule and the same padding limit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..layer import Ctx, Layer, Shape, ShapeError

Pair = tuple[int, int]
_INDEX = np.dtype(np.int32)


def pair(value: Any, what: str, minimum: int) -> Pair:
    """``value`` as an (h, w) pair of ints >= ``minimum``: an int or a sequence of two."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{what} must be an int or a pair of ints, found {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{what} must be at least {minimum}, found {value!r}")
    return items


def check_padding(padding: Pair, kernel: Pair) -> None:
    """PyTorch's limit: padding at most half the kernel, so every window holds input."""
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"padding must be at most half of kernel_size: expected padding <= "
                         f"{kernel[0] // 2}x{kernel[1] // 2}, found {padding[0]}x{padding[1]} "
                         f"for kernel_size {kernel[0]}x{kernel[1]}")


def check_flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, found {value!r}")
    return value


def pooled_size(size: int, window: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size; in ceil mode the last window must start before the
    right padding (inside the input or the left padding)."""
    span = size + 2 * pad - window
    out = (span + stride - 1) // stride + 1 if ceil_mode else span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_output_shape(x_shape: Shape, window: Pair, stride: Pair, padding: Pair, ceil_mode: bool) -> Shape:
    """(C, H, W) -> (C, P, Q) for an effective (dilated) ``window``, or a ShapeError.

    As in PyTorch, ceil mode accepts an input smaller than the window when the rounding up
    still gives one window that starts inside it.
    """
    if len(x_shape) != 3:
        raise ShapeError(f"expected an input of shape (C, H, W), found {tuple(x_shape)}")
    C, H, W = x_shape
    P = pooled_size(H, window[0], stride[0], padding[0], ceil_mode)
    Q = pooled_size(W, window[1], stride[1], padding[1], ceil_mode)
    if P < 1 or Q < 1:
        need = [next(n for n in range(1, window[i] + 1)
                     if pooled_size(n, window[i], stride[i], padding[i], ceil_mode) >= 1) for i in (0, 1)]
        padded = f" (padded to {H + 2 * padding[0]}x{W + 2 * padding[1]})" if any(padding) else ""
        raise ShapeError(f"input {H}x{W}{padded} is smaller than the {window[0]}x{window[1]} window: "
                         f"expected at least {need[0]}x{need[1]}, found {H}x{W}")
    return (C, P, Q)


class MaxPool2d(Layer):
    """Max pooling over (dilated) windows. (C, H, W) -> (C, P, Q)."""

    name = "max_pool2d"

    def __init__(self, kernel_size: int | Pair, stride: int | Pair | None = None, padding: int | Pair = 0,
                 dilation: int | Pair = 1, ceil_mode: bool = False) -> None:
        self.kernel = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel if stride is None else pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.dilation = pair(dilation, "dilation", 1)
        self.ceil_mode = check_flag(ceil_mode, "ceil_mode")
        check_padding(self.padding, self.kernel)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check max_pool2d``."""
        return [
            {"config": {"kernel_size": 2}, "input_shapes": [(2, 3, 6, 6)],
             "bad_shapes": [([(2, 3, 1, 1)], "smaller than the 2x2 window")]},
            {"config": {"kernel_size": 3, "stride": 1, "padding": 1}, "input_shapes": [(1, 2, 5, 4)]},
            {"config": {"kernel_size": 3, "stride": 2, "dilation": (1, 2), "ceil_mode": True},
             "input_shapes": [(2, 2, 6, 7)]},
        ]

    def _window(self) -> Pair:
        return (self.dilation[0] * (self.kernel[0] - 1) + 1, self.dilation[1] * (self.kernel[1] - 1) + 1)

    def output_shape(self, x_shape: Shape) -> Shape:
        return pool_output_shape(x_shape, self._window(), self.stride, self.padding, self.ceil_mode)

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        C, P, Q = output_shape
        return C * P * Q * self.kernel[0] * self.kernel[1]

    def _geometry(self) -> tuple[int, ...]:
        return (*self.kernel, *self.stride, *self.padding, *self.dilation)

    def _plan(self, x_shape: Shape) -> tuple[Shape, tuple[int, ...]]:
        # The output shape and the kernels' geometry: asked once per input signature (ctx.plan).
        return (x_shape[0], *self.output_shape(tuple(x_shape[1:]))), self._geometry()

    def _forward(self, ctx: Ctx, x: Any, kernels: Any) -> Any:
        out, geo = ctx.plan(x.shape, lambda: self._plan(x.shape))
        y = ctx.empty(out)
        # Each output keeps the flat in-plane index of its maximum, for backward's routing.
        index = ctx.empty(out, _INDEX)
        kernels.max_pool2d_forward(x, geo, y, index)
        ctx.save(index, x.shape)
        return y

    def _backward(self, ctx: Ctx, gy: Any, kernels: Any) -> Any:
        if not ctx.needs_input_grad[0]:
            return None
        index, x_shape = ctx.saved
        gx = ctx.empty(x_shape)
        kernels.max_pool2d_backward_input(gy, index, ctx.plan(x_shape, lambda: self._plan(x_shape))[1], gx)
        return gx

    def forward_cpu(self, ctx: Ctx, x: Any) -> Any:
        from . import max_pool2d_cpu

        return self._forward(ctx, x, max_pool2d_cpu)

    def backward_cpu(self, ctx: Ctx, gy: Any) -> Any:
        from . import max_pool2d_cpu

        return self._backward(ctx, gy, max_pool2d_cpu)

    def forward_cuda(self, ctx: Ctx, x: Any) -> Any:
        from . import max_pool2d_cuda

        return self._forward(ctx, x, max_pool2d_cuda)

    def backward_cuda(self, ctx: Ctx, gy: Any) -> Any:
        from . import max_pool2d_cuda

        return self._backward(ctx, gy, max_pool2d_cuda)
