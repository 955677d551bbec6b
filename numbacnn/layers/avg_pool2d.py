"""avg_pool2d: the mean of each window, as torch.nn.AvgPool2d computes it.

Divisor rules (PyTorch's): ``divisor_override`` when given; else with ``count_include_pad``
the window clipped to the padded input (a ceil-mode window running past the right padding
counts only up to it), else the window clipped to the input.
"""

from __future__ import annotations

from typing import Any

from ..layer import Ctx, Layer, Shape
from .max_pool2d import Pair, check_flag, check_padding, pair, pool_output_shape


class AvgPool2d(Layer):
    """Average pooling over windows. (C, H, W) -> (C, P, Q)."""

    name = "avg_pool2d"

    def __init__(self, kernel_size: int | Pair, stride: int | Pair | None = None, padding: int | Pair = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        self.kernel = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel if stride is None else pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.ceil_mode = check_flag(ceil_mode, "ceil_mode")
        self.count_include_pad = check_flag(count_include_pad, "count_include_pad")
        if divisor_override is not None:
            if not isinstance(divisor_override, int) or isinstance(divisor_override, bool):
                raise TypeError(f"divisor_override must be None or an int, found {divisor_override!r}")
            if divisor_override <= 0:
                raise ValueError(f"divisor_override must be positive, found {divisor_override}")
        self.divisor_override = divisor_override
        check_padding(self.padding, self.kernel)

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

    def _plan(self, x_shape: Shape) -> tuple[Shape, tuple[int, ...]]:
        # The output shape and the kernels' geometry: asked once per input signature (ctx.plan).
        return (x_shape[0], *self.output_shape(tuple(x_shape[1:]))), self._geometry()

    def _forward(self, ctx: Ctx, x: Any, kernels: Any) -> Any:
        out, geo = ctx.plan(x.shape, lambda: self._plan(x.shape))
        y = ctx.empty(out)
        kernels.avg_pool2d_forward(x, geo, y)
        ctx.save(x.shape)
        return y

    def _backward(self, ctx: Ctx, gy: Any, kernels: Any) -> Any:
        if not ctx.needs_input_grad[0]:
            return None
        (x_shape,) = ctx.saved
        gx = ctx.empty(x_shape)
        kernels.avg_pool2d_backward_input(gy, ctx.plan(x_shape, lambda: self._plan(x_shape))[1], gx)
        return gx

    def forward_cpu(self, ctx: Ctx, x: Any) -> Any:
        from . import avg_pool2d_cpu

        return self._forward(ctx, x, avg_pool2d_cpu)

    def backward_cpu(self, ctx: Ctx, gy: Any) -> Any:
        from . import avg_pool2d_cpu

        return self._backward(ctx, gy, avg_pool2d_cpu)

    def forward_cuda(self, ctx: Ctx, x: Any) -> Any:
        from . import avg_pool2d_cuda

        return self._forward(ctx, x, avg_pool2d_cuda)

    def backward_cuda(self, ctx: Ctx, gy: Any) -> Any:
        from . import avg_pool2d_cuda

        return self._backward(ctx, gy, avg_pool2d_cuda)
