"""softmax and log_softmax CPU kernels: x, y, gy, gx as (outer, K, inner), K the softmax axis;
scratch per position (outer, inner).

With inner 1 ((N, K) logits, a softmax over the last axis) each line is a contiguous row: one
task per row, its sums vectorised (they opt into reassociation only). Otherwise work is split
into runs of up to BLOCK positions along the contiguous inner axis, so a single image (outer
1) still spreads over the threads, and every inner loop walks 1-D slices in order: LLVM
vectorises those, where the same loops indexing the 3-D arrays ran 4-8x slower. Each task
writes only its own lines. The max propagates NaN (a line holding NaN is NaN, as in PyTorch).

The interface, the same in softmax_cuda.py: ``softmax_forward(x, stats, y)`` (stats
(2, outer, inner) receives each position's max and 1/sum(exp(x - max))),
``softmax_backward(y, gy, sums, gx)`` (sums receives sum(gy * y)),
``log_softmax_forward(x, stats, y)`` (stats: the max and max + log(sum)) and
``log_softmax_backward(y, gy, sums, gx)`` (sums: sum(gy)). y may be x (in place).
"""

import math

from .._jit import REASSOC, cpu_inline, cpu_kernel, prange

__all__ = ["softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward"]

BLOCK = 256


@cpu_inline
def _runs(outer, inner):
    return outer * ((inner + BLOCK - 1) // BLOCK)


@cpu_inline
def _run(t, inner):
    """Run t's (outer index, first and past-last inner position)."""
    blocks = (inner + BLOCK - 1) // BLOCK
    o = t // blocks
    i0 = (t - o * blocks) * BLOCK
    return o, i0, min(i0 + BLOCK, inner)


@cpu_inline
def _max_of(row):
    m = row[0]
    for k in range(1, row.size):
        v = row[k]
        m = v if (v > m) | (v != v) else m
    return m


@cpu_inline
def _max_into(x, o, i0, i1, m):
    x0 = x[o, 0, i0:i1]
    for i in range(m.size):
        m[i] = x0[i]
    for k in range(1, x.shape[1]):
        xk = x[o, k, i0:i1]
        for i in range(m.size):
            v, mi = xk[i], m[i]
            m[i] = v if (v > mi) | (v != v) else mi


@cpu_inline
def _fill(a, value):
    for i in range(a.size):
        a[i] = value


@cpu_kernel(fastmath=REASSOC)
def softmax_forward(x, stats, y):
    outer, K, inner = x.shape
    zero, one = x.dtype.type(0), x.dtype.type(1)
    if inner == 1:
        rows, out = x.reshape(outer, K), y.reshape(outer, K)
        for o in prange(outer):
            xo, yo = rows[o], out[o]
            m = _max_of(xo)
            for k in range(K):
                yo[k] = math.exp(xo[k] - m)
            s = zero
            for k in range(K):  # apart, reading y alone: summed the same way in place (y is x) or not
                s += yo[k]
            r = one / s
            for k in range(K):
                yo[k] *= r
            stats[0, o, 0], stats[1, o, 0] = m, r
    else:
        for t in prange(_runs(outer, inner)):
            o, i0, i1 = _run(t, inner)
            m, s = stats[0, o, i0:i1], stats[1, o, i0:i1]
            _max_into(x, o, i0, i1, m)
            _fill(s, zero)
            for k in range(K):
                xk, yk = x[o, k, i0:i1], y[o, k, i0:i1]
                for i in range(s.size):
                    e = math.exp(xk[i] - m[i])
                    yk[i] = e
                    s[i] += e
            for i in range(s.size):
                s[i] = one / s[i]
            for k in range(K):
                yk = y[o, k, i0:i1]
                for i in range(s.size):
                    yk[i] *= s[i]


@cpu_kernel(fastmath=REASSOC)
def softmax_backward(y, gy, sums, gx):
    outer, K, inner = y.shape
    zero = y.dtype.type(0)
    if inner == 1:
        ys, gys, gxs = y.reshape(outer, K), gy.reshape(outer, K), gx.reshape(outer, K)
        for o in prange(outer):
            yo, go, xo = ys[o], gys[o], gxs[o]
            d = zero
            for k in range(K):
                d += go[k] * yo[k]
            for k in range(K):
                xo[k] = yo[k] * (go[k] - d)
            sums[o, 0] = d
    else:
        for t in prange(_runs(outer, inner)):
            o, i0, i1 = _run(t, inner)
            d = sums[o, i0:i1]
            _fill(d, zero)
            for k in range(K):
                yk, gk = y[o, k, i0:i1], gy[o, k, i0:i1]
                for i in range(d.size):
                    d[i] += gk[i] * yk[i]
            for k in range(K):
                yk, gk, xk = y[o, k, i0:i1], gy[o, k, i0:i1], gx[o, k, i0:i1]
                for i in range(d.size):
                    xk[i] = yk[i] * (gk[i] - d[i])


@cpu_kernel(fastmath=REASSOC)
def log_softmax_forward(x, stats, y):
    outer, K, inner = x.shape
    zero = x.dtype.type(0)
    if inner == 1:
        rows, out = x.reshape(outer, K), y.reshape(outer, K)
        for o in prange(outer):
            xo, yo = rows[o], out[o]
            m = _max_of(xo)
            s = zero
            for k in range(K):
                s += math.exp(xo[k] - m)
            lse = m + math.log(s)
            for k in range(K):
                yo[k] = xo[k] - lse
            stats[0, o, 0], stats[1, o, 0] = m, lse
    else:
        for t in prange(_runs(outer, inner)):
            o, i0, i1 = _run(t, inner)
            m, s = stats[0, o, i0:i1], stats[1, o, i0:i1]
            _max_into(x, o, i0, i1, m)
            _fill(s, zero)
            for k in range(K):
                xk = x[o, k, i0:i1]
                for i in range(s.size):
                    s[i] += math.exp(xk[i] - m[i])
            for i in range(s.size):
                s[i] = m[i] + math.log(s[i])
            for k in range(K):
                xk, yk = x[o, k, i0:i1], y[o, k, i0:i1]
                for i in range(s.size):
                    yk[i] = xk[i] - s[i]


@cpu_kernel(fastmath=REASSOC)
def log_softmax_backward(y, gy, sums, gx):
    outer, K, inner = y.shape
    zero = y.dtype.type(0)
    if inner == 1:
        ys, gys, gxs = y.reshape(outer, K), gy.reshape(outer, K), gx.reshape(outer, K)
        for o in prange(outer):
            yo, go, xo = ys[o], gys[o], gxs[o]
            s = zero
            for k in range(K):
                s += go[k]
            for k in range(K):
                xo[k] = go[k] - math.exp(yo[k]) * s
            sums[o, 0] = s
    else:
        for t in prange(_runs(outer, inner)):
            o, i0, i1 = _run(t, inner)
            s = sums[o, i0:i1]
            _fill(s, zero)
            for k in range(K):
                gk = gy[o, k, i0:i1]
                for i in range(s.size):
                    s[i] += gk[i]
            for k in range(K):
                yk, gk, xk = y[o, k, i0:i1], gy[o, k, i0:i1], gx[o, k, i0:i1]
                for i in range(s.size):
                    xk[i] = gk[i] - math.exp(yk[i]) * s[i]
