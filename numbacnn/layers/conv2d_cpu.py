"""conv2d CPU: im2col/col2im Numba kernels around BLAS matrix products (NumPy's matmul).

The column matrix holds the whole batch, ``col[g, j, n, p, q]`` with j = (c, r, s) inside
group g, so each group's forward, weight-gradient and input-gradient products are one large
GEMM each (measured faster than per-sample products for every benchmark shape but the first).
Its output comes in (K, N, P*Q) order: ``conv2d_unpack`` turns it into NCHW and adds the bias,
``conv2d_pack`` does the reverse for gy and sums the bias gradient on the way.
A 1x1, stride-1, unpadded convolution skips all that: x[n] is already the column matrix of
sample n, and per-sample products write y in NCHW.

The Numba kernels copy and scatter; every multiply-add runs in BLAS. ``geo`` is
(groups, R, S, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left).
"""

from __future__ import annotations

import numpy as np

from .._jit import cpu_inline, cpu_serial

Geometry = tuple[int, int, int, int, int, int, int, int, int]


@cpu_inline
def _valid(n_out, size, stride, offset):
    # The outputs i in [lo, hi) whose tap i * stride + offset lands inside [0, size).
    lo = 0 if offset >= 0 else (stride - 1 - offset) // stride
    hi = (size - 1 - offset) // stride + 1 if size - 1 - offset >= 0 else 0
    hi = min(hi, n_out)
    return lo, max(lo, hi)


# The kernels below are serial on purpose. They run between multi-threaded BLAS calls, and the
# threads of a parallel Numba kernel stay busy-waiting for milliseconds after it returns,
# taking the cores BLAS needs: on 2 cores a parallel im2col made the whole step 2-4x slower.
# They index flat views with unsigned offsets: a signed index gets a negative-index check
# per element, which stops LLVM from vectorising the copies (3-4x slower, measured).


@cpu_serial
def conv2d_im2col(x, col, R, S, sh, sw, dh, dw, pt, pl):
    """col[g, (c, r, s), n, p, q] = x[n, g*Cg + c, p*sh + r*dh - pt, q*sw + s*dw - pl], or 0."""
    N, C, H, W = x.shape
    G, J, P, Q = col.shape[0], col.shape[1], col.shape[3], col.shape[4]
    Cg = C // G
    zero = x.dtype.type(0)
    xf, cf = x.reshape(x.size), col.reshape(col.size)
    for c in range(C):
        g, cg = c // Cg, c % Cg
        for r in range(R):
            p0, p1 = _valid(P, H, sh, r * dh - pt)
            for s in range(S):
                off = s * dw - pl
                q0, q1 = _valid(Q, W, sw, off)
                for n in range(N):
                    row = np.uint64(((g * J + (cg * R + r) * S + s) * N + n) * P * Q)
                    for p in range(P):
                        o = row + np.uint64(p * Q)
                        lo, hi = (q0, q1) if p >= p0 and p < p1 else (Q, Q)  # [lo, hi) copied, rest 0
                        for q in range(lo):
                            cf[o + np.uint64(q)] = zero
                        if hi > lo:
                            src = np.uint64(((n * C + c) * H + p * sh + r * dh - pt) * W + lo * sw + off)
                            dst = o + np.uint64(lo)
                            if sw == 1:  # the common case: a contiguous, vectorised copy
                                for i in range(hi - lo):
                                    cf[dst + np.uint64(i)] = xf[src + np.uint64(i)]
                            else:
                                for i in range(hi - lo):
                                    cf[dst + np.uint64(i)] = xf[src + np.uint64(i * sw)]
                        for q in range(hi, Q):
                            cf[o + np.uint64(q)] = zero


@cpu_serial
def conv2d_col2im(col, gx, R, S, sh, sw, dh, dw, pt, pl):
    """gx[n, c] = the sum of the column-matrix entries that im2col copied from x[n, c]."""
    N, C, H, W = gx.shape
    G, J, P, Q = col.shape[0], col.shape[1], col.shape[3], col.shape[4]
    Cg = C // G
    cf, gf = col.reshape(col.size), gx.reshape(gx.size)
    for i in range(gf.size):
        gf[i] = gx.dtype.type(0)
    for c in range(C):
        g, cg = c // Cg, c % Cg
        for r in range(R):
            p0, p1 = _valid(P, H, sh, r * dh - pt)
            for s in range(S):
                off = s * dw - pl
                q0, q1 = _valid(Q, W, sw, off)
                if q1 == q0:
                    continue
                for n in range(N):
                    row = np.uint64(((g * J + (cg * R + r) * S + s) * N + n) * P * Q + q0)
                    for p in range(p0, p1):
                        o = row + np.uint64(p * Q)
                        dst = np.uint64(((n * C + c) * H + p * sh + r * dh - pt) * W + q0 * sw + off)
                        if sw == 1:
                            for i in range(q1 - q0):
                                gf[dst + np.uint64(i)] += cf[o + np.uint64(i)]
                        else:
                            for i in range(q1 - q0):
                                gf[dst + np.uint64(i * sw)] += cf[o + np.uint64(i)]


