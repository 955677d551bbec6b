"""adaptive_max_pool2d CUDA kernels: x and gx (N, C, H, W), y, gy and index (N, C, P, Q), one
output element per thread; the bins are _adaptive_rules.py's, and the interface
adaptive_max_pool2d_cpu.py's. Backward needs no atomics: each input element's thread gathers
from the bins that hold it and chose it, in the CPU kernel's scatter order.
"""

import math

from numba import cuda

from .._jit import cuda_kernel
from ._adaptive_rules import bin_span as _bin, bins_over as _bins_over

__all__ = ["adaptive_max_pool2d_forward", "adaptive_max_pool2d_backward_input"]

THREADS = 256


def _blocks(n):
    return (n + THREADS - 1) // THREADS


@cuda_kernel
def _adaptive_max_pool2d_forward_kernel(x, y, index):
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
    best, at = -x.dtype.type(math.inf), h0 * W + w0
    for h in range(h0, h1):
        for w in range(w0, w1):
            v = x[n, c, h, w]
            if v > best or v != v:  # as adaptive_max_pool2d_cpu: first maximum, last NaN
                best, at = v, h * W + w
    y[n, c, i, j] = best
    index[n, c, i, j] = at


def adaptive_max_pool2d_forward(x, y, index):
    _adaptive_max_pool2d_forward_kernel[_blocks(y.size), THREADS](x, y, index)


@cuda_kernel
def _adaptive_max_pool2d_backward_input_kernel(gy, index, gx):
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
        for j in range(j0, j1 + 1):
            if index[n, c, i, j] == h * W + w:
                acc += gy[n, c, i, j]
    gx[n, c, h, w] = acc


def adaptive_max_pool2d_backward_input(gy, index, gx):
    _adaptive_max_pool2d_backward_input_kernel[_blocks(gx.size), THREADS](gy, index, gx)
