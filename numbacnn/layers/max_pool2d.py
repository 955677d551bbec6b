"""max_pool2d: the largest value of each (dilated) window, as torch.nn.MaxPool2d computes it;
its window geometry is _conv_geometry's, shared with conv2d and avg_pool2d."""

from __future__ import annotations

from typing import Any

from ..layer import Ctx, Layer, Shape
from ._conv_geometry import Pair, flag, pair, pool_output_shape, pool_padding


class MaxPool2d(Layer):
    """Max pooling over (dilated) windows. (C, H, W) -> (C, P, Q)."""

    name = "max_pool2d"

    def __init__(self, kernel_size: int | Pair, stride: int | Pair | None = None, padding: int | Pair = 0,
                 dilation: int | Pair = 1, ceil_mode: bool = False) -> None:
        self.kernel = pair(kernel_size, "kernel_size")
        self.stride = self.kernel if stride is None else pair(stride, "stride")
        self.padding = pool_padding(pair(padding, "padding", minimum=0), self.kernel)
        self.dilation = pair(dilation, "dilation")
        self.ceil_mode = flag(ceil_mode, "ceil_mode")

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

    def forward(self, ctx: Ctx, x: Any) -> Any:
        N = x.shape[0]
        C, P, Q = self.output_shape(tuple(x.shape[1:]))
        y = ctx.empty((N, C, P, Q))
        # Each output keeps the flat in-plane index of its maximum, for backward's routing.
        index = ctx.empty((N, C, P, Q), "int32")
        ctx.kernels.max_pool2d_forward(x, self._geometry(), y, index)
        ctx.save(index, tuple(x.shape))
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        if not ctx.needs_input_grad[0]:
            return None
        index, (N, C, H, W) = ctx.saved
        gx = ctx.empty((N, C, H, W))
        ctx.kernels.max_pool2d_backward_input(gy, index, self._geometry(), gx)
        return gx
