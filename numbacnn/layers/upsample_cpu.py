"""upsample CPU kernels: x, gx (N, C, H, W) and y, gy (N, C, P, Q).

``mode`` is 0 (nearest), 1 (bilinear) or 2 (bilinear with align_corners). Each axis has
tables, computed once per call by ``upsample_axis`` from the scale upsample.py gives (typed
like the data): ``index`` (2, out) the source indices i0 <= i1 of each output index,
``weight`` (2, out) their weights, and ``starts`` (size + 1,) where starts[j] is the first
output index whose i0 is >= j (out if none). The interface, the same in upsample_cuda.py:
``upsample_axis(size, scale, mode, index, weight, starts)``,
``upsample_forward(x, mode, index_h, weight_h, index_w, weight_w, y)`` and
``upsample_backward_input(gy, mode, index_h, weight_h, starts_h, index_w, weight_w, starts_w, gx)``,
each writing all of its outputs.
"""

from .._jit import cpu_kernel, cpu_serial, prange
from ._upsample_rules import source as _source

__all__ = ["upsample_axis", "upsample_forward", "upsample_backward_input"]


@cpu_serial
def upsample_axis(size, scale, mode, index, weight, starts):
    out = index.shape[1]
    j = 0
    for o in range(out):
        i0, i1, l0, l1 = _source(weight, o, size, out, scale, mode)
        index[0, o] = i0
        index[1, o] = i1
        weight[0, o] = l0
        weight[1, o] = l1
        while j <= i0:  # i0 never decreases: o is the first output reaching input j
            starts[j] = o
            j += 1
    for k in range(j, size + 1):
        starts[k] = out


@cpu_kernel
def upsample_forward(x, mode, index_h, weight_h, index_w, weight_w, y):
    N, C = x.shape[0], x.shape[1]
    P, Q = y.shape[2], y.shape[3]
    for row in prange(N * C * P):
        n, c, p = row // (C * P), (row // P) % C, row % P
        h0, h1, a0, a1 = index_h[0, p], index_h[1, p], weight_h[0, p], weight_h[1, p]
        if mode == 0:
            for q in range(Q):
                y[n, c, p, q] = x[n, c, h0, index_w[0, q]]
            continue
        for q in range(Q):
            w0, w1, b0, b1 = index_w[0, q], index_w[1, q], weight_w[0, q], weight_w[1, q]
            # PyTorch's order (columns, then rows), zero weights included: 0 * Inf is NaN there too.
            y[n, c, p, q] = (a0 * (b0 * x[n, c, h0, w0] + b1 * x[n, c, h0, w1])
                             + a1 * (b0 * x[n, c, h1, w0] + b1 * x[n, c, h1, w1]))


@cpu_kernel
def upsample_backward_input(gy, mode, index_h, weight_h, starts_h, index_w, weight_w, starts_w, gx):
    N, C, H, W = gx.shape
    P, Q = gy.shape[2], gy.shape[3]
    zero = gx.dtype.type(0)
    # Outputs share source pixels: each iteration owns a whole (n, c) plane of gx, so the
    # scatter below never races (the starts tables serve the CUDA gather).
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                gx[n, c, h, w] = zero
        for p in range(P):
            h0, h1, a0, a1 = index_h[0, p], index_h[1, p], weight_h[0, p], weight_h[1, p]
            for q in range(Q):
                w0, w1, b0, b1 = index_w[0, q], index_w[1, q], weight_w[0, q], weight_w[1, q]
                g = gy[n, c, p, q]
                if mode == 0:
                    gx[n, c, h0, w0] += g
                else:
                    gx[n, c, h0, w0] += a0 * b0 * g
                    gx[n, c, h0, w1] += a0 * b1 * g
                    gx[n, c, h1, w0] += a1 * b0 * g
                    gx[n, c, h1, w1] += a1 * b1 * g
