"""A residual join of two 1x1 convolutions at inference (numbacnn._joined): a bottleneck
block's expanding conv3 and its projection shortcut, each with its folded batch norm, summed
and relu'd. A sample at a time, each product goes where its output is still in cache: the first
member's into y[n], the second's into this chunk's scratch, and one pass writes y[n] =
relu((second * s2 + b2) + (first * s1 + b1)), as the unfused second conv adds the first's output
(the same products in the same column blocks, the same sums in the same order). Unfused, the
first output went out to memory and came back as the residual: at batch 256 that round trip is
two of the five passes over the block's largest tensor.

A member at a stride (the projection into a new stage) multiplies its 1x1 columns
(conv2d_cpu's ``_columns``, x[n]'s picked pixels) from this chunk's own column scratch; one at
stride 1 multiplies x[n] itself.
"""

import numpy as np

from .._jit import cpu_kernel, cpu_serial, prange
from .._micro import blocked_gemm, micro_fits
from .._threads import single_thread_blas
from .conv2d_cpu import _columns

__all__ = ["joined_forward"]


@cpu_serial
def _product(x, n, w, col, direct, geo, P, Q, out, micro):
    """out (K * L, flat) = w (K, C) @ x[n]'s 1x1 columns, in small_cols' column blocks (all at
    once through the register tile when ``micro``): x[n] itself when ``direct``, else its
    columns built in col."""
    K, C = w.shape
    L = P * Q
    if direct:
        src = x[n].reshape(x[n].size)
    else:
        _columns(x[n], col, P, Q, geo)
        src = col
    blocked_gemm(K, L, C, w.reshape(w.size), C, src, L, out, L, micro)


@cpu_serial
def _chunk(x1, x2, w1, w2, b1, b2, s1, s2, y, col1, col2, scr, geo1, geo2, d1, d2, P, Q, relu, n0, n1, t1, t2):
    """Samples n0..n1: both products, then y[n] = relu?((scr * s2 + b2) + (y[n] * s1 + b1)),
    an empty bias the exact identity (-0.0) and an empty scale 1, relu's rule (NaN kept); t1, t2:
    each product through the register tile (micro_fits)."""
    K = y.shape[1]
    L = P * Q
    zero, one = y.dtype.type(0), y.dtype.type(1)
    for n in range(n0, n1):
        yf = y[n].reshape(K * L)
        _product(x1, n, w1, col1, d1, geo1, P, Q, yf, t1)
        _product(x2, n, w2, col2, d2, geo2, P, Q, scr, t2)
        for k in range(K):
            a1, m1 = b1[k] if b1.size else -zero, s1[k] if s1.size else one
            a2, m2 = b2[k] if b2.size else -zero, s2[k] if s2.size else one
            o = k * L
            if relu:  # unsigned indices: no negative-index wrap for LLVM to keep out of the vector loop
                for j in range(L):
                    i = np.uint64(o + j)
                    v = (scr[i] * m2 + a2) + (yf[i] * m1 + a1)
                    yf[i] = zero if v <= zero else v
            else:
                for j in range(L):
                    i = np.uint64(o + j)
                    yf[i] = (scr[i] * m2 + a2) + (yf[i] * m1 + a1)


@cpu_kernel
def _joined(x1, x2, w1, w2, b1, b2, s1, s2, y, col1, col2, scr, geo1, geo2, d1, d2, P, Q, relu, T, t1, t2):
    """The batch in T chunks of whole samples (T at most the batch), each with its row of the
    scratch arrays."""
    N = y.shape[0]
    for t in prange(T):
        _chunk(x1, x2, w1, w2, b1, b2, s1, s2, y, col1[t], col2[t], scr[t], geo1, geo2, d1, d2, P, Q, relu,
               t * N // T, (t + 1) * N // T, t1, t2)


def joined_forward(x1, x2, w1, w2, b1, b2, s1, s2, y, col1, col2, scr, geo1, geo2, d1, d2, relu, T):
    """y = relu?((conv(x2, w2) * s2 + b2) + (conv(x1, w1) * s1 + b1)) for two 1x1 convolutions
    (w_i (K, C_i), geo_i conv2d's geometry, d_i: stride 1 at the same size, x_i read as it is)
    onto y (N, K, P, Q); scratch col_i (T, C_i * P * Q) (T, 0 where d_i), scr (T, K * P * Q);
    b_i, s_i (K,) or empty; T <= N chunks."""
    K, L = y.shape[1], y.shape[2] * y.shape[3]
    with single_thread_blas:
        _joined(x1, x2, w1, w2, b1, b2, s1, s2, y, col1, col2, scr, geo1, geo2, d1, d2, y.shape[2], y.shape[3],
                relu, T, micro_fits(y.dtype, K, L, w1.shape[1]), micro_fits(y.dtype, K, L, w2.shape[1]))
