"""max_pool2d CUDA kernels: (N, C, H, W) arrays, one output element per thread.

``geometry`` is (R, S, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w); the
interface is max_pool2d_cpu.py's. Backward needs no atomics: each input element's thread
gathers from the outputs whose windows contain it, in the order the CPU kernel scatters, so
both devices sum in the same order.
"""

import math

from numba import cuda

from .._jit import cuda_kernel

__all__ = ["max_pool2d_forward", "max_pool2d_backward_input"]

THREADS = 256


@cuda_kernel
def _max_pool2d_forward_kernel(x, geometry, y, index):
    i = cuda.grid(1)
    if i >= y.size:
        return
    R, S, sh, sw, ph, pw, dh, dw = geometry
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    P, Q = y.shape[2], y.shape[3]
    q = i % Q
    p = (i // Q) % P
    c = (i // (Q * P)) % C
    n = i // (Q * P * C)
    best = -x.dtype.type(math.inf)  # the float32 constant negated, not a float64 -inf cast
    at = -1
    for r in range(R):
        h = p * sh - ph + r * dh
        if h < 0 or h >= H:
            continue
        for s in range(S):
            w = q * sw - pw + s * dw
            if w < 0 or w >= W:
                continue
            v = x[n, c, h, w]
            if at < 0 or v > best or v != v:  # as max_pool2d_cpu: -inf windows, NaN
                best = v
                at = h * W + w
    y[n, c, p, q] = best
    index[n, c, p, q] = at


def max_pool2d_forward(x, geometry, y, index):
    _max_pool2d_forward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](x, geometry, y, index)


@cuda_kernel
def _max_pool2d_backward_input_kernel(gy, index, geometry, gx):
    i = cuda.grid(1)
    if i >= gx.size:
        return
    R, S, sh, sw, ph, pw, dh, dw = geometry
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    P, Q = gy.shape[2], gy.shape[3]
    w = i % W
    h = (i // W) % H
    c = (i // (W * H)) % C
    n = i // (W * H * C)
    acc = gx.dtype.type(0)
    # Descending r and s visit the outputs in ascending (p, q): the CPU's scatter order.
    for r in range(R - 1, -1, -1):
        t = h + ph - r * dh
        if t < 0 or t % sh != 0 or t // sh >= P:
            continue
        p = t // sh
        for s in range(S - 1, -1, -1):
            u = w + pw - s * dw
            if u < 0 or u % sw != 0 or u // sw >= Q:
                continue
            q = u // sw
            if index[n, c, p, q] == h * W + w:
                acc += gy[n, c, p, q]
    gx[n, c, h, w] = acc


def max_pool2d_backward_input(gy, index, geometry, gx):
    _max_pool2d_backward_input_kernel[(gx.size + THREADS - 1) // THREADS, THREADS](gy, index, geometry, gx)
