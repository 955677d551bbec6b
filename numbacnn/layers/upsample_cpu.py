"""upsample CPU kernels: x, gx (N, C, H, W) and y, gy (N, C, P, Q).

``mode`` is 0 (nearest), 1 (bilinear) or 2 (bilinear with align_corners); ``scales`` holds the
(height, width) factors upsample.py computes, typed like the data. The interface, the same in
upsample_cuda.py: ``upsample_forward(x, mode, scales, y)`` and
``upsample_backward_input(gy, mode, scales, gx)``, each writing all of its output.
"""

import math

from numba import float32

from .._jit import cpu_inline, cpu_kernel, prange

__all__ = ["upsample_forward", "upsample_backward_input"]


@cpu_inline
def _source(a, o, size, out, scale, mode):
    """Output index o's source indices i0 <= i1 <= i0 + 1 along one axis and their weights
    (PyTorch's rule; see upsample.py). i0 never decreases as o grows."""
    T = a.dtype.type
    one, zero = T(1), T(0)
    if out == size:  # copied: no neighbour is read, so an Inf there cannot leak in as 0 * Inf
        return o, o, one, zero
    if mode == 0:
        if out == 2 * size:
            return o >> 1, o >> 1, one, zero
        i = min(int(math.floor(float32(o) * float32(scale))), size - 1)
        return i, i, one, zero
    if mode == 2:
        src = scale * T(o)
    else:
        src = max(scale * (T(o) + T(0.5)) - T(0.5), zero)
    i0 = min(int(math.floor(src)), size - 1)
    lam = min(max(src - T(i0), zero), one)
    return i0, min(i0 + 1, size - 1), one - lam, lam


@cpu_kernel
def upsample_forward(x, mode, scales, y):
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    sh, sw = scales
    for row in prange(N * C * P):
        n, c, p = row // (C * P), (row // P) % C, row % P
        h0, h1, a0, a1 = _source(x, p, H, P, sh, mode)
        for q in range(Q):
            w0, w1, b0, b1 = _source(x, q, W, Q, sw, mode)
            if mode == 0:
                y[n, c, p, q] = x[n, c, h0, w0]
            else:
                # PyTorch's order (columns, then rows), zero weights included: 0 * Inf is NaN there too.
                y[n, c, p, q] = (a0 * (b0 * x[n, c, h0, w0] + b1 * x[n, c, h0, w1])
                                 + a1 * (b0 * x[n, c, h1, w0] + b1 * x[n, c, h1, w1]))


@cpu_kernel
def upsample_backward_input(gy, mode, scales, gx):
    N, C, H, W = gx.shape
    P, Q = gy.shape[2], gy.shape[3]
    sh, sw = scales
    zero = gx.dtype.type(0)
    # Outputs share source pixels: each iteration owns a whole (n, c) plane of gx, so the
    # scatter below never races.
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                gx[n, c, h, w] = zero
        for p in range(P):
            h0, h1, a0, a1 = _source(gx, p, H, P, sh, mode)
            for q in range(Q):
                w0, w1, b0, b1 = _source(gx, q, W, Q, sw, mode)
                g = gy[n, c, p, q]
                if mode == 0:
                    gx[n, c, h0, w0] += g
                else:
                    gx[n, c, h0, w0] += a0 * b0 * g
                    gx[n, c, h0, w1] += a0 * b1 * g
                    gx[n, c, h1, w0] += a1 * b0 * g
                    gx[n, c, h1, w1] += a1 * b1 * g
