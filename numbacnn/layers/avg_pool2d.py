"""avg_pool2d: the mean of each window, as torch.nn.AvgPool2d computes it.

Divisor rules (PyTorch's): ``divisor_override`` when given; else with ``count_include_pad``
the window clipped to the padded input (a ceil-mode window running past the right padding
counts only up to it), else the window clipped to the input.
"""

from __future__ import annotations

from typing import Any

from ..layer import Ctx, Layer, Shape
from ._conv_geometry import Pair, flag, pair, pool_output_shape, pool_padding


class AvgPool2d(Layer):
    """Average pooling over windows. (C, H, W) -> (C, P, Q)."""

    name = "avg_pool2d"

    def __init__(self, kernel_size: int | Pair, stride: int | Pair | None = None, padding: int | Pair = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        self.kernel = pair(kernel_size, "kernel_size")
        self.stride = self.kernel if stride is None else pair(stride, "stride")
        self.padding = pool_padding(pair(padding, "padding", minimum=0), self.kernel)
        self.ceil_mode = flag(ceil_mode, "ceil_mode")
        self.count_include_pad = flag(count_include_pad, "count_include_pad")
        if divisor_override is not None:
            if not isinstance(divisor_override, int) or isinstance(divisor_override, bool):
                raise TypeError(f"divisor_override must be None or an int, found {divisor_override!r}")
            if divisor_override <= 0:
                raise ValueError(f"divisor_override must be positive, found {divisor_override}")
        self.divisor_override = divisor_override

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check avg_pool2d``."""
        return [
            {"config": {"kernel_size": 2}, "input_shapes": [(2, 3, 6, 6)],
             "bad_shapes": [([(2, 3, 1, 1)], "smaller than the 2x2 window")]},
            {"config": {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
             "input_shapes": [(2, 2, 6, 6)]},
            {"config": {"kernel_size": 3, "stride": 1, "padding": 1, "count_include_pad": False},
             "input_shapes": [(1, 2, 5, 4)]},
        ]

    def output_shape(self, x_shape: Shape) -> Shape:
        return pool_output_shape(x_shape, self.kernel, self.stride, self.padding, self.ceil_mode)

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        C, P, Q = output_shape
        return C * P * Q * self.kernel[0] * self.kernel[1]

    def _geometry(self) -> tuple[int, ...]:
        # divisor 0 stands for "no override": kernels take no None.
        return (*self.kernel, *self.stride, *self.padding, int(self.count_include_pad),
                self.divisor_override or 0)

    def forward(self, ctx: Ctx, x: Any) -> Any:
        N = x.shape[0]
        y = ctx.empty((N, *self.output_shape(tuple(x.shape[1:]))))
        ctx.kernels.avg_pool2d_forward(x, self._geometry(), y)
        ctx.save(tuple(x.shape))
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        if not ctx.needs_input_grad[0]:
            return None
        (x_shape,) = ctx.saved
        gx = ctx.empty(x_shape)
        ctx.kernels.avg_pool2d_backward_input(gy, self._geometry(), gx)
        return gx
