"""conv2d CPU: per-sample im2col and BLAS products inside parallel Numba kernels.

Each sample's column matrix ``col[n]``, rows (c, r, s) and columns (p, q), is built by the
thread that owns sample n and multiplied right there with ``gemm`` (numbacnn._blas: one
BLAS thread, strided blocks, transposes, accumulation):
y[n] = w @ col[n] lands in NCHW order with no transposes. Both cores stay busy through one
parallel loop over the batch, and the column matrix is still hot in cache when BLAS reads it.
A 1x1, stride-1, unpadded convolution skips im2col: x[n] already is its column matrix.

The weight gradient sums gy[n] @ col[n]^T over the batch: each of T chunks of samples adds
into its own partial, and ``conv2d_reduce`` sums the partials afterwards, so no two threads
ever write the same element. The input gradient is per sample again: col[n] = w^T @ gy[n],
then col2im scatters it into gx[n] (the direct path writes gx[n] itself).

Few input channels, groups, strides and 1x1 take that channel-major path; the others take
the pixel-major one further down, except stride-1 convolutions with at least 16 input and
output channels and 3x3 kernels (or up to 6x6 on larger outputs): those go to Winograd's
F(4x4, 3x3) (conv2d_winograd_cpu; Conv2d._winograd decides). Every wrapper runs under ``single_thread_blas``: BLAS
threads of their own would fight Numba's pool for the cores. ``geo`` is (groups, R, S, stride_h, stride_w, dilation_h,
dilation_w, pad_top, pad_left).
"""

from __future__ import annotations

import numpy as np

from .._blas import gemm
from .._jit import REASSOC, cpu_inline, cpu_kernel, prange
from .._threads import single_thread_blas
from ._conv_columns import col2im as _col2im, im2col as _im2col

Geometry = tuple[int, int, int, int, int, int, int, int, int]


