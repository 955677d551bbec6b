"""global_avg_pool2d: the mean of each channel's plane (torch's adaptive_avg_pool2d to 1x1,
flattened)."""

from __future__ import annotations

from typing import Any

from ..layer import Ctx, Layer, Shape, ShapeError


class GlobalAvgPool2d(Layer):
    """Mean over each channel's H x W plane. (C, H, W) -> (C,)."""

    name = "global_avg_pool2d"

    def __init__(self) -> None:
        pass

    def output_shape(self, x_shape: Shape) -> Shape:
        if len(x_shape) != 3:
            raise ShapeError(f"expected an input of shape (C, H, W), found {tuple(x_shape)}")
        return (x_shape[0],)

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        C, H, W = input_shapes[0]
        return C * H * W

    def forward(self, ctx: Ctx, x: Any) -> Any:
        N, C, H, W = x.shape
        y = ctx.empty((N, C))
        ctx.kernels.global_avg_pool2d_forward(x.reshape(N * C, H * W), y.reshape(N * C))
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
