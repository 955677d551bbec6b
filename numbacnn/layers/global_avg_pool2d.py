"""global_avg_pool2d: the mean of each channel's plane (torch's adaptive_avg_pool2d to 1x1,
flattened)."""

from __future__ import annotations

from typing import Any

from ..layer import Ctx
from ._pool import GlobalPool2d


class GlobalAvgPool2d(GlobalPool2d):
    """Mean over each channel's H x W plane. (C, H, W) -> (C,)."""

    name = "global_avg_pool2d"

    def forward(self, ctx: Ctx, x: Any) -> Any:
        N, C, H, W = x.shape
        y = ctx.empty((N, C))
        ctx._repeatable(ctx.kernels.global_avg_pool2d_forward, x.reshape(N * C, H * W), y.reshape(N * C))
        ctx.save(tuple(x.shape))
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        if not ctx.needs_input_grad[0]:
            return None
        (x_shape,) = ctx.saved
        N, C, H, W = x_shape
        gx = ctx.empty(x_shape)
        ctx.kernels.global_avg_pool2d_backward_input(gy.reshape(N * C), gx.reshape(N * C, H * W))
        return gx
