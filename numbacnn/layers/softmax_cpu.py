"""softmax and log_softmax CPU kernels: x, y, gy, gx as (outer, K, inner), K the softmax axis;
scratch per position (outer, inner).

Work is split into runs of up to BLOCK positions along the contiguous inner axis (one run per
row when inner is 1, as for (N, K) logits), so every inner loop walks memory in order and
vectorises, and a single image (outer 1) still spreads over the threads; each run writes only
its own positions. The max propagates NaN (a line holding NaN is NaN, as in PyTorch).

The interface, the same in softmax_cuda.py: ``softmax_forward(x, stats, y)`` (stats
(2, outer, inner) receives each position's max and 1/sum(exp(x - max))),
``softmax_backward(y, gy, sums, gx)`` (sums receives sum(gy * y)),
``log_softmax_forward(x, stats, y)`` (stats: the max and max + log(sum)) and
``log_softmax_backward(y, gy, sums, gx)`` (sums: sum(gy)). y may be x (in place).
"""

import math

from .._jit import cpu_inline, cpu_kernel, prange

__all__ = ["softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward"]

BLOCK = 64


@cpu_inline
def _run(t, inner):
    """Run t's (outer index, first and past-last inner position)."""
    blocks = (inner + BLOCK - 1) // BLOCK
    o = t // blocks
    i0 = (t - o * blocks) * BLOCK
    return o, i0, min(i0 + BLOCK, inner)


@cpu_inline
def _max(x, o, i0, i1, m):
    for i in range(i0, i1):
        m[i] = x[o, 0, i]
    for k in range(1, x.shape[1]):
        for i in range(i0, i1):
            v, mi = x[o, k, i], m[i]
            m[i] = v if (v > mi) | (v != v) else mi


@cpu_kernel
def softmax_forward(x, stats, y):
    outer, K, inner = x.shape
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for t in prange(outer * ((inner + BLOCK - 1) // BLOCK)):
        o, i0, i1 = _run(t, inner)
        m, s = stats[0, o], stats[1, o]
        _max(x, o, i0, i1, m)
        for i in range(i0, i1):
            s[i] = zero
        for k in range(K):
            for i in range(i0, i1):
                e = math.exp(x[o, k, i] - m[i])
                y[o, k, i] = e
                s[i] += e
        for i in range(i0, i1):
            s[i] = one / s[i]
        for k in range(K):
            for i in range(i0, i1):
                y[o, k, i] *= s[i]


@cpu_kernel
def softmax_backward(y, gy, sums, gx):
    outer, K, inner = y.shape
    zero = y.dtype.type(0)
    for t in prange(outer * ((inner + BLOCK - 1) // BLOCK)):
        o, i0, i1 = _run(t, inner)
        d = sums[o]
        for i in range(i0, i1):
            d[i] = zero
        for k in range(K):
            for i in range(i0, i1):
                d[i] += gy[o, k, i] * y[o, k, i]
        for k in range(K):
            for i in range(i0, i1):
                gx[o, k, i] = y[o, k, i] * (gy[o, k, i] - d[i])


@cpu_kernel
def log_softmax_forward(x, stats, y):
    outer, K, inner = x.shape
    zero = x.dtype.type(0)
    for t in prange(outer * ((inner + BLOCK - 1) // BLOCK)):
        o, i0, i1 = _run(t, inner)
        m, s = stats[0, o], stats[1, o]
        _max(x, o, i0, i1, m)
        for i in range(i0, i1):
            s[i] = zero
        for k in range(K):
            for i in range(i0, i1):
                s[i] += math.exp(x[o, k, i] - m[i])
        for i in range(i0, i1):
            s[i] = m[i] + math.log(s[i])
        for k in range(K):
            for i in range(i0, i1):
                y[o, k, i] = x[o, k, i] - s[i]


@cpu_kernel
def log_softmax_backward(y, gy, sums, gx):
    outer, K, inner = y.shape
    zero = y.dtype.type(0)
    for t in prange(outer * ((inner + BLOCK - 1) // BLOCK)):
        o, i0, i1 = _run(t, inner)
        s = sums[o]
        for i in range(i0, i1):
            s[i] = zero
        for k in range(K):
            for i in range(i0, i1):
                s[i] += gy[o, k, i]
        for k in range(K):
            for i in range(i0, i1):
                gx[o, k, i] = gy[o, k, i] - math.exp(y[o, k, i]) * s[i]
