"""Column matrices of 2-D convolutions on the CPU (im2col and its transpose, col2im), inlined
into the kernels of conv2d and conv_transpose2d (whose forward is conv2d's input gradient).

The column matrix of a (C, H, W) image for a geometry ``geo`` = (groups, R, S, stride_h,
stride_w, dilation_h, dilation_w, pad_top, pad_left) and a P x Q output has rows (c, r, s) and
columns (p, q): entry ((c, r, s), (p, q)) is the image at (p*sh + r*dh - pt, q*sw + s*dw - pl),
or 0 outside it. P and Q are the caller's: a transposed convolution's output_padding makes
the image larger than the one a convolution with P x Q outputs would need.
"""

from __future__ import annotations

import numpy as np

from .._jit import cpu_inline

__all__ = ["valid", "im2col", "col2im"]


@cpu_inline
def valid(n_out, size, stride, offset):
    # The outputs i in [lo, hi) whose tap i * stride + offset lands inside [0, size), with
    # lo <= hi <= n_out: callers zero-fill [0, lo) and [hi, n_out) of an n_out-long row, so a
    # tap left of the input for every output (padding wider than n_out strides) must not
    # give lo > n_out.
    lo = 0 if offset >= 0 else min((stride - 1 - offset) // stride, n_out)
    hi = (size - 1 - offset) // stride + 1 if size - 1 - offset >= 0 else 0
    hi = min(hi, n_out)
    return lo, max(lo, hi)


# The copies index flat views with unsigned offsets: a signed index gets a negative-index check
# per element, which stops LLVM from vectorising them (3-4x slower, measured).
@cpu_inline
def im2col(xn, cf, P, Q, geo):
    """cf[((c*R + r)*S + s)*P*Q + p*Q + q] = xn[c, p*sh + r*dh - pt, q*sw + s*dw - pl], or 0."""
    _, R, S, sh, sw, dh, dw, pt, pl = geo
    C, H, W = xn.shape
    zero = xn.dtype.type(0)
    xf = xn.reshape(xn.size)
    for c in range(C):
        for r in range(R):
            p0, p1 = valid(P, H, sh, r * dh - pt)
            for s in range(S):
                off = s * dw - pl
                q0, q1 = valid(Q, W, sw, off)
                row = np.uint64(((c * R + r) * S + s) * P * Q)
                for p in range(P):
                    o = row + np.uint64(p * Q)
                    lo, hi = (q0, q1) if p >= p0 and p < p1 else (Q, Q)  # [lo, hi) copied, rest 0
                    for q in range(lo):
                        cf[o + np.uint64(q)] = zero
                    if hi > lo:
                        src = np.uint64((c * H + p * sh + r * dh - pt) * W + lo * sw + off)
                        dst = o + np.uint64(lo)
                        if sw == 1:  # the common case: a contiguous, vectorised copy
                            for i in range(hi - lo):
                                cf[dst + np.uint64(i)] = xf[src + np.uint64(i)]
                        else:
                            for i in range(hi - lo):
                                cf[dst + np.uint64(i)] = xf[src + np.uint64(i * sw)]
                    for q in range(hi, Q):
                        cf[o + np.uint64(q)] = zero


@cpu_inline
def col2im(cf, gxn, P, Q, geo):
    """gxn[c] = the sum of the column-matrix entries that im2col copied from xn[c]."""
    _, R, S, sh, sw, dh, dw, pt, pl = geo
    C, H, W = gxn.shape
    gf = gxn.reshape(gxn.size)
    for i in range(gf.size):
        gf[i] = gxn.dtype.type(0)
    for c in range(C):
        for r in range(R):
            p0, p1 = valid(P, H, sh, r * dh - pt)
            for s in range(S):
                off = s * dw - pl
                q0, q1 = valid(Q, W, sw, off)
                if q1 == q0:
                    continue
                row = np.uint64(((c * R + r) * S + s) * P * Q + q0)
                for p in range(p0, p1):
                    o = row + np.uint64(p * Q)
                    dst = np.uint64((c * H + p * sh + r * dh - pt) * W + q0 * sw + off)
                    if sw == 1:
                        for i in range(q1 - q0):
                            gf[dst + np.uint64(i)] += cf[o + np.uint64(i)]
                    else:
                        for i in range(q1 - q0):
                            gf[dst + np.uint64(i * sw)] += cf[o + np.uint64(i)]
