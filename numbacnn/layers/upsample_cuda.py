"""upsample CUDA kernels: x, gx (N, C, H, W) and y, gy (N, C, P, Q), one output element per
thread.

The interface and the source rule are upsample_cpu.py's. Backward needs no atomics: each
input pixel's thread gathers the outputs that read it. Along an axis those are the outputs
whose first source index i0 is h - 1 or h (h alone for nearest), a range since i0 never
decreases; a binary search over the rule itself finds its ends, so no rounding of an inverse
can miss one.
"""

import math

from numba import cuda, float32

from .._jit import cuda_device, cuda_kernel

__all__ = ["upsample_forward", "upsample_backward_input"]

THREADS = 256


@cuda_device
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


@cuda_device
def _first(a, target, size, out, scale, mode):
    """The first output index whose i0 is >= target (out if there is none)."""
    lo = 0
    hi = out
    while lo < hi:
        mid = (lo + hi) // 2
        i0, i1, l0, l1 = _source(a, mid, size, out, scale, mode)
        if i0 < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


@cuda_kernel
def _upsample_forward_kernel(x, mode, scales, y):
    i = cuda.grid(1)
    if i >= y.size:
        return
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    P, Q = y.shape[2], y.shape[3]
    q = i % Q
    p = (i // Q) % P
    c = (i // (Q * P)) % C
    n = i // (Q * P * C)
    sh, sw = scales
    h0, h1, a0, a1 = _source(x, p, H, P, sh, mode)
    w0, w1, b0, b1 = _source(x, q, W, Q, sw, mode)
    if mode == 0:
        y[n, c, p, q] = x[n, c, h0, w0]
    else:
        y[n, c, p, q] = (a0 * (b0 * x[n, c, h0, w0] + b1 * x[n, c, h0, w1])
                         + a1 * (b0 * x[n, c, h1, w0] + b1 * x[n, c, h1, w1]))


def upsample_forward(x, mode, scales, y):
    _upsample_forward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](x, mode, scales, y)


@cuda_kernel
def _upsample_backward_input_kernel(gy, mode, scales, gx):
    i = cuda.grid(1)
    if i >= gx.size:
        return
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    P, Q = gy.shape[2], gy.shape[3]
    w = i % W
    h = (i // W) % H
    c = (i // (W * H)) % C
    n = i // (W * H * C)
    sh, sw = scales
    back = 0 if mode == 0 else 1
    p_lo, p_hi = _first(gx, h - back, H, P, sh, mode), _first(gx, h + 1, H, P, sh, mode)
    q_lo, q_hi = _first(gx, w - back, W, Q, sw, mode), _first(gx, w + 1, W, Q, sw, mode)
    acc = gx.dtype.type(0)
    for p in range(p_lo, p_hi):
        h0, h1, a0, a1 = _source(gx, p, H, P, sh, mode)
        for q in range(q_lo, q_hi):
            w0, w1, b0, b1 = _source(gx, q, W, Q, sw, mode)
            g = gy[n, c, p, q]
            if mode == 0:
                acc += g
                continue
            # The CPU's four scatters, each where it lands here (zero weights too, as there).
            if h0 == h and w0 == w:
                acc += a0 * b0 * g
            if h0 == h and w1 == w:
                acc += a0 * b1 * g
            if h1 == h and w0 == w:
                acc += a1 * b0 * g
            if h1 == h and w1 == w:
                acc += a1 * b1 * g
    gx[n, c, h, w] = acc


def upsample_backward_input(gy, mode, scales, gx):
    _upsample_backward_input_kernel[(gx.size + THREADS - 1) // THREADS, THREADS](gy, mode, scales, gx)
