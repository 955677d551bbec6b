"""conv2d: 2-D convolution (cross-correlation), as torch.nn.Conv2d."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..layer import Ctx, Layer, Shape, ShapeError
from ._conv_geometry import conv_channels, grouped_input, out_size, padding4, pair

class Conv2d(Layer):
    """Cross-correlation of each group of input channels with that group's filters, plus a bias.

    (C, H, W) -> (K, P, Q) with K = out_channels; weight (K, C/groups, R, S), bias (K,). The
    kernel module plans each input shape (``conv2d_plan``: on the CPU im2col, pixel-major or
    Winograd, see numbacnn.layers.conv2d_plan for choosing one by hand); forward and backward
    are written once for both devices.
    """

    name = "conv2d"
    #: Set on inference's copy of a conv2d whose output only a relu reads (numbacnn._fold):
    #: the kernels apply that relu as they write y. The model's own layer never has it.
    fused_relu = False

    def __init__(self, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True) -> None:
        self.out_channels, self.groups, self.bias = conv_channels(out_channels, groups, bias)
        self.kernel = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        self.pads = padding4(padding, self.kernel, self.stride, self.dilation)  # top, bottom, left, right

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check conv2d`` (and ``numbacnn warmup``)."""
        return [
            {"config": {"out_channels": 4, "kernel_size": 3, "padding": (1, 0, 0, 1)}, "input_shapes": [(2, 3, 5, 5)],
             "bad_shapes": [([(2, 3, 1, 5)], "smaller than the kernel")]},
            {"config": {"out_channels": 4, "kernel_size": (3, 2), "stride": 2, "groups": 2},
             "input_shapes": [(2, 2, 7, 6)], "bad_shapes": [([(2, 3, 7, 6)], "groups=2 does not divide")]},
            {"config": {"out_channels": 3, "kernel_size": 1, "bias": False}, "input_shapes": [(2, 4, 3, 3)]},
            # enough input channels for the CPU's pixel-major path (conv2d_plan.PIXEL_MAJOR_MIN_RUN)
            {"config": {"out_channels": 4, "kernel_size": 3, "padding": (1, 0, 2, 2)}, "input_shapes": [(2, 6, 5, 5)]},
            # and for its Winograd path (conv2d_plan.WINOGRAD_MIN_CHANNELS)
            {"config": {"out_channels": 16, "kernel_size": 3, "padding": 1}, "input_shapes": [(2, 16, 5, 5)]},
        ]

    def output_shape(self, x_shape: Shape) -> Shape:
        return self._output_shape_2d(x_shape)

    def _output_shape_2d(self, x_shape: Shape) -> Shape:
        # What the kernels compute, (C, H, W) -> (K, P, Q): conv1d runs them on height-1 views.
        C, H, W = grouped_input(x_shape, self.groups)
        (R, S), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        pt, pb, pl, pr = self.pads
        P = out_size(H, R, sh, (pt, pb), dh)
        Q = out_size(W, S, sw, (pl, pr), dw)
        if P < 1 or Q < 1:
            raise ShapeError(
                f"input {H}x{W} padded to {H + pt + pb}x{W + pl + pr} is smaller than the kernel's "
                f"extent {dh * (R - 1) + 1}x{dw * (S - 1) + 1} (kernel {R}x{S}, dilation {dh}x{dw}): "
                f"expected a padded input of at least that size, found {H + pt + pb}x{W + pl + pr}")
        return self.out_channels, P, Q

    def init_params(self, input_shapes: list[Shape], rng: np.random.Generator) -> dict[str, np.ndarray]:
        # PyTorch's default: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        K, (R, S) = self.out_channels, self.kernel
        Cg = input_shapes[0][0] // self.groups
        bound = 1.0 / math.sqrt(Cg * R * S)
        params = {"weight": rng.uniform(-bound, bound, (K, Cg, R, S)).astype(np.float32)}
        if self.bias:
            params["bias"] = rng.uniform(-bound, bound, (K,)).astype(np.float32)
        return params

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        K, P, Q = output_shape
        R, S = self.kernel
        Cg = input_shapes[0][0] // self.groups
        return 2 * K * P * Q * Cg * R * S + (K * P * Q if self.bias else 0)

    def _geometry(self) -> tuple[int, ...]:
        return (self.groups, *self.kernel, *self.stride, *self.dilation, self.pads[0], self.pads[2])

    def _plan(self, ctx: Ctx, x_shape: Shape, backward: bool) -> Any:
        # The kernel module's decisions (conv2d_plan: path, chunks, scratch), once per input
        # signature and mode; forward and backward run on them without looking inside.
        return ctx.plan((tuple(x_shape), backward), lambda: ctx.kernels.conv2d_plan(
            ctx.name, tuple(x_shape), (x_shape[0], *self._output_shape_2d(tuple(x_shape[1:]))), self._geometry(),
            backward, ctx.dtype))

    def forward(self, ctx: Ctx, x: Any, residual: Any = None) -> Any:
        plan = self._plan(ctx, x.shape, ctx.backward_expected)
        y = ctx.empty(plan.out)
        scratch = tuple(ctx.empty(shape, dtype) if i < plan.kept else ctx.scratch(shape, dtype)
                        for i, (shape, dtype) in enumerate(plan.forward_scratch)) if plan.forward_scratch else ()
        w, b = self._weight(ctx.params), self._bias(ctx, ctx.params)
        if ctx._scale is not None:  # a folded batch norm's, per output channel (numbacnn._fold)
            kept = ctx.kernels.conv2d_forward(x, w, b, y, plan, scratch, self.fused_relu, residual, ctx._scale)
        elif self.fused_relu or residual is not None:  # inference's conv (+ add) (+ relu): numbacnn._fold
            kept = ctx.kernels.conv2d_forward(x, w, b, y, plan, scratch, self.fused_relu, residual)
        else:
            kept = ctx.kernels.conv2d_forward(x, w, b, y, plan, scratch)
        ctx.save(x, kept)
        last = getattr(plan, "last", None)  # a CPU inference plan's last call, when it was one kernel
        if last:  # call: kept for the replay as ctx._repeatable keeps other layers' (the call is made inside)
            ctx._call = last[-2:]
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        x, kept = ctx.saved
        plan = self._plan(ctx, x.shape, True)
        gx = ctx.empty_like(x) if ctx.needs_input_grad[0] else None
        scratch = tuple(ctx.scratch(shape, dtype) for shape, dtype in plan.backward_scratch)
        ctx.kernels.conv2d_backward(x, self._weight(ctx.params), gy, self._weight(ctx.grads),
                                    self._bias(ctx, ctx.grads), gx, plan, kept, scratch)
        return gx

    def _weight(self, arrays: dict[str, Any]) -> Any:
        # The weight (or its gradient) as the kernels take it, (K, C/groups, R, S); conv1d
        # stores (K, C/groups, S) and gives a view.
        return arrays["weight"]

    def _bias(self, ctx: Ctx, arrays: dict[str, Any]) -> Any:
        # Kernels take an empty array for "no bias", so one compiled version serves both.
        return arrays["bias"] if self.bias else ctx.empty((0,))
