"""adaptive_avg_pool2d CPU kernels: x and gx (N, C, H, W), y and gy (N, C, P, Q), parallel over
the N*C planes; the bins follow from the shapes, by _adaptive_rules.py's rule (shared with
adaptive_max_pool2d and the CUDA kernels).

The interface, the same in adaptive_avg_pool2d_cuda.py: ``adaptive_avg_pool2d_forward(x, y)``
and ``adaptive_avg_pool2d_backward_input(gy, gx)``, each writing all of its output.
"""

from .._jit import cpu_inline, cpu_kernel, prange
from ._adaptive_rules import bin_span

__all__ = ["adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward_input"]

# Inlined at Numba's IR level, as the other helpers of hot CPU loops are.
_bin = cpu_inline(bin_span)


@cpu_kernel
def adaptive_avg_pool2d_forward(x, y):
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for i in range(P):
            h0, h1 = _bin(i, H, P)
            for j in range(Q):
                w0, w1 = _bin(j, W, Q)
                acc = x.dtype.type(0)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        acc += x[n, c, h, w]
                y[n, c, i, j] = acc / x.dtype.type(h1 - h0) / x.dtype.type(w1 - w0)


@cpu_kernel
def adaptive_avg_pool2d_backward_input(gy, gx):
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
            h0, h1 = _bin(i, H, P)
            for j in range(Q):
                w0, w1 = _bin(j, W, Q)
                g = gy[n, c, i, j] / gx.dtype.type(h1 - h0) / gx.dtype.type(w1 - w0)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        gx[n, c, h, w] += g
