"""Inference's joined 1x1 convolutions: a residual join (an add that numbacnn._fold fused into the
later of its two convs, ``add_pairs``) whose residual is itself the output of a 1x1 conv2d
(directly or through a folded batch norm), read by nothing else: a bottleneck block's conv3 and
its projection shortcut. Both then run at the earlier conv's step, which reads both inputs
(layers/_joined_cpu: each product into cache, one pass for the sum and the add's relu), and the
later conv passes that value on: the earlier conv's output no longer goes out to memory and
back. Both members are ungrouped, unpadded and undilated 1x1 kernels at any stride, and the later
one's input must be ready before the earlier runs (a bottleneck's block input is).

The values are the unfused ones: the same products in the same column blocks, summed in the
same order. That holds where each member on its own would run im2col's product a whole sample
at a time (conv2d_plan's choice for its input: not a forced path, not AVX-512's 1x1 tile,
pixel-major's stacked samples or a sample split over more threads than the batch has samples),
so only there do both run in one kernel; elsewhere, and below JOINED_MIN_BATCH samples, the
members run their own forwards at the step, the later one adding the earlier's output, bit for
bit the unfused fused-add path. CPU only, with the other fusions (``NUMBACNN_FUSE_RELU=0``
turns it off).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._threads import batch_chunks
from .layer import Ctx, one_call, recorded
from .layers.conv2d import Conv2d

__all__ = ["pairs", "pointwise", "JoinedConvs", "JOINED_MIN_BATCH"]

# Fewest samples for which JoinedConvs runs both products in one kernel, a chunk of whole samples
# a thread; below it each member runs its own forward (at batch 1 the unfused paths split a
# sample's channels over the threads). resnet_bottleneck, 2 threads, ms, one process each
# (/work/probe/s18/jmin.py, inf.py): batch 1 one kernel 1.86-1.90 against the members apart
# 1.70-1.73; the parent commit against this rule: batch 2 1.93-1.94 / 1.93-1.95, 4 3.39 / 3.38,
# 32 26.9-28.3 / 26.6-27.6, 256 212-214 / 203-204.
JOINED_MIN_BATCH = 2


def pointwise(layer: Any) -> bool:
    """A conv2d node's layer (exactly, not a subclass) with a 1x1 kernel at any stride and no
    padding, dilation or groups (numbacnn._siblings takes those at stride 1)."""
    g = layer._geometry() if type(layer) is Conv2d else ()
    return len(g) == 9 and g[:3] == (1, 1, 1) and g[5:] == (1, 1, 0, 0) and not any(layer.pads)


def pairs(steps: list[tuple], readers: list[int], keep: set[int], first: int, folds: list[tuple[int, int]],
          adds: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """(earlier conv step, later conv step, add step) of every fused residual join (``adds``:
    (later conv, add, residual slot)) whose residual is a 1x1 conv's output, or its folded
    batch norm's, that nothing else reads, both convs ``pointwise``, and whose later conv's
    input is ready before the earlier conv runs."""
    folded = {k: j for j, k in folds}  # the conv behind a folded batch norm
    out = []
    for j, a, v in adds:
        if v < first or readers[v] != 1 or v in keep:
            continue
        i = folded.get(v - first, v - first)
        if i == j or not (pointwise(steps[i][0]) and pointwise(steps[j][0])):
            continue
        if len(steps[i][1]) == 1 and len(steps[j][1]) == 1 and steps[j][1][0] < first + i:
            out.append((i, j, a))
    return out


class JoinedConvs:
    """The earlier member's inference forward, on its context (its folded scale and bias
    there), with the later member's context as ``ctx._partner`` (numbacnn._fold.Folds links
    them): ``forwards`` are the two members' own inference forwards (the later one's adds a
    residual and applies the add's relu, ``relu``)."""

    def __init__(self, forwards: tuple[Any, Any], relu: bool, partner: int) -> None:
        self.forwards = forwards
        self.layers = tuple(f.__self__ for f in forwards)  # their conv2d layers (bound forwards)
        self.relu = relu
        self.partner = partner  # the later member's step

    def __call__(self, ctx: Ctx, x1: Any, x2: Any) -> Any:
        plan = ctx.plan(("joined", x1.shape, x2.shape), lambda: self._plan(ctx, x1.shape, x2.shape))
        if plan:
            return self._merged(ctx, x1, x2, plan)
        other = ctx._partner
        own = ctx._plans, ctx.params, ctx._scale, ctx.name
        try:
            ctx._plans = own[0].setdefault(("joined", 0), {})
            y1, first = recorded(ctx, self.forwards[0], x1)
            ctx._plans, ctx.params, ctx._scale, ctx.name = (own[0].setdefault(("joined", 1), {}), other.params,
                                                            other._scale, other.name)
            y, second = recorded(ctx, self.forwards[1], x2, y1)
        finally:
            ctx._plans, ctx.params, ctx._scale, ctx.name = own
        ctx._call = one_call((first, second))
        return y

    def _plan(self, ctx: Ctx, shape1: tuple, shape2: tuple) -> tuple | bool:
        # For one kernel: whether each member multiplies x itself (stride 1: its output plane is
        # its input's), the output shape (both members', the add's) and the chunks; False where
        # a member on its own would not run im2col's product a whole sample at a time (its own
        # plan: path, chunks), or below JOINED_MIN_BATCH.
        N, T = shape1[0], batch_chunks(shape1[0])
        if N < JOINED_MIN_BATCH:
            return False
        out = []
        members = zip(self.layers, (shape1, shape2), (ctx.name, ctx._partner.name))
        for conv, shape, name in members:
            K, P, Q = conv._output_shape_2d(tuple(shape[1:]))
            own = ctx.kernels.conv2d_plan(name, tuple(shape), (N, K, P, Q), conv._geometry(), False, ctx.dtype)
            if own.path != "im2col" or own.chunks != T:
                return False
            out.append((tuple(shape[2:]) == (P, Q), (N, K, P, Q)))
        if out[0][1] != out[1][1]:
            raise RuntimeError(f"conv2d nodes joined at inference give {out[0][1]} and {out[1][1]}: an add of two "
                               f"shapes (a bug)")
        return out[0][0], out[1][0], out[0][1], T

    def _merged(self, ctx: Ctx, x1: Any, x2: Any, plan: tuple) -> Any:
        from .layers._joined_cpu import joined_forward

        other, (first, second) = ctx._partner, self.layers
        d1, d2, (N, K, P, Q), T = plan
        y = ctx.empty((N, K, P, Q))
        col1 = ctx.scratch((T, 0 if d1 else x1.shape[1] * P * Q))
        col2 = ctx.scratch((T, 0 if d2 else x2.shape[1] * P * Q))
        scr = ctx.scratch((T, K * P * Q))
        empty = np.empty(0, y.dtype)
        w1, w2 = ctx.params["weight"], other.params["weight"]
        ctx._repeatable(joined_forward, x1, x2, w1.reshape(K, -1), w2.reshape(K, -1), ctx.params.get("bias", empty),
                        other.params.get("bias", empty), _or(ctx._scale, empty), _or(other._scale, empty), y, col1,
                        col2, scr, first._geometry(), second._geometry(), d1, d2, self.relu, T)
        return y


def _or(a: Any, empty: Any) -> Any:
    return empty if a is None else a

