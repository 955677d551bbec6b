"""adaptive_max_pool2d CPU kernels: x and gx (N, C, H, W), y, gy and index (N, C, P, Q), parallel
over the N*C planes; the bins are _adaptive_rules.py's. They serve
global_max_pool2d too, on (N, C, 1, 1) views of its outputs.

The interface, the same in adaptive_max_pool2d_cuda.py:
``adaptive_max_pool2d_forward(x, y, index)`` writes y and index (int32 flat in-plane positions
of the maxima); ``adaptive_max_pool2d_backward_input(gy, index, gx)`` writes all of gx.
"""

import numpy as np

from .._jit import cpu_inline, cpu_kernel, prange
from ._adaptive_rules import bin_span

__all__ = ["adaptive_max_pool2d_forward", "adaptive_max_pool2d_backward_input"]

_bin = cpu_inline(bin_span)  # inlined at Numba's IR level, as in adaptive_avg_pool2d_cpu


@cpu_kernel
def adaptive_max_pool2d_forward(x, y, index):
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        if P == 1 and Q == 1:
            # One bin, the plane (global_max_pool2d): a flat pass, unsigned offsets (2x faster
            # than the loops below on (64, 512, 7, 7); slower than them on small bins).
            xf = x[n, c].reshape(H * W)
            best, at = x.dtype.type(-np.inf), 0
            for k in range(H * W):
                v = xf[np.uint64(k)]
                if v > best or v != v:
                    best, at = v, k
            y[n, c, 0, 0] = best
            index[n, c, 0, 0] = at
            continue
        for i in range(P):
            h0, h1 = _bin(i, H, P)
            for j in range(Q):
                w0, w1 = _bin(j, W, Q)
                best, at = x.dtype.type(-np.inf), h0 * W + w0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        v = x[n, c, h, w]
                        # PyTorch's rule: the first maximum, the last NaN; -inf alone keeps
                        # the bin's first element.
                        if v > best or v != v:
                            best, at = v, h * W + w
                y[n, c, i, j] = best
                index[n, c, i, j] = at


@cpu_kernel
def adaptive_max_pool2d_backward_input(gy, index, gx):
    N, C, H, W = gx.shape
    P, Q = gy.shape[2], gy.shape[3]
    zero = gx.dtype.type(0)
    # Bins may overlap: each iteration owns a whole (n, c) plane, so the scatter never races.
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                gx[n, c, h, w] = zero
        for i in range(P):
            for j in range(Q):
                at = index[n, c, i, j]
                gx[n, c, at // W, at % W] += gy[n, c, i, j]