@cpu_kernel
def conv2d_forward_batch(x, x4, w3, b, col, y4, T, P, Q, geo, direct):
    """y4[n, g] = w3[g] @ xcol[n, g] (+ b), xcol[n] being x[n]'s column matrix, which chunk t
    of T builds in col[t] (x4[n] itself when ``direct``)."""
    N, G, Kg, L = y4.shape
    J = w3.shape[2]
    for t in prange(T):
        for n in range(t * N // T, (t + 1) * N // T):
            if not direct:
                _im2col(x[n], col[t].reshape(col[t].size), P, Q, geo)
            src = x4[n] if direct else col[t]
            for g in range(G):  # y4[n, g] = w3[g] @ src[g]
                gemm(False, False, Kg, L, J, w3[g].reshape(Kg * J), J, src[g].reshape(J * L), L, 0,
                     y4[n, g].reshape(Kg * L), L)
            if b.size:
                for g in range(G):
                    for k in range(Kg):
                        bk = b[g * Kg + k]
                        for i in range(L):
                            y4[n, g, k, i] += bk


@cpu_kernel
def conv2d_backward_chunks(x, x4, w3, gy4, col, part, gx, gx4, P, Q, geo, direct, want_gx):
    """part[t, g] = the sum over chunk t of the samples of gy4[n, g] @ xcol[n, g]^T, and (when
    ``want_gx``) gx[n] = col2im(w3^T @ gy4[n]); col[t] holds one sample's column matrix at a
    time, rebuilt from x here rather than kept from the forward (``direct``: x4 and gx4)."""
    N, G, Kg, L = gy4.shape
    T, _, _, J = part.shape
    for t in prange(T):
        n0, n1 = t * N // T, (t + 1) * N // T
        for n in range(n0, n1):
            if not direct:
                _im2col(x[n], col[t].reshape(col[t].size), P, Q, geo)
            src = x4[n] if direct else col[t]
            for g in range(G):  # part[t, g] (+)= gy4[n, g] @ src[g]^T
                gemm(False, True, Kg, J, L, gy4[n, g].reshape(Kg * L), L, src[g].reshape(J * L), L,
                     0 if n == n0 else 1, part[t, g].reshape(Kg * J), J)
            if want_gx:
                dst = gx4[n] if direct else col[t]
                for g in range(G):  # dst[g] = w3[g]^T @ gy4[n, g]
                    gemm(True, False, J, L, Kg, w3[g].reshape(Kg * J), J, gy4[n, g].reshape(Kg * L), L, 0,
                         dst[g].reshape(J * L), L)
                if not direct:
                    _col2im(col[t].reshape(col[t].size), gx[n], P, Q, geo)


# Pixel-major path ----------------------------------------------------------------------------
# OpenBLAS multiplies a tall (pixels, C*R*S) matrix by (C*R*S, K) 15-50% faster than the
# short-and-wide (K, C*R*S) @ (C*R*S, pixels) of the path above (K is 32-128 here). So each
# sample is first copied to a zero-padded (H, W, C) image, whose pixel rows hold S*C
# contiguous values per kernel row: a column-matrix row is R contiguous copies. The column
# matrix is built a block of output pixels at a time, sized to stay in L2 next to BLAS's own
# packing buffers; the block's output (pixels, K) goes back to NCHW with the bias added.
# Columns are ordered (r, s, c), so the weights come in as (K, R, S, C) and the weight
# gradient's partials are permuted back by conv2d_reduce.

@cpu_inline
def _to_hwc(xn, xp, pt, pl):
    """xp[pt + h, pl + w, c] = xn[c, h, w]; the rest of xp (the padding) = 0."""
    C, H, W = xn.shape
    Hp, Wp, _ = xp.shape
    zero = xn.dtype.type(0)
    xf = xp.reshape(xp.size)
    for i in range(Hp):
        for j in range(Wp):
            if i < pt or i >= pt + H or j < pl or j >= pl + W:
                o = np.uint64((i * Wp + j) * C)
                for c in range(C):
                    xf[o + np.uint64(c)] = zero
    for h in range(H):
        for w in range(W):
            o = np.uint64(((h + pt) * Wp + w + pl) * C)
            for c in range(C):
                xf[o + np.uint64(c)] = xn[c, h, w]


@cpu_inline
def _from_hwc(xp, xn, pt, pl):
    """xn[c, h, w] = xp[pt + h, pl + w, c]: the transpose of _to_hwc (padding dropped). Runs of
    16 columns at a time, every channel, keep the HWC lines read in L1 (1.6x faster than
    a channel at a time, measured)."""
    C, H, W = xn.shape
    for h in range(H):
        for w0 in range(0, W, 16):
            for c in range(C):
                for w in range(w0, min(W, w0 + 16)):
                    xn[c, h, w] = xp[h + pt, w + pl, c]


@cpu_inline
def _rows(xp, cf, Q, geo, la, lb, scatter):
    """Rows la..lb of the pixel-major column matrix: cf[l - la, (r*S + s)*C + c] is
    xp[p*sh + r*dh, q*sw + s*dw, c] for l = p*Q + q. ``scatter``: the transpose, adding the
    rows back into xp (the input gradient)."""
    _, R, S, sh, sw, dh, dw, _, _ = geo
    Hp, Wp, C = xp.shape
    J = R * S * C
    run = S * C if dw == 1 else C  # contiguous values per copy
    xf = xp.reshape(xp.size)
    for l in range(la, lb):
        p, q = l // Q, l % Q
        for r in range(R):
            for s in range(0, S, S if dw == 1 else 1):
                a = np.uint64(((p * sh + r * dh) * Wp + q * sw + s * dw) * C)
                o = np.uint64((l - la) * J + (r * S + s) * C)
                if scatter:
                    for i in range(run):
                        xf[a + np.uint64(i)] += cf[o + np.uint64(i)]
                else:
                    for i in range(run):
                        cf[o + np.uint64(i)] = xf[a + np.uint64(i)]


@cpu_kernel
def conv2d_forward_pixels(x, wp, b, xp, colt, yt, y, P, Q, geo):
    """y[n] = conv2d(x[n]) + b through pixel-major column blocks; wp is (K, R*S*C), scratch
    per chunk t: colt[t] (block rows, R*S*C), yt[t] (block rows, K); xp (padded HWC images)
    has one per chunk, or one per sample (N of them: kept for the backward)."""
    pt, pl = geo[7], geo[8]
    N, K = y.shape[0], y.shape[1]
    T, B, J = colt.shape
    L = P * Q
    for t in prange(T):
        cf, ytf = colt[t].reshape(B * J), yt[t].reshape(B * K)
        for n in range(t * N // T, (t + 1) * N // T):
            xpn = xp[n] if xp.shape[0] == N else xp[t]
            _to_hwc(x[n], xpn, pt, pl)
            yn = y[n].reshape(K, L)
            for la in range(0, L, B):
                lb = min(L, la + B)
                _rows(xpn, cf, Q, geo, la, lb, False)
                gemm(False, True, lb - la, K, J, cf, J, wp.reshape(K * J), J, 0, ytf, K)
                for k in range(K):
                    bk = b[k] if b.size else yn.dtype.type(0)
                    for l in range(la, lb):
                        yn[k, l] = yt[t, l - la, k] + bk


@cpu_kernel
def conv2d_backward_pixels(x, wp, gy, xp, gxp, colt, part, gx, P, Q, geo, want_gx):
    """part[t] = chunk t's weight gradient, columns (r, s, c); gx[n] (when ``want_gx``) =
    the input gradient, gathered in the padded HWC scratch gxp[t] and transposed back. xp:
    the forward's padded HWC images of x, one per sample."""
    pt, pl = geo[7], geo[8]
    N, K = gy.shape[0], gy.shape[1]
    T, B, J = colt.shape
    L = P * Q
    for t in prange(T):
        cf, pf = colt[t].reshape(B * J), part[t].reshape(K * J)
        n0 = t * N // T
        for n in range(n0, (t + 1) * N // T):
            xpn = xp[n]
            if want_gx:
                gxp[t].reshape(gxp[t].size)[:] = 0
            gyf = gy[n].reshape(K * L)
            for la in range(0, L, B):
                lb = min(L, la + B)
                _rows(xpn, cf, Q, geo, la, lb, False)
                # part[t] (+)= gy[n][:, la:lb] @ colt block; the block's column-matrix gradient
                # = gy[n][:, la:lb]^T @ wp, added back into the image
                gemm(False, False, K, J, lb - la, gyf[la:], L, cf, J, 0 if n == n0 and la == 0 else 1, pf, J)
                if want_gx:
                    gemm(True, False, lb - la, J, K, gyf[la:], L, wp.reshape(K * J), J, 0, cf, J)
                    _rows(gxp[t], cf, Q, geo, la, lb, True)
            if want_gx:
                _from_hwc(gxp[t], gx[n], pt, pl)


@cpu_inline
def _bias_sum(gy3, k):
    """The sum of gy3[:, k, :] (a bias gradient; a caller's REASSOC lets it run in lanes)."""
    acc = gy3.dtype.type(0)
    for n in range(gy3.shape[0]):
        for i in range(gy3.shape[2]):
            acc += gy3[n, k, i]
    return acc


@cpu_kernel(fastmath=REASSOC)  # the bias sum runs in vector lanes; NaN/Inf still propagate
def conv2d_reduce(part, gw2, gy3, gb, RS):
    """gw2 += the chunks' partials summed; gb += gy3 summed over samples and pixels (if any).
    RS = R*S > 0: the partials' columns are in the pixel-major order (r, s, c), not (c, r, s)."""
    T, K, J = part.shape
    for k in prange(K):
        for j in range(J):
            jp = j if RS == 0 else (j % RS) * (J // RS) + j // RS
            s = part[0, k, jp]
            for t in range(1, T):
                s += part[t, k, jp]
            gw2[k, j] += s
        if gb.size:
            gb[k] += _bias_sum(gy3, k)


def _per_group(a: np.ndarray, G: int, L: int) -> np.ndarray:
    # (rows, G, per-group rows, L) view of column matrices, or of x itself on the direct path.
    return a.reshape(a.shape[0], G, -1, L)


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, col: np.ndarray | None,
                   geo: Geometry, chunks: int) -> None:
    """y = conv2d(x, w) + b (b empty: no bias), in ``chunks`` chunks of the batch. ``col``
    (chunks, C*R*S, P*Q) is scratch, one column matrix per chunk; None on the direct (1x1) path."""
    G = geo[0]
    N, K, P, Q = y.shape
    x4 = _per_group(x, G, x.shape[2] * x.shape[3])
    with single_thread_blas:
        conv2d_forward_batch(x, x4, w.reshape(G, K // G, -1), b, x4 if col is None else _per_group(col, G, P * Q),
                             _per_group(y, G, P * Q), chunks, P, Q, geo, col is None)


def conv2d_backward(x: np.ndarray, w: np.ndarray, gy: np.ndarray, gw: np.ndarray, gb: np.ndarray,
                    gx: np.ndarray | None, col: np.ndarray | None, part: np.ndarray, geo: Geometry) -> None:
    """gw += the weight gradient, gb += the bias gradient (gb empty: no bias), gx = the input
    gradient (None: not wanted). Scratch: ``part`` (T, K, C/G*R*S), ``col`` (T, C*R*S, P*Q)
    (None on the direct path), T chunks of the batch."""
    G = geo[0]
    N, K, P, Q = gy.shape
    T, J = part.shape[0], part.shape[2]
    x4 = _per_group(x, G, x.shape[2] * x.shape[3])
    gxa = x if gx is None else gx  # never written when gx is not wanted
    gx4 = _per_group(gxa, G, x.shape[2] * x.shape[3])
    with single_thread_blas:
        conv2d_backward_chunks(x, x4, w.reshape(G, K // G, J), _per_group(gy, G, P * Q),
                               x4 if col is None else _per_group(col, G, P * Q), part.reshape(T, G, K // G, J),
                               gxa, gx4, P, Q, geo, col is None, gx is not None)
        conv2d_reduce(part, gw.reshape(K, J), gy.reshape(N, K, P * Q), gb, 0)


# Column-matrix block of the pixel-major path: at most this many elements (384 KiB of float32).
_BLOCK_ELEMENTS = 96 * 1024


def pixel_block(L: int, J: int) -> int:
    """Output pixels per column-matrix block of the pixel-major path (J = C*R*S columns)."""
    return max(1, min(L, _BLOCK_ELEMENTS // J))


def conv2d_forward_hwc(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, wp: np.ndarray,
                       xp: np.ndarray, colt: np.ndarray, yt: np.ndarray, geo: Geometry) -> None:
    """y = conv2d(x, w) + b on the pixel-major path (groups 1). ``wp`` (K, R, S, C) receives
    the weights in column order (the backward takes them from there). Scratch: ``xp``
    (T or N, padded H, padded W, C; N: kept for the backward), and per chunk of the batch
    ``colt`` (T, B, C*R*S) and ``yt`` (T, B, K), B = pixel_block(...)."""
    np.copyto(wp, w.transpose(0, 2, 3, 1))
    with single_thread_blas:
        conv2d_forward_pixels(x, wp.reshape(wp.shape[0], -1), b, xp, colt, yt, y, y.shape[2], y.shape[3], geo)


def conv2d_backward_hwc(x: np.ndarray, gy: np.ndarray, gw: np.ndarray, gb: np.ndarray, gx: np.ndarray | None,
                        wp: np.ndarray, xp: np.ndarray, gxp: np.ndarray | None, colt: np.ndarray,
                        part: np.ndarray, geo: Geometry) -> None:
    """The pixel-major backward: gw += the weight gradient, gb += the bias gradient, gx = the
    input gradient (None: not wanted; then ``gxp`` may be None too). ``wp`` and ``xp`` (one
    image per sample) as the forward left them; scratch ``gxp`` (T, padded H, padded W, C) and
    ``part`` (T, K, C*R*S)."""
    N, K, P, Q = gy.shape
    with single_thread_blas:
        conv2d_backward_pixels(x, wp.reshape(K, -1), gy, xp, xp if gxp is None else gxp, colt, part,
                               x if gx is None else gx, P, Q, geo, gx is not None)
        conv2d_reduce(part, gw.reshape(K, -1), gy.reshape(N, K, P * Q), gb, geo[1] * geo[2])
