"""lp_pool2d: power-average pooling, y = (sum of x^p over each window)^(1/p), as
torch.nn.LPPool2d computes it (L2-norm pooling at p = 2).

PyTorch's formula, kept step for step so values and gradients agree, NaN, Inf and zero
windows included: a = avg_pool2d(x^p) (no padding; a ceil-mode window clipped by the input
divides by its clipped size), c = sign(a) * relu(|a|) * (R * S), y = c^(1/p). A window whose
sum is zero passes no gradient back (c^(1/p - 1) is infinite there, and relu's gradient at 0
is 0). p = +inf is max_pool2d(|x|), p = -inf is -max_pool2d(-|x|), as in PyTorch.
"""

from __future__ import annotations

import math
from typing import Any

from ..layer import Ctx, Layer, Shape
from ._conv_geometry import Pair, flag, pair, pool_output_shape


class LPPool2d(Layer):
    """Power-average (Lp-norm) pooling over windows. (C, H, W) -> (C, P, Q)."""

    name = "lp_pool2d"

    def __init__(self, norm_type: float, kernel_size: int | Pair, stride: int | Pair | None = None,
                 ceil_mode: bool = False) -> None:
        if not isinstance(norm_type, (int, float)) or isinstance(norm_type, bool) or math.isnan(norm_type):
            raise TypeError(f"norm_type must be a number (p of the Lp norm), found {norm_type!r}")
        if norm_type == 0:
            raise ValueError("norm_type must not be 0: the output is a power 1/p of the window's sum")
        self.norm_type = norm_type
        self.kernel = pair(kernel_size, "kernel_size")
        self.stride = self.kernel if stride is None else pair(stride, "stride")
        self.ceil_mode = flag(ceil_mode, "ceil_mode")

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check lp_pool2d``."""
        return [
            {"config": {"norm_type": 2, "kernel_size": 2}, "input_shapes": [(2, 3, 6, 5)],
             "bad_shapes": [([(2, 3, 1, 4)], "smaller than the 2x2 window")]},
            {"config": {"norm_type": 1, "kernel_size": (3, 2), "stride": (2, 1), "ceil_mode": True},
             "input_shapes": [(1, 2, 6, 5)]},
            {"config": {"norm_type": float("inf"), "kernel_size": 3, "stride": 2, "ceil_mode": True},
             "input_shapes": [(2, 2, 6, 6)]},
        ]

    def output_shape(self, x_shape: Shape) -> Shape:
        return pool_output_shape(x_shape, self.kernel, self.stride, (0, 0), self.ceil_mode)

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return math.prod(output_shape) * (2 * self.kernel[0] * self.kernel[1] + 3)

    def _geometry(self) -> tuple[int, ...]:
        return (*self.kernel, *self.stride)

    def _powers(self, ctx: Ctx) -> tuple[Any, ...]:
        # p, p - 1, 1/p, 1/p - 1 worked out in float64, then rounded to the model's dtype once,
        # as PyTorch rounds its Python-float exponents (an exponent of 1/p - 1 rounded from a
        # rounded 1/p would differ in its last bit).
        p = float(self.norm_type)
        return tuple(ctx.dtype.type(v) for v in (p, p - 1, 1 / p, 1 / p - 1))

    def forward(self, ctx: Ctx, x: Any) -> Any:
        out = (x.shape[0], *self.output_shape(tuple(x.shape[1:])))
        y = ctx.empty(out)
        # c, the scaled window mean before the root: backward's chain rule starts from it.
        c = ctx.empty(out)
        ctx.kernels.lp_pool2d_forward(x, self._geometry(), self._powers(ctx), y, c)
        ctx.save(x, c)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        if not ctx.needs_input_grad[0]:
            return None
        x, c = ctx.saved
        gx = ctx.empty(x.shape)
        ctx.kernels.lp_pool2d_backward_input(x, c, gy, self._geometry(), self._powers(ctx), gx)
        return gx
