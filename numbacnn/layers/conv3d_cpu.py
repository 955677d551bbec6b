"""conv3d CPU: per-sample vol2col and BLAS products inside parallel Numba kernels.

conv2d_cpu's channel-major scheme one axis up. Each of T chunks of the batch is one parallel
task; for each of its samples it builds the column matrix col[t] (rows (c, t, r, s), columns
the output positions (d, p, q)) and multiplies it with ``gemm`` (numbacnn._blas, one BLAS
thread): y[n, g] = w[g] @ col[t, g] lands in NCDHW order with no transposes. The matrix is
built a block of output depths at a time (the products write their columns of y with a row
stride), so its scratch stays a few MB however long the clip.

The weight gradient sums gy[n, g] @ col[t, g]^T over the chunk's samples into the chunk's own
partial; ``_reduce`` adds the partials in a fixed order afterwards, so no two threads write
one element. The input gradient is per sample: col[t] = w^T @ gy[n], then col2vol adds each
column entry back where vol2col read it, into gx[n], which only that sample's task touches.
``geo`` is (groups, T, R, S, stride_d, stride_h, stride_w, dilation_d, dilation_h, dilation_w,
pad_front, pad_top, pad_left).
"""

from __future__ import annotations

import numpy as np

from .._blas import gemm
from .._jit import cpu_inline, cpu_kernel, cpu_serial, prange
from .._threads import single_thread_blas
from ._conv_columns import valid as _valid

# Column-matrix block per chunk of the batch: at most this many elements (1 MiB of float32)
# unless one output depth plane needs more. Without a cap a clip's matrix is C*T*R*S times
# its output, hundreds of MB; and a block that stays in cache between the copy and the
# products was faster: (8, 16, 8, 32, 32) -> 32, 3x3x3, forward 87 ms with 16 MiB blocks,
# 70 ms with 4 MiB blocks of two planes, 62 ms with one plane (1.7 MiB), 2 threads.
_BLOCK_ELEMENTS = 1 << 18

__all__ = ["conv3d_scratch", "conv3d_forward", "conv3d_backward"]


# Both copies index flat views with unsigned offsets and copy each output row's valid run of
# taps in one loop (_conv_columns.valid finds it): per-element bounds checks and signed
# indexing kept LLVM from vectorising them.
@cpu_inline
def _vol2col(xn, cf, da, db, Po, Qo, geo):
    """The column matrix of output depths da..db-1, rows of L = (db - da)*Po*Qo:
    cf[(((c*T + i)*R + j)*S + l)*L + ((d - da)*Po + p)*Qo + q] = xn[c, d*sd + i*dd - pd,
    p*sh + j*dh - ph, q*sw + l*dw - pw], or 0 outside xn."""
    _, T, R, S, sd, sh, sw, dd, dh, dw, pd, ph, pw = geo
    C, D, H, W = xn.shape
    L = (db - da) * Po * Qo
    zero = xn.dtype.type(0)
    xf = xn.reshape(xn.size)
    for c in range(C):
        for i in range(T):
            d0, d1 = _valid(db, D, sd, i * dd - pd)
            for j in range(R):
                p0, p1 = _valid(Po, H, sh, j * dh - ph)
                for l in range(S):
                    off = l * dw - pw
                    q0, q1 = _valid(Qo, W, sw, off)
                    row = np.uint64((((c * T + i) * R + j) * S + l) * L)
                    for d in range(da, db):
                        for p in range(Po):
                            o = row + np.uint64(((d - da) * Po + p) * Qo)
                            inside = d >= d0 and d < d1 and p >= p0 and p < p1
                            lo, hi = (q0, q1) if inside else (Qo, Qo)  # [lo, hi) copied, the rest 0
                            for q in range(lo):
                                cf[o + np.uint64(q)] = zero
                            if hi > lo:
                                src = np.uint64(((c * D + d * sd + i * dd - pd) * H + p * sh + j * dh - ph) * W
                                                + lo * sw + off)
                                dst = o + np.uint64(lo)
                                if sw == 1:
                                    for e in range(hi - lo):
                                        cf[dst + np.uint64(e)] = xf[src + np.uint64(e)]
                                else:
                                    for e in range(hi - lo):
                                        cf[dst + np.uint64(e)] = xf[src + np.uint64(e * sw)]
                            for q in range(hi, Qo):
                                cf[o + np.uint64(q)] = zero


