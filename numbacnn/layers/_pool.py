"""The window poolings of every rank, written once: max_pool1d/2d/3d and avg_pool1d/2d/3d are a
rank and PyTorch's hyper-parameters over one pair of kernel sets, max_pool3d's and
avg_pool3d's, which take (N, C, D, H, W). A 2-D input runs as (N, C, 1, H, W), a 1-D one as
(N, C, 1, 1, L), with a window of 1 (stride 1, no padding) along the added axes, so every rank
shares the kernels and the geometry of _conv_geometry.

A subclass names itself, its rank (``dims``) and its examples. AdaptivePool2d and
GlobalPool2d hold what the adaptive and the global poolings (max and average) share.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ..layer import Ctx, Layer, Shape, ShapeError
from ._conv_geometry import adaptive_output_shape, adaptive_size, flag, ntuple, pool_output_shape, pool_padding

Size = int | tuple[int, ...]
_INDEX = np.dtype(np.int32)


class WindowPool(Layer):
    """What max and average pooling share: the window, stride and padding of ``dims`` axes."""

    dims: ClassVar[int] = 2

    def _window_args(self, kernel_size: Size, stride: Size | None, padding: Size, ceil_mode: bool) -> None:
        n = self.dims
        self.kernel = ntuple(kernel_size, "kernel_size", n)
        self.stride = self.kernel if stride is None else ntuple(stride, "stride", n)
        self.padding = pool_padding(ntuple(padding, "padding", n, minimum=0), self.kernel)
        self.ceil_mode = flag(ceil_mode, "ceil_mode")

    def _extent(self) -> tuple[int, ...]:
        """The window's span along each axis (dilated, for max pooling)."""
        return self.kernel

    def output_shape(self, x_shape: Shape) -> Shape:
        return pool_output_shape(x_shape, self._extent(), self.stride, self.padding, self.ceil_mode)

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return math.prod(output_shape) * math.prod(self.kernel)

    def _three(self, sizes: tuple[int, ...], fill: int) -> tuple[int, ...]:
        return (fill,) * (3 - self.dims) + sizes

    def _geometry(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _plan(self, ctx: Ctx, x_shape: Shape) -> tuple[Shape, tuple[int, ...], Shape, Shape]:
        # Worked out once per input signature: the output shape, the kernels' geometry, and
        # the (N, C, D, H, W) shapes the kernels see x and y (and the index) as.
        return ctx.plan(x_shape, lambda: self._make_plan(x_shape))

    def _make_plan(self, x_shape: Shape) -> tuple[Shape, tuple[int, ...], Shape, Shape]:
        out = (x_shape[0], *self.output_shape(tuple(x_shape[1:])))
        five = lambda shape: (*shape[:2], *(1,) * (3 - self.dims), *shape[2:])
        return out, self._geometry(), five(x_shape), five(out)


class MaxPoolNd(WindowPool):
    """The largest value of each (dilated) window, as torch.nn.MaxPool1d/2d/3d compute it."""

    kernels = "numbacnn.layers.max_pool3d"

    def __init__(self, kernel_size: Size, stride: Size | None = None, padding: Size = 0, dilation: Size = 1,
                 ceil_mode: bool = False) -> None:
        self._window_args(kernel_size, stride, padding, ceil_mode)
        self.dilation = ntuple(dilation, "dilation", self.dims)

    def _extent(self) -> tuple[int, ...]:
        return tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel))

    def _geometry(self) -> tuple[int, ...]:
        return (*self._three(self.kernel, 1), *self._three(self.stride, 1), *self._three(self.padding, 0),
                *self._three(self.dilation, 1))

    def forward(self, ctx: Ctx, x: Any) -> Any:
        out, geo, x5, y5 = self._plan(ctx, x.shape)
        y = ctx.empty(out)
        # Each output keeps the flat in-volume index of its maximum, for backward's routing;
        # with no backward to come, an empty index asks the kernels for the values alone
        # (googlenet_mini's pools at batch 256, one thread, CPU time: 85 -> 42 ms).
        index = ctx.empty(y5 if ctx.backward_expected else (0,) * 5, _INDEX)
        ctx._repeatable(ctx.kernels.max_pool3d_forward, x.reshape(x5), geo, y.reshape(y5), index)
        ctx.save(index, x.shape)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        if not ctx.needs_input_grad[0]:
            return None
        index, x_shape = ctx.saved
        _, geo, x5, y5 = self._plan(ctx, x_shape)
        gx = ctx.empty(x_shape)
        ctx.kernels.max_pool3d_backward_input(gy.reshape(y5), index, geo, gx.reshape(x5))
        return gx


class AvgPoolNd(WindowPool):
    """The mean of each window, as torch.nn.AvgPool1d/2d/3d compute it.

    Divisor rules (PyTorch's): ``divisor_override`` when given; else with ``count_include_pad``
    the window clipped to the padded input (a ceil-mode window running past the far padding
    counts only up to it), else the window clipped to the input.
    """

    kernels = "numbacnn.layers.avg_pool3d"

    def __init__(self, kernel_size: Size, stride: Size | None = None, padding: Size = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        self._window_args(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = flag(count_include_pad, "count_include_pad")
        if divisor_override is not None:
            if not isinstance(divisor_override, int) or isinstance(divisor_override, bool):
                raise TypeError(f"divisor_override must be None or an int, found {divisor_override!r}")
            if divisor_override <= 0:
                raise ValueError(f"divisor_override must be positive, found {divisor_override}")
        self.divisor_override = divisor_override

    def _geometry(self) -> tuple[int, ...]:
        # divisor 0 stands for "no override": kernels take no None.
        return (*self._three(self.kernel, 1), *self._three(self.stride, 1), *self._three(self.padding, 0),
                int(self.count_include_pad), self.divisor_override or 0)

    def forward(self, ctx: Ctx, x: Any) -> Any:
        out, geo, x5, y5 = self._plan(ctx, x.shape)
        y = ctx.empty(out)
        ctx.kernels.avg_pool3d_forward(x.reshape(x5), geo, y.reshape(y5))
        ctx.save(x.shape)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        if not ctx.needs_input_grad[0]:
            return None
        (x_shape,) = ctx.saved
        _, geo, x5, y5 = self._plan(ctx, x_shape)
        gx = ctx.empty(x_shape)
        ctx.kernels.avg_pool3d_backward_input(gy.reshape(y5), geo, gx.reshape(x5))
        return gx


class AdaptivePool2d(Layer):
    """What adaptive max and average pooling share: the output size (an axis given as None
    keeps the input's) and the bins it implies; a subclass names itself and its kernels."""

    def __init__(self, output_size: int | tuple[int | None, int | None]) -> None:
        self.output_size = adaptive_size(output_size)

    def output_shape(self, x_shape: Shape) -> Shape:
        return adaptive_output_shape(x_shape, self.output_size)

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        C, H, W = input_shapes[0]
        _, P, Q = output_shape
        # Each output reads its bin, about ceil(H / P) x ceil(W / Q) inputs.
        return C * P * Q * (-(-H // P)) * (-(-W // Q))


class GlobalPool2d(Layer):
    """What global max and average pooling share: no hyper-parameters, (C, H, W) -> (C,), and
    one read of every input; a subclass names itself and its kernels."""

    def __init__(self) -> None:
        pass

    def output_shape(self, x_shape: Shape) -> Shape:
        if len(x_shape) != 3:
            raise ShapeError(f"expected an input of shape (C, H, W), found {tuple(x_shape)}")
        return (x_shape[0],)

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        C, H, W = input_shapes[0]
        return C * H * W
