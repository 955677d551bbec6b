"""adaptive_avg_pool2d CUDA kernels: x and gx (N, C, H, W), y and gy (N, C, P, Q), one output
element per thread; the bins are _adaptive_rules.py's (bin_span and its inverse bins_over,
shared with adaptive_max_pool2d and the CPU kernels). The interface is adaptive_avg_pool2d_cpu.py's.
Backward needs no atomics: each input element's thread gathers from the bins that hold it, in
the CPU kernel's scatter order.
"""

from numba import cuda

from .._jit import cuda_kernel
from ._adaptive_rules import bin_span as _bin, bins_over as _bins_over

__all__ = ["adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward_input"]

THREADS = 256


def _blocks(n):
    return (n + THREADS - 1) // THREADS


@cuda_kernel
def _adaptive_avg_pool2d_forward_kernel(x, y):
    t = cuda.grid(1)
    if t >= y.size:
        return
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    P, Q = y.shape[2], y.shape[3]
    j = t % Q
    i = (t // Q) % P
    c = (t // (Q * P)) % C
    n = t // (Q * P * C)
    h0, h1 = _bin(i, H, P)
    w0, w1 = _bin(j, W, Q)
    acc = x.dtype.type(0)
    for h in range(h0, h1):
        for w in range(w0, w1):
            acc += x[n, c, h, w]
    y[n, c, i, j] = acc / x.dtype.type(h1 - h0) / x.dtype.type(w1 - w0)


def adaptive_avg_pool2d_forward(x, y):
    _adaptive_avg_pool2d_forward_kernel[_blocks(y.size), THREADS](x, y)


@cuda_kernel
def _adaptive_avg_pool2d_backward_input_kernel(gy, gx):
    t = cuda.grid(1)
    if t >= gx.size:
        return
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    P, Q = gy.shape[2], gy.shape[3]
    w = t % W
    h = (t // W) % H
    c = (t // (W * H)) % C
    n = t // (W * H * C)
    i0, i1 = _bins_over(h, H, P)
    j0, j1 = _bins_over(w, W, Q)
    acc = gx.dtype.type(0)
    for i in range(i0, i1 + 1):
        h0, h1 = _bin(i, H, P)
        for j in range(j0, j1 + 1):
            w0, w1 = _bin(j, W, Q)
            acc += gy[n, c, i, j] / gx.dtype.type(h1 - h0) / gx.dtype.type(w1 - w0)
    gx[n, c, h, w] = acc


def adaptive_avg_pool2d_backward_input(gy, gx):
    _adaptive_avg_pool2d_backward_input_kernel[_blocks(gx.size), THREADS](gy, gx)