@cpu_inline
def _col2vol(cf, gxn, da, db, Po, Qo, geo):
    """gxn += the entries of a column matrix of output depths da..db-1 (as _vol2col lays it
    out), each where _vol2col would have copied it from."""
    _, T, R, S, sd, sh, sw, dd, dh, dw, pd, ph, pw = geo
    C, D, H, W = gxn.shape
    L = (db - da) * Po * Qo
    gf = gxn.reshape(gxn.size)
    for c in range(C):
        for i in range(T):
            d0, d1 = _valid(db, D, sd, i * dd - pd)
            for j in range(R):
                p0, p1 = _valid(Po, H, sh, j * dh - ph)
                for l in range(S):
                    off = l * dw - pw
                    q0, q1 = _valid(Qo, W, sw, off)
                    if q1 == q0:
                        continue
                    row = np.uint64((((c * T + i) * R + j) * S + l) * L + q0)
                    for d in range(max(d0, da), d1):
                        for p in range(p0, p1):
                            o = row + np.uint64(((d - da) * Po + p) * Qo)
                            dst = np.uint64(((c * D + d * sd + i * dd - pd) * H + p * sh + j * dh - ph) * W
                                            + q0 * sw + off)
                            if sw == 1:
                                for e in range(q1 - q0):
                                    gf[dst + np.uint64(e)] += cf[o + np.uint64(e)]
                            else:
                                for e in range(q1 - q0):
                                    gf[dst + np.uint64(e * sw)] += cf[o + np.uint64(e)]


@cpu_serial
def _forward_chunk(x, w3, b, cf, y4, n0, n1, Do, Po, Qo, geo):
    """Samples n0..n1 of _forward, one chunk's, through its column matrix cf. A function of its
    own, not the parallel loop's body (as conv2d's): _forward compiled in 2.31 s instead of
    3.31, _backward (_backward_chunk) in 3.53 against 5.82, and both ran as fast or faster
    (8->16 3x3x3 at 8x16x16, batch 16: forward 3.50-3.52 against 3.78-3.90 ms, backward 7.1-7.4
    against 7.6-8.0; /work/probe/s13/c3c.py)"""
    _, G, Kg, L = y4.shape
    J, M = w3.shape[2], Po * Qo
    nd = cf.shape[0] // (G * J * M)  # output depths per column-matrix block
    for n in range(n0, n1):
        yn = y4[n].reshape(G * Kg * L)
        for da in range(0, Do, nd):
            db = min(Do, da + nd)
            lb = (db - da) * M
            _vol2col(x[n], cf, da, db, Po, Qo, geo)
            for g in range(G):  # y4[n, g, :, block] = w3[g] @ (the block's column matrix of group g)
                gemm(False, False, Kg, lb, J, w3[g].reshape(Kg * J), J, cf[g * J * lb:], lb, 0,
                     yn[g * Kg * L + da * M:], L)
        if b.size:
            for g in range(G):
                for k in range(Kg):
                    bk = b[g * Kg + k]
                    for i in range(L):
                        y4[n, g, k, i] += bk


