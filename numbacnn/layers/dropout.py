"""dropout: inverted dropout, as torch.nn.Dropout.

In training each element is zeroed with probability p and the survivors are scaled by
1/(1-p); in evaluation the input passes through unchanged. The mask is a counter-based hash
of (seed, element index), with a fresh seed drawn from ``ctx.rng`` at every training forward:
the CPU and CUDA kernels compute the same mask from the same seed, backward recomputes it
instead of storing it, and nothing crosses between host and device.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..layer import Ctx, Layer, Shape


class Dropout(Layer):
    """Inverted dropout with drop probability p (identity in evaluation). Any shape -> same shape."""

    name = "dropout"

    def __init__(self, p: float = 0.5) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"p must be a number, found {p!r}")
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability p must be in [0, 1), found {p}")
        self.p = float(p)

    def output_shape(self, x_shape: Shape) -> Shape:
        return x_shape

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return math.prod(output_shape)

    def replayable(self, training: bool) -> bool:
        return not training  # a new seed from ctx.rng at every training call

    def _mask_args(self, ctx: Ctx, dtype: np.dtype) -> tuple[Any, ...]:
        s0, s1 = ctx.rng.integers(0, 2**32, size=2, dtype=np.uint64)
        # An element is kept when its 32-bit hash falls below this threshold: an integer test
        # that the CPU and the GPU evaluate identically.
        threshold = np.uint64(round((1.0 - self.p) * 2**32))
        return s0, s1, threshold, dtype.type(1.0 / (1.0 - self.p))

    def forward(self, ctx: Ctx, x: Any) -> Any:
        if not ctx.training:
            ctx.save()
            return x
        args = self._mask_args(ctx, x.dtype)
        y = ctx.empty_like(x)
        ctx.kernels.dropout_forward(x.reshape(x.size), *args, y.reshape(y.size))
        ctx.save(*args)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        if not ctx.saved:  # the forward ran in evaluation: the identity
            return gy
        gx = ctx.empty_like(gy)
        ctx.kernels.dropout_backward_input(gy.reshape(gy.size), *ctx.saved, gx.reshape(gx.size))
        return gx
