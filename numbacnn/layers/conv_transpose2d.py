"""conv_transpose2d: 2-D transposed convolution ("deconvolution"), as torch.nn.ConvTranspose2d.

It is conv2d's input gradient: each input pixel spreads its channels, through the weights,
over a kernel-sized patch of the output, patches ``stride`` apart, and ``padding`` crops
that many rows and columns from each side of the result. An output size is
(H - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1; output_padding
adds rows and columns at the bottom and right only (no input reaches them: they hold the
bias) and picks among the input sizes a conv2d of the same geometry maps to one size, so
PyTorch allows it only below the stride or the dilation.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..layer import Ctx, Layer, Shape, ShapeError
from ._conv_geometry import Pair, conv_channels, grouped_input, pair


class ConvTranspose2d(Layer):
    """The transpose of a conv2d of the same geometry, plus a bias.

    (C, H, W) -> (K, P, Q) with K = out_channels; weight (C, K/groups, R, S), bias (K,).
    """

    name = "conv_transpose2d"

    def __init__(self, out_channels: int, kernel_size: int | Pair, stride: int | Pair = 1, padding: int | Pair = 0,
                 output_padding: int | Pair = 0, groups: int = 1, bias: bool = True,
                 dilation: int | Pair = 1) -> None:
        self.out_channels, self.groups, self.bias = conv_channels(out_channels, groups, bias)
        self.kernel = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        self.padding = pair(padding, "padding", minimum=0)
        self.output_padding = pair(output_padding, "output_padding", minimum=0)
        for o, s, d in zip(self.output_padding, self.stride, self.dilation):
            if o >= s and o >= d:  # PyTorch's rule
                raise ValueError(f"output_padding must be smaller than either stride or dilation (as in PyTorch): "
                                 f"found output_padding={self.output_padding}, stride={self.stride}, "
                                 f"dilation={self.dilation}")

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check conv_transpose2d`` (and ``numbacnn warmup``)."""
        return [
            {"config": {"out_channels": 3, "kernel_size": 4, "stride": 2, "padding": 1}, "input_shapes": [(2, 4, 3, 3)],
             "bad_shapes": [([(2, 4, 3)], "expected a (C, H, W) input")]},
            {"config": {"out_channels": 4, "kernel_size": (3, 2), "stride": (3, 2), "padding": (1, 0),
                        "output_padding": (2, 1), "groups": 2, "bias": False}, "input_shapes": [(1, 2, 3, 4)],
             "bad_shapes": [([(1, 3, 3, 4)], "groups=2 does not divide")]},
            {"config": {"out_channels": 2, "kernel_size": 3, "dilation": 2, "output_padding": 1, "padding": 3},
             "input_shapes": [(2, 3, 4, 3)], "bad_shapes": [([(2, 3, 1, 3)], "gives an empty output (0x2)")]},
        ]

    def output_shape(self, x_shape: Shape) -> Shape:
        C, H, W = grouped_input(x_shape, self.groups)
        P, Q = (self._out(n, i) for i, n in enumerate((H, W)))
        if P < 1 or Q < 1:
            raise ShapeError(
                f"input {H}x{W} gives an empty output ({P}x{Q}): padding {self.padding[0]}x{self.padding[1]} crops "
                f"more than the {self._out(H, 0) + 2 * self.padding[0]}x{self._out(W, 1) + 2 * self.padding[1]} "
                f"uncropped output; expected a larger input or less padding")
        return self.out_channels, P, Q

    def _out(self, n: int, i: int) -> int:
        return ((n - 1) * self.stride[i] - 2 * self.padding[i] + self.dilation[i] * (self.kernel[i] - 1)
                + self.output_padding[i] + 1)

    def init_params(self, input_shapes: list[Shape], rng: np.random.Generator) -> dict[str, np.ndarray]:
        # PyTorch's default, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), with
        # fan_in read off the weight's second axis as for any weight: K/groups * R * S.
        C, Kg, (R, S) = input_shapes[0][0], self.out_channels // self.groups, self.kernel
        bound = 1.0 / math.sqrt(Kg * R * S)
        params = {"weight": rng.uniform(-bound, bound, (C, Kg, R, S)).astype(np.float32)}
        if self.bias:
            params["bias"] = rng.uniform(-bound, bound, (self.out_channels,)).astype(np.float32)
        return params

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        (C, H, W), (K, P, Q), (R, S) = input_shapes[0], output_shape, self.kernel
        return 2 * C * H * W * (K // self.groups) * R * S + (K * P * Q if self.bias else 0)

    def _plan(self, ctx: Ctx, x_shape: Shape) -> SimpleNamespace:
        # geo: as conv2d's kernels take it, for the conv2d whose input gradient this is.
        geo = (self.groups, *self.kernel, *self.stride, *self.dilation, *self.padding)
        out = self.output_shape(tuple(x_shape[1:]))
        return SimpleNamespace(out=out, geo=geo,
                               scratch=ctx.kernels.conv_transpose2d_scratch(tuple(x_shape), (x_shape[0], *out), geo,
                                                                            ctx.dtype))

    def forward(self, ctx: Ctx, x: Any) -> Any:
        plan = ctx.plan(x.shape, lambda: self._plan(ctx, x.shape))
        y = ctx.empty((x.shape[0], *plan.out))
        wide = plan.scratch.get("wide")  # the CPU's phases as one 3x3 convolution (conv_transpose2d_wide_cpu)
        if wide is not None:
            conv, shape = wide
            wide = (conv, tuple(ctx.scratch(s, d) for s, d in conv.forward_scratch), ctx.scratch(shape))
        ctx.kernels.conv_transpose2d_forward(x, ctx.params["weight"], self._bias(ctx, ctx.params), y,
                                             ctx.scratch(plan.scratch["col"]), ctx.scratch(plan.scratch["phase"]),
                                             plan.geo, wide)
        ctx.save(x)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        (x,) = ctx.saved
        plan = ctx.plan(x.shape, lambda: self._plan(ctx, x.shape))
        gx = ctx.empty_like(x) if ctx.needs_input_grad[0] else None
        ctx.kernels.conv_transpose2d_backward(x, ctx.params["weight"], gy, ctx.grads["weight"],
                                              self._bias(ctx, ctx.grads), gx, ctx.scratch(plan.scratch["col"]),
                                              ctx.scratch(plan.scratch["phase"]), ctx.scratch(plan.scratch["part"]),
                                              plan.geo)
        return gx

    def _bias(self, ctx: Ctx, arrays: dict[str, Any]) -> Any:
        # Kernels take an empty array for "no bias", so one compiled version serves both.
        return arrays["bias"] if self.bias else ctx.empty((0,))