@cpu_kernel
def _forward(x, w3, b, col, y4, Do, Po, Qo, geo):
    N, T = y4.shape[0], col.shape[0]
    for t in prange(T):
        _forward_chunk(x, w3, b, col[t], y4, t * N // T, (t + 1) * N // T, Do, Po, Qo, geo)


@cpu_serial
def _backward_chunk(x, w3, gy4, cf, part, gx, n0, n1, Do, Po, Qo, geo, want_gx):
    """Samples n0..n1 of _backward, one chunk's: its column matrix cf and partial part."""
    _, G, Kg, L = gy4.shape
    J, M = w3.shape[2], Po * Qo
    nd = cf.shape[0] // (G * J * M)
    for n in range(n0, n1):
        gyn = gy4[n].reshape(G * Kg * L)
        if want_gx:
            gxf = gx[n].reshape(gx[n].size)
            for e in range(gxf.size):
                gxf[e] = gx.dtype.type(0)
        for da in range(0, Do, nd):
            db = min(Do, da + nd)
            lb = (db - da) * M
            _vol2col(x[n], cf, da, db, Po, Qo, geo)
            for g in range(G):  # part[g] (+)= gy4[n, g, :, block] @ (the block's columns)^T
                gemm(False, True, Kg, J, lb, gyn[g * Kg * L + da * M:], L, cf[g * J * lb:], lb,
                     0 if n == n0 and da == 0 else 1, part[g].reshape(Kg * J), J)
            if want_gx:
                for g in range(G):  # the block's columns = w3[g]^T @ gy4[n, g, :, block]
                    gemm(True, False, J, lb, Kg, w3[g].reshape(Kg * J), J, gyn[g * Kg * L + da * M:], L, 0,
                         cf[g * J * lb:], lb)
                _col2vol(cf, gx[n], da, db, Po, Qo, geo)


@cpu_kernel
def _backward(x, w3, gy4, col, part, gx, Do, Po, Qo, geo, want_gx):
    N, T = gy4.shape[0], col.shape[0]
    for t in prange(T):
        _backward_chunk(x, w3, gy4, col[t], part[t], gx, t * N // T, (t + 1) * N // T, Do, Po, Qo, geo, want_gx)


@cpu_kernel
def _reduce(part, gw2, gy3, gb):
    """gw2 += the sum of the chunks' partials, gb += gy3's sum over samples and positions."""
    T, K, J = part.shape
    N, _, L = gy3.shape
    for k in prange(K):
        for j in range(J):
            s = part[0, k, j]
            for t in range(1, T):
                s += part[t, k, j]
            gw2[k, j] += s
        if gb.size:
            s = gy3.dtype.type(0)
            for n in range(N):
                for i in range(L):
                    s += gy3[n, k, i]
            gb[k] += s


def conv3d_scratch(x_shape: tuple, w_shape: tuple, y_shape: tuple, chunks: int) -> tuple[tuple, tuple]:
    """Shapes of the scratch arrays the kernels take: per chunk of the batch, a column matrix
    of C*T*R*S rows for as many output depths as _BLOCK_ELEMENTS allows (one at least), and a
    weight-gradient partial (K, C/G*T*R*S)."""
    K, J = w_shape[0], int(np.prod(w_shape[1:]))
    rows, plane = x_shape[1] * int(np.prod(w_shape[2:])), y_shape[3] * y_shape[4]
    depths = max(1, min(y_shape[2], _BLOCK_ELEMENTS // (rows * plane)))
    return (chunks, rows * depths * plane), (chunks, K, J)


def conv3d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, col: np.ndarray,
                   geo: tuple[int, ...]) -> None:
    """y = conv3d(x, w) + b (b empty: no bias); ``col`` as conv3d_scratch gives it."""
    G = geo[0]
    N, K, Do, Po, Qo = y.shape
    with single_thread_blas:
        _forward(x, w.reshape(G, K // G, -1), b, col, y.reshape(N, G, K // G, -1), Do, Po, Qo, geo)


def conv3d_backward(x: np.ndarray, w: np.ndarray, gy: np.ndarray, gw: np.ndarray, gb: np.ndarray,
                    gx: np.ndarray | None, col: np.ndarray, part: np.ndarray, geo: tuple[int, ...]) -> None:
    """gw += the weight gradient, gb += the bias gradient (gb empty: no bias), gx = the input
    gradient (None: not wanted). ``col`` and ``part`` as conv3d_scratch gives them."""
    G = geo[0]
    N, K, Do, Po, Qo = gy.shape
    T, _, J = part.shape
    with single_thread_blas:
        _backward(x, w.reshape(G, K // G, J), gy.reshape(N, G, K // G, -1), col, part.reshape(T, G, K // G, J),
                  x if gx is None else gx, Do, Po, Qo, geo, gx is not None)
        _reduce(part, gw.reshape(K, J), gy.reshape(N, K, -1), gb)
