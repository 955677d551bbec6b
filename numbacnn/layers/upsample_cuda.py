"""upsample CUDA kernels: x, gx (N, C, H, W) and y, gy (N, C, P, Q), one output element per
thread.

The interface, the tables and the source rule are upsample_cpu.py's. Backward needs no
atomics: each input pixel's thread gathers the outputs that read it. Along an axis those are
the outputs whose i0 is h - 1 or h (h alone for nearest), the range starts[h - 1] to
starts[h + 1], since i0 never decreases; ``upsample_axis`` finds each start by a binary search
over the rule itself, so no rounding of an inverse can miss one.
"""

from numba import cuda

from .._jit import cuda_kernel
from ._upsample_rules import source as _source

__all__ = ["upsample_axis", "upsample_forward", "upsample_backward_input"]

THREADS = 256


@cuda_kernel
def _upsample_axis_kernel(size, scale, mode, index, weight, starts):
    t = cuda.grid(1)
    out = index.shape[1]
    if t < out:
        i0, i1, l0, l1 = _source(weight, t, size, out, scale, mode)
        index[0, t] = i0
        index[1, t] = i1
        weight[0, t] = l0
        weight[1, t] = l1
    if t <= size:
        # The first output whose i0 is >= t: a binary search, i0 never decreasing.
        lo = 0
        hi = out
        while lo < hi:
            mid = (lo + hi) // 2
            i0, i1, l0, l1 = _source(weight, mid, size, out, scale, mode)
            if i0 < t:
                lo = mid + 1
            else:
                hi = mid
        starts[t] = lo


def upsample_axis(size, scale, mode, index, weight, starts):
    threads = max(index.shape[1], size + 1)
    _upsample_axis_kernel[(threads + THREADS - 1) // THREADS, THREADS](size, scale, mode, index, weight, starts)


@cuda_kernel
def _upsample_forward_kernel(x, mode, index_h, weight_h, index_w, weight_w, y):
    i = cuda.grid(1)
    if i >= y.size:
        return
    C = x.shape[1]
    P, Q = y.shape[2], y.shape[3]
    q = i % Q
    p = (i // Q) % P
    c = (i // (Q * P)) % C
    n = i // (Q * P * C)
    h0, h1, a0, a1 = index_h[0, p], index_h[1, p], weight_h[0, p], weight_h[1, p]
    w0, w1, b0, b1 = index_w[0, q], index_w[1, q], weight_w[0, q], weight_w[1, q]
    if mode == 0:
        y[n, c, p, q] = x[n, c, h0, w0]
    else:
        y[n, c, p, q] = (a0 * (b0 * x[n, c, h0, w0] + b1 * x[n, c, h0, w1])
                         + a1 * (b0 * x[n, c, h1, w0] + b1 * x[n, c, h1, w1]))


def upsample_forward(x, mode, index_h, weight_h, index_w, weight_w, y):
    _upsample_forward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](
        x, mode, index_h, weight_h, index_w, weight_w, y)


@cuda_kernel
def _upsample_backward_input_kernel(gy, mode, index_h, weight_h, starts_h, index_w, weight_w, starts_w, gx):
    i = cuda.grid(1)
    if i >= gx.size:
        return
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    w = i % W
    h = (i // W) % H
    c = (i // (W * H)) % C
    n = i // (W * H * C)
    back = 0 if mode == 0 else 1
    acc = gx.dtype.type(0)
    for p in range(starts_h[max(h - back, 0)], starts_h[h + 1]):
        h0, h1, a0, a1 = index_h[0, p], index_h[1, p], weight_h[0, p], weight_h[1, p]
        for q in range(starts_w[max(w - back, 0)], starts_w[w + 1]):
            w0, w1, b0, b1 = index_w[0, q], index_w[1, q], weight_w[0, q], weight_w[1, q]
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


def upsample_backward_input(gy, mode, index_h, weight_h, starts_h, index_w, weight_w, starts_w, gx):
    _upsample_backward_input_kernel[(gx.size + THREADS - 1) // THREADS, THREADS](
        gy, mode, index_h, weight_h, starts_h, index_w, weight_w, starts_w, gx)
