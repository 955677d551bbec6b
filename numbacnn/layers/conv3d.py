"""conv3d: 3-D convolution (cross-correlation) over volumes and clips, as torch.nn.Conv3d."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..layer import Ctx, Layer, Shape, ShapeError
from ._conv_geometry import _x, conv_channels, grouped_input, ntuple, out_size, padding_pairs


class Conv3d(Layer):
    """Cross-correlation of each group of input channels with that group's filters, plus a bias.

    (C, D, H, W) -> (K, D', P, Q) with K = out_channels; weight (K, C/groups, T, R, S), bias (K,).
    """

    name = "conv3d"

    def __init__(self, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True) -> None:
        self.out_channels, self.groups, self.bias = conv_channels(out_channels, groups, bias)
        self.kernel = ntuple(kernel_size, "kernel_size", 3)
        self.stride = ntuple(stride, "stride", 3)
        self.dilation = ntuple(dilation, "dilation", 3)
        self.pads = padding_pairs(padding, self.kernel, self.stride, self.dilation)  # (begin, end) per axis

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check conv3d`` (and ``numbacnn warmup``)."""
        return [
            {"config": {"out_channels": 3, "kernel_size": 2, "padding": (1, 0, 0, 1, 0, 0)},
             "input_shapes": [(2, 2, 3, 4, 3)],
             "bad_shapes": [([(2, 2, 3, 4, 1)], "smaller than the kernel"),
                            ([(2, 2, 4, 4)], "expected a (C, D, H, W) input")]},
            {"config": {"out_channels": 4, "kernel_size": (1, 2, 3), "stride": 2, "dilation": (1, 2, 1), "groups": 2,
                        "bias": False},
             "input_shapes": [(2, 2, 3, 5, 6)], "bad_shapes": [([(2, 3, 3, 5, 6)], "groups=2 does not divide")]},
        ]

    def output_shape(self, x_shape: Shape) -> Shape:
        C, *sizes = grouped_input(x_shape, self.groups, dims=3)
        pads = tuple(zip(self.pads[0::2], self.pads[1::2]))
        out = tuple(out_size(m, k, s, p, d) for m, k, s, p, d in zip(sizes, self.kernel, self.stride, pads,
                                                                      self.dilation))
        if min(out) < 1:
            padded = _x(tuple(m + b + e for m, (b, e) in zip(sizes, pads)))
            extent = _x(tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation)))
            raise ShapeError(f"input {_x(tuple(sizes))} padded to {padded} is smaller than the kernel's extent "
                             f"{extent} (kernel {_x(self.kernel)}, dilation {_x(self.dilation)}): expected a "
                             f"padded input of at least that size, found {padded}")
        return (self.out_channels, *out)

    def init_params(self, input_shapes: list[Shape], rng: np.random.Generator) -> dict[str, np.ndarray]:
        # PyTorch's default: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        Cg = input_shapes[0][0] // self.groups
        bound = 1.0 / math.sqrt(Cg * math.prod(self.kernel))
        params = {"weight": rng.uniform(-bound, bound, (self.out_channels, Cg, *self.kernel)).astype(np.float32)}
        if self.bias:
            params["bias"] = rng.uniform(-bound, bound, (self.out_channels,)).astype(np.float32)
        return params

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        outputs = math.prod(output_shape)
        Cg = input_shapes[0][0] // self.groups
        return 2 * outputs * Cg * math.prod(self.kernel) + (outputs if self.bias else 0)

    def _geometry(self) -> tuple[int, ...]:
        # The kernels need only the leading padding: the output sizes imply the trailing one.
        return (self.groups, *self.kernel, *self.stride, *self.dilation, *self.pads[0::2])

    def _plan(self, ctx: Ctx, x_shape: Shape) -> SimpleNamespace:
        # Output shape and scratch shapes (the CPU's column matrices and weight-gradient
        # partials, one per chunk of the batch), worked out once per input signature.
        from .._threads import batch_chunks

        def make() -> SimpleNamespace:
            out = (x_shape[0], *self.output_shape(tuple(x_shape[1:])))
            w_shape = (self.out_channels, x_shape[1] // self.groups, *self.kernel)
            col, part = ctx.kernels.conv3d_scratch(tuple(x_shape), w_shape, out, batch_chunks(x_shape[0]))
            return SimpleNamespace(out=out, col=col, part=part)

        return ctx.plan(tuple(x_shape), make)

    def forward(self, ctx: Ctx, x: Any) -> Any:
        plan = self._plan(ctx, x.shape)
        y = ctx.empty(plan.out)
        ctx.kernels.conv3d_forward(x, ctx.params["weight"], self._bias(ctx, ctx.params), y, ctx.scratch(plan.col),
                                   self._geometry())
        ctx.save(x)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        (x,) = ctx.saved
        plan = self._plan(ctx, x.shape)
        gx = ctx.empty_like(x) if ctx.needs_input_grad[0] else None
        ctx.kernels.conv3d_backward(x, ctx.params["weight"], gy, ctx.grads["weight"], self._bias(ctx, ctx.grads), gx,
                                    ctx.scratch(plan.col), ctx.scratch(plan.part), self._geometry())
        return gx

    def _bias(self, ctx: Ctx, arrays: dict[str, Any]) -> Any:
        # Kernels take an empty array for "no bias", so one compiled version serves both.
        return arrays["bias"] if self.bias else ctx.empty((0,))