@cpu_serial
def conv2d_unpack(yt, b, y):
    """y[n, k] = yt[k, n] + b[k] (no bias when b is empty); yt (K, N, L), y (N, K, L)."""
    K, N, L = yt.shape
    tf, yf = yt.reshape(yt.size), y.reshape(y.size)
    for n in range(N):
        for k in range(K):
            bk = b[k] if b.size else yt.dtype.type(0)
            src, dst = np.uint64((k * N + n) * L), np.uint64((n * K + k) * L)
            for i in range(L):
                yf[dst + np.uint64(i)] = tf[src + np.uint64(i)] + bk


@cpu_serial
def conv2d_pack(gy, gyt, gb):
    """gyt[k, n] = gy[n, k], and gb[k] += the sum of gy[:, k] (when gb is not empty)."""
    N, K, L = gy.shape
    gf, tf = gy.reshape(gy.size), gyt.reshape(gyt.size)
    for k in range(K):
        acc = gy.dtype.type(0)
        for n in range(N):
            src, dst = np.uint64((n * K + k) * L), np.uint64((k * N + n) * L)
            for i in range(L):
                v = gf[src + np.uint64(i)]
                tf[dst + np.uint64(i)] = v
                acc += v
        if gb.size:
            gb[k] += acc


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, col: np.ndarray | None,
                   yt: np.ndarray | None, geo: Geometry) -> None:
    """y = conv2d(x, w) + b (b empty: no bias). ``col`` (G, C/G*R*S, N, P, Q) and ``yt``
    (K, N, P*Q) are scratch; both None on the direct (1x1) path."""
    G, R, S, sh, sw, dh, dw, pt, pl = geo
    N, K, P, Q = y.shape
    if col is None:
        C = x.shape[1]
        np.matmul(w.reshape(G, K // G, C // G), x.reshape(N, G, C // G, P * Q),
                  out=y.reshape(N, G, K // G, P * Q))
        if b.size:
            y3 = y.reshape(N, K, P * Q)
            np.add(y3, b[:, None], out=y3)
        return
    conv2d_im2col(x, col, R, S, sh, sw, dh, dw, pt, pl)
    J = col.shape[1]
    np.matmul(w.reshape(G, K // G, J), col.reshape(G, J, N * P * Q), out=yt.reshape(G, K // G, N * P * Q))
    conv2d_unpack(yt, b, y.reshape(N, K, P * Q))


def conv2d_backward_weight(gy: np.ndarray, x: np.ndarray, col: np.ndarray | None, gw: np.ndarray,
                           gb: np.ndarray, gyt: np.ndarray | None, gws: np.ndarray, part: np.ndarray | None,
                           geo: Geometry) -> None:
    """gw += the weight gradient, gb += the bias gradient (gb empty: no bias).

    ``gws`` (G, K/G, C/G*R*S) is scratch. im2col path: ``gyt`` (K, N, P*Q) receives gy packed,
    for the input gradient too. Direct path: ``part`` (N, G, K/G, C/G) holds per-sample products.
    """
    G = geo[0]
    N, K, P, Q = gy.shape
    if col is None:
        C = x.shape[1]
        np.matmul(gy.reshape(N, G, K // G, P * Q), x.reshape(N, G, C // G, P * Q).transpose(0, 1, 3, 2),
                  out=part)
        np.sum(part, axis=0, out=gws)
        if gb.size:
            gbs = part.reshape(-1)[:K]  # part is free again
            np.sum(gy.reshape(N, K, P * Q), axis=(0, 2), out=gbs)
            gb += gbs
    else:
        conv2d_pack(gy.reshape(N, K, P * Q), gyt, gb)
        J = col.shape[1]
        np.matmul(gyt.reshape(G, K // G, N * P * Q), col.reshape(G, J, N * P * Q).transpose(0, 2, 1), out=gws)
    gw.reshape(gws.shape)[...] += gws


def conv2d_backward_input(w: np.ndarray, gy: np.ndarray, gyt: np.ndarray | None, col: np.ndarray | None,
                          gx: np.ndarray, geo: Geometry) -> None:
    """gx = the transposed convolution of gy with w. im2col path: reads ``gyt`` from
    conv2d_backward_weight and overwrites ``col``, which that function has read already."""
    G, R, S, sh, sw, dh, dw, pt, pl = geo
    N, K, P, Q = gy.shape
    wt = w.reshape(G, K // G, -1).transpose(0, 2, 1)
    if col is None:
        C = gx.shape[1]
        np.matmul(wt, gy.reshape(N, G, K // G, P * Q), out=gx.reshape(N, G, C // G, P * Q))
        return
    J = col.shape[1]
    np.matmul(wt, gyt.reshape(G, K // G, N * P * Q), out=col.reshape(G, J, N * P * Q))
    conv2d_col2im(col, gx, R, S, sh, sw, dh, dw, pt, pl)
