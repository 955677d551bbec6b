"""conv2d: 2-D convolution (cross-correlation), as torch.nn.Conv2d."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..layer import Ctx, Layer, Shape, ShapeError
from ._conv_geometry import conv_channels, grouped_input, out_size, padding4, pair

# Shortest contiguous run (S*C values) for which the CPU's pixel-major path is taken.
PIXEL_MAJOR_MIN_RUN = 16
# Fewest input and output channels for which a stride-1 convolution takes the CPU's Winograd
# path (conv2d_winograd_cpu): with fewer, its tile transforms outweigh the products.
WINOGRAD_MIN_CHANNELS = 16
# Fewest output pixels for which a kernel larger than 3x3 takes the Winograd path.
WINOGRAD_MIN_PIXELS = 256


class Conv2d(Layer):
    """Cross-correlation of each group of input channels with that group's filters, plus a bias.

    (C, H, W) -> (K, P, Q) with K = out_channels; weight (K, C/groups, R, S), bias (K,).
    """

    name = "conv2d"

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
            # enough input channels for the CPU's pixel-major path (PIXEL_MAJOR_MIN_RUN)
            {"config": {"out_channels": 4, "kernel_size": 3, "padding": (1, 0, 2, 2)}, "input_shapes": [(2, 6, 5, 5)]},
            # and for its Winograd path (WINOGRAD_MIN_CHANNELS)
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

    def _direct(self) -> bool:
        # A 1x1, stride-1, unpadded convolution is a plain product with x: no im2col.
        return self.kernel == (1, 1) and self.stride == (1, 1) and self.pads == (0, 0, 0, 0)

    # CPU: per-sample im2col + BLAS, one chunk of the batch per thread ---------------------
    def _pixel_major(self, C: int) -> bool:
        # The pixel-major path (conv2d_cpu) copies runs of S*C values (C when dilated); below
        # PIXEL_MAJOR_MIN_RUN they are too short to beat the channel-major im2col. It copies
        # the whole input to HWC first, which a strided convolution only partly reads: there
        # the channel-major path was as fast or faster (1x1 stride 2, 256->512 at 16x16,
        # batch 32: forward+backward 11.3 ms against 16.8 ms).
        run = C * (self.kernel[1] if self.dilation[1] == 1 else 1)
        return (self.groups == 1 and not self._direct() and self.stride == (1, 1)
                and run >= PIXEL_MAJOR_MIN_RUN)

    def _winograd(self, x_shape: Shape) -> bool:
        # Stride 1, ungrouped, undilated, 2x2 to 6x6 kernels (cut into 3x3 sub-kernels past
        # 3x3) and enough channels; a larger kernel's four sub-kernels only on outputs of 256
        # pixels or more: below that the 4 x 36 small products per sample cost more than the
        # im2col product they replace.
        C, H, W = x_shape[-3:]
        (R, S), (pt, pb, pl, pr) = self.kernel, self.pads
        return (self.groups == 1 and self.stride == (1, 1) and self.dilation == (1, 1) and 2 <= R <= 6
                and 2 <= S <= 6 and min(C, self.out_channels) >= WINOGRAD_MIN_CHANNELS
                and (max(R, S) <= 3 or (H + pt + pb - R + 1) * (W + pl + pr - S + 1) >= WINOGRAD_MIN_PIXELS))

    def _cpu_plan(self, x_shape: Shape, keep: bool) -> SimpleNamespace:
        """The CPU path's decisions for an (N, C, H, W) input, made once per input signature
        (``ctx.plan``): output shape, chunks, path, geometry. ``keep``: a backward is to come,
        so every sample's padded HWC image is kept for it (else one per chunk is scratch)."""
        from .._threads import batch_chunks

        N, C = x_shape[:2]
        T = batch_chunks(N)
        plan = SimpleNamespace(out=self._output_shape_2d(x_shape[1:]), T=T, geo=self._geometry(),
                               winograd=self._winograd(x_shape), pixel_major=self._pixel_major(C))
        if plan.winograd:
            from .conv2d_winograd_cpu import WeightCache, scratch

            K, P, Q = plan.out
            plan.forward_scratch = scratch(N if keep else T, T, C, K, P, Q, self.kernel)
            plan.backward_scratch = scratch(N, T, C, K, P, Q, self.kernel)
            # Without a backward, the transformed weights are kept from call to call (they were
            # 85% of an imported ResNet-18's batch-1 inference): the plan owns them.
            plan.weights = None if keep else WeightCache()
        return plan

    def _hwc_scratch(self, ctx: Ctx, x_shape: Shape, images: int) -> tuple[Any, Any, int]:
        # Weights as (K, R, S, C), and ``images`` zero-padded HWC images.
        C, H, W = x_shape[1:]
        (R, S), (pt, pb, pl, pr) = self.kernel, self.pads
        wp = ctx.empty((self.out_channels, R, S, C))
        return wp, ctx.empty((images, H + pt + pb, W + pl + pr, C)), C * R * S

    def forward_cpu(self, ctx: Ctx, x: Any) -> Any:
        from .conv2d_cpu import conv2d_forward, conv2d_forward_hwc, pixel_block

        N, C = x.shape[:2]
        plan = ctx.plan((x.shape, ctx.backward_expected), lambda: self._cpu_plan(x.shape, ctx.backward_expected))
        K, P, Q = plan.out
        R, S = self.kernel
        T = plan.T
        y = ctx.empty((N, K, P, Q))
        b = self._bias(ctx, ctx.params)
        if plan.winograd:
            from .conv2d_winograd_cpu import conv2d_forward_wino

            sh, tr = plan.forward_scratch
            U = None if plan.weights is not None else ctx.empty(sh["U"])
            xp, V, M, pix, lanes = (ctx.empty(sh[k]) for k in ("xp", "V", "M", "pix", "R"))
            if conv2d_forward_wino(x, self._weight(ctx.params), b, y, U, xp, V, M, pix, lanes,
                                   ctx.empty(sh["nonfinite"], "int64"), (self.pads[0], self.pads[2]), tr,
                                   plan.weights):
                ctx.save(x, "winograd", U, xp)
                return y
            # NaN or Inf in x or w: the transforms spread them over whole tiles; recompute
            # below, so they land where PyTorch's do (conv2d_winograd_cpu).
        if plan.pixel_major:
            # With a backward to come, every sample's HWC image is kept for it (as big as x);
            # otherwise one per chunk of the batch is scratch.
            wp, xp, J = self._hwc_scratch(ctx, x.shape, N if ctx.backward_expected else T)
            B = pixel_block(P * Q, J)
            conv2d_forward_hwc(x, self._weight(ctx.params), b, y, wp, xp, ctx.empty((T, B, J)), ctx.empty((T, B, K)),
                               plan.geo)
            ctx.save(x, "pixel-major", wp, xp)
        else:
            col = None if self._direct() else ctx.empty((T, C * R * S, P * Q))  # a column matrix per chunk
            conv2d_forward(x, self._weight(ctx.params), b, y, col, plan.geo, T)
            ctx.save(x, "channel-major")
        return y

    def backward_cpu(self, ctx: Ctx, gy: Any) -> Any:
        from .conv2d_cpu import conv2d_backward, conv2d_backward_hwc, pixel_block

        x, path, *kept = ctx.saved
        N, C = x.shape[:2]
        plan = ctx.plan((x.shape, True), lambda: self._cpu_plan(x.shape, True))
        w, (R, S), T = self._weight(ctx.params), self.kernel, plan.T
        K, P, Q = gy.shape[1:]
        L = P * Q
        gx = ctx.empty_like(x) if ctx.needs_input_grad[0] else None
        gw, gb = self._weight(ctx.grads), self._bias(ctx, ctx.grads)
        if path == "winograd":
            from .conv2d_winograd_cpu import conv2d_backward_wino

            U, xp = kept
            sh, tr = plan.backward_scratch
            V, M, pix, lanes, part = (ctx.empty(sh[k]) for k in ("V", "M", "pix", "R", "part"))
            gxp = None if gx is None else ctx.empty((T, *xp.shape[1:]))
            if conv2d_backward_wino(x, gy, gw, gb, gx, U, xp, gxp, V, M, pix, lanes, part,
                                    ctx.empty(sh["nonfinite"], "int64"), (self.pads[0], self.pads[2]), tr):
                return gx
            path = "channel-major"  # NaN or Inf in gy (as in the forward); this path needs only x
        part = ctx.empty((T, K, w.size // K))  # per-chunk partial weight gradients
        if path == "pixel-major":
            wp, xp = kept
            J = wp.size // K
            gxp = None if gx is None else ctx.empty((T, *xp.shape[1:]))
            colt = ctx.empty((T, pixel_block(L, J), J))
            conv2d_backward_hwc(x, gy, gw, gb, gx, wp, xp, gxp, colt, part, plan.geo)
        else:
            col = None if self._direct() else ctx.empty((T, C * R * S, L))
            conv2d_backward(x, w, gy, gw, gb, gx, col, part, plan.geo)
        return gx

    # CUDA: implicit GEMM -------------------------------------------------------------------
    def forward_cuda(self, ctx: Ctx, x: Any) -> Any:
        from .conv2d_cuda import conv2d_forward

        N = x.shape[0]
        K, P, Q = self._output_shape_2d(x.shape[1:])
        y = ctx.empty((N, K, P, Q))
        conv2d_forward(x, self._weight(ctx.params), self._bias(ctx, ctx.params), y, self._geometry())
        ctx.save(x)
        return y

    def backward_cuda(self, ctx: Ctx, gy: Any) -> Any:
        from .conv2d_cuda import (
            conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight, weight_splits,
        )

        (x,) = ctx.saved
        gw = self._weight(ctx.grads)
        K = gw.shape[0]
        part = ctx.empty((weight_splits(gy.shape, gw.shape, self.groups), K, gw.size // K))
        conv2d_backward_weight(x, gy, gw, part, self._geometry())
        if self.bias:
            conv2d_backward_bias(gy, ctx.grads["bias"])
        if not ctx.needs_input_grad[0]:
            return None
        gx = ctx.empty_like(x)
        conv2d_backward_input(self._weight(ctx.params), gy, gx, self._geometry())
        return gx

    def _weight(self, arrays: dict[str, Any]) -> Any:
        # The weight (or its gradient) as the kernels take it, (K, C/groups, R, S); conv1d
        # stores (K, C/groups, S) and gives a view.
        return arrays["weight"]

    def _bias(self, ctx: Ctx, arrays: dict[str, Any]) -> Any:
        # Kernels take an empty array for "no bias", so one compiled version serves both.
        return arrays["bias"] if self.bias else ctx.empty((0,))
