"""max_pool3d CUDA kernels: (N, C, D, H, W) arrays, one output element per thread; they serve
max_pool1d and max_pool2d too, on (N, C, 1, 1, L) and (N, C, 1, H, W) views.

``geometry`` is (T, R, S, stride_d, stride_h, stride_w, pad_d, pad_h, pad_w, dilation_d,
dilation_h, dilation_w); the interface is max_pool3d_cpu.py's. Backward needs no atomics: each
input element's thread gathers from the outputs whose windows contain it, in the order the CPU
kernel scatters, so both devices sum in the same order.
"""

from numba import cuda

from .._jit import cuda_kernel
from ._pool3d_rules import window_max

__all__ = ["max_pool3d_forward", "max_pool3d_backward_input"]

THREADS = 256


@cuda_kernel
def _max_pool3d_forward_kernel(x, geometry, y, index):
    i = cuda.grid(1)
    if i >= y.size:
        return
    C = x.shape[1]
    Do, P, Q = y.shape[2], y.shape[3], y.shape[4]
    q = i % Q
    p = (i // Q) % P
    od = (i // (Q * P)) % Do
    c = (i // (Q * P * Do)) % C
    n = i // (Q * P * Do * C)
    best, at = window_max(x, n, c, od, p, q, geometry)
    y[n, c, od, p, q] = best
    if index.size:  # empty: the values alone (inference)
        index[n, c, od, p, q] = at


def max_pool3d_forward(x, geometry, y, index):
    _max_pool3d_forward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](x, geometry, y, index)


@cuda_kernel
def _max_pool3d_backward_input_kernel(gy, index, geometry, gx):
    i = cuda.grid(1)
    if i >= gx.size:
        return
    T, R, S, sd, sh, sw, pd, ph, pw, dd, dh, dw = geometry
    C, D, H, W = gx.shape[1], gx.shape[2], gx.shape[3], gx.shape[4]
    Do, P, Q = gy.shape[2], gy.shape[3], gy.shape[4]
    w = i % W
    h = (i // W) % H
    d = (i // (W * H)) % D
    c = (i // (W * H * D)) % C
    n = i // (W * H * D * C)
    here = (d * H + h) * W + w
    acc = gx.dtype.type(0)
    # Descending t, r and s visit the outputs in ascending (od, p, q): the CPU's scatter order.
    for t in range(T - 1, -1, -1):
        e = d + pd - t * dd
        if e < 0 or e % sd != 0 or e // sd >= Do:
            continue
        od = e // sd
        for r in range(R - 1, -1, -1):
            a = h + ph - r * dh
            if a < 0 or a % sh != 0 or a // sh >= P:
                continue
            p = a // sh
            for s in range(S - 1, -1, -1):
                u = w + pw - s * dw
                if u < 0 or u % sw != 0 or u // sw >= Q:
                    continue
                q = u // sw
                if index[n, c, od, p, q] == here:
                    acc += gy[n, c, od, p, q]
    gx[n, c, d, h, w] = acc


def max_pool3d_backward_input(gy, index, geometry, gx):
    _max_pool3d_backward_input_kernel[(gx.size + THREADS - 1) // THREADS, THREADS](gy, index, geometry, gx)
