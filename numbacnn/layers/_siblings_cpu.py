"""Sibling 1x1 convolutions at inference (numbacnn._siblings): conv2d nodes that are 1x1, stride
1, unpadded, undilated and ungrouped and read one input (an Inception module's conv1,
conv3_reduce and conv5_reduce) multiplied as one product a sample. Their weights are stacked
into one (sum of K, C) matrix, x[n] (C, H*W) is the other factor, and each member's rows go out
to its own y with its bias and relu's rule (NaN kept), while they are in cache: one product of
72 rows where there were three of 32, 32 and 8 (each small product pays OpenBLAS's call and
packing, and an 8-row one wastes most of the micro-kernel). The sums are the same as each
member's own product but for their rounding: OpenBLAS blocks a taller product differently.
"""

import numpy as np

from .._blas import gemm, small_cols
from .._jit import cpu_kernel, cpu_serial, prange
from .._micro import micro_fits, micro_gemm
from .._threads import single_thread_blas

__all__ = ["siblings_forward"]


@cpu_serial
def _stack(ws, bs, wcat, bcat):
    """The members' weights (K_i, C) one under another in wcat (sum of K_i, C), their biases
    in bcat (-0.0 for a member without: the exact identity, as the im2col path adds); the
    caller (numbacnn._siblings) makes the shapes agree. Copied by loops: in a serial kernel a
    slice assignment from an array makes Numba compile its shape-mismatch message, string
    formatting and all (compiling _stack in a fresh process, empty cache: 3.2 s; by loops 0.5)."""
    o = 0
    for i in range(len(ws)):
        w, b = ws[i], bs[i]
        K, C = w.shape
        for k in range(K):
            for c in range(C):
                wcat[o + k, c] = w[k, c]
        for k in range(K):
            bcat[o + k] = b[k] if b.size else -bcat.dtype.type(0)
        o += K


@cpu_serial
def _chunk(x3, wcat, bcat, ys, relus, scr, n0, n1, micro):
    """Samples n0..n1 for every member: wcat @ x3[n] into scr, a block of columns at a time (as
    small_cols cuts them; all at once through numbacnn._micro's tile when ``micro``), then each
    member's rows out to its y (flat, (N, K_i, L)) plus its bias, relu'd where relus says."""
    Kt, C = wcat.shape
    L = x3.shape[2]
    zero = scr.dtype.type(0)
    cb = max(L, 1) if micro else small_cols(Kt, L, C)  # the register tile (micro_fits): every column at once
    wf = wcat.reshape(wcat.size)
    for n in range(n0, n1):
        xf = x3[n].reshape(C * L)
        for a in range(0, L, cb):
            m = min(L, a + cb) - a
            if micro:
                micro_gemm(Kt, m, C, wf, C, xf[a:], L, scr, m)
            else:
                gemm(False, False, Kt, m, C, wf, C, xf[a:], L, 0, scr, m)
            o = 0
            for i in range(len(ys)):
                yf = ys[i].reshape(ys[i].size)
                K = ys[i].shape[1]
                for k in range(K):
                    bk = bcat[o + k]
                    src, dst = np.uint64((o + k) * m), np.uint64((n * K + k) * L + a)
                    if relus[i]:
                        for j in range(m):
                            v = scr[src + np.uint64(j)] + bk
                            yf[dst + np.uint64(j)] = zero if v <= zero else v
                    else:
                        for j in range(m):
                            yf[dst + np.uint64(j)] = scr[src + np.uint64(j)] + bk
                o += K


@cpu_kernel
def _siblings(x3, ws, bs, ys, relus, wcat, bcat, scr, T, micro):
    """The members' weights stacked, then the batch in T chunks of whole samples (T at most the
    batch; scr: a chunk's row each)."""
    _stack(ws, bs, wcat, bcat)
    N = x3.shape[0]
    for t in prange(T):
        _chunk(x3, wcat, bcat, ys, relus, scr[t], t * N // T, (t + 1) * N // T, micro)


def siblings_forward(x3, ws, bs, ys, relus, wcat, bcat, scr, T):
    """ys[i] = relu?(ws[i] @ x3[n] + bs[i]) for every sample n (x3 (N, C, L), ws[i] (K_i, C), bs[i]
    (K_i,) or empty, ys[i] (N, K_i, L), relus a bool per member), with scratch wcat (sum K_i, C),
    bcat (sum K_i,) and scr (T, sum K_i * L), in T <= N chunks."""
    with single_thread_blas:
        micro = micro_fits(x3.dtype, wcat.shape[0], x3.shape[2], wcat.shape[1])
        _siblings(x3, ws, bs, ys, relus, wcat, bcat, scr, T, micro)
