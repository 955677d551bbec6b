"""max_pool3d CPU kernels: (N, C, D, H, W) arrays, parallel over the N*C volumes (serial
under ``PARALLEL_MIN`` input elements, see ``_threads``; 3x3 windows in inference under
POOL3_PARALLEL_MIN and POOL3_SAME_PARALLEL_MIN, below). They serve max_pool1d and max_pool2d too,
on (N, C, 1, 1, L) and (N, C, 1, H, W) views.

``geometry`` is (T, R, S, stride_d, stride_h, stride_w, pad_d, pad_h, pad_w, dilation_d,
dilation_h, dilation_w). The interface, the same in max_pool3d_cuda.py:
``max_pool3d_forward(x, geometry, y, index)`` writes y and index (int32 flat in-volume
positions of the maxima, -1 for a window of padding alone; an empty index asks for y alone,
as inference does);
``max_pool3d_backward_input(gy, index, geometry, gx)`` writes all of gx.
"""

from typing import Any

import numpy as np

from .._jit import cpu_inline, cpu_kernel, prange
from .._threads import PARALLEL_MIN, batch_chunks
from ._conv_columns import valid as _valid
from ._max_pool2d_cpu import (_flat2x2, _forward_2x2, _forward_3x3, _rows_2x2, _rows_3x3s2, _rows2x2, _rows3x3s2,
                              _three, _values_2x2, rows2x2, rows3x3s2, values3x3)
from ._pool3d_rules import window_max

__all__ = ["max_pool3d_forward", "max_pool3d_backward_input"]


# Unsigned indices below: a signed one gets a negative-index check per element, which keeps
# LLVM from vectorising (39 ms against 5.9 ms for a 3x3 pool of (8, 192, 28, 28), one thread).
@cpu_inline
def _row_max(xf, yf, jf, base, o, q0, q1):
    """yf[o + q], jf[o + q] = the running maximum and its flat index, updated with
    xf[base + q] for q0 <= q < q1 (all inside xf)."""
    for q in range(q0, q1):
        i, k = np.uint64(base + q), np.uint64(o + q)
        v, best = xf[i], yf[k]
        take = (v > best) | (v != v) | (jf[k] < 0)
        yf[k] = v if take else best
        jf[k] = np.int32(i) if take else jf[k]


# Inlined at Numba's IR level like the helpers here: left to LLVM as a plain jitable call, the
# general window path measured up to 1.5x slower (one thread, 3x3 stride-2 pool, noisy).
_window_max = cpu_inline(window_max)


@cpu_inline
def _max2x2(x, n, c, d, h, w, best, at):
    """(best, at) updated with the 2x2 window at (d, h, w) of volume (n, c), all inside x: the
    loop of _pool3d_rules.window_max, unrolled."""
    H, W = x.shape[3], x.shape[4]
    o = (d * H + h) * W + w
    for v, i in ((x[n, c, d, h, w], o), (x[n, c, d, h, w + 1], o + 1),
                 (x[n, c, d, h + 1, w], o + W), (x[n, c, d, h + 1, w + 1], o + W + 1)):
        if at < 0 or v > best or v != v:
            best, at = v, i
    return best, at


@cpu_inline
def _windows_volume(x, geometry, y, index, nc, D2, P2, Q2):
    """Volume nc = n * C + c of _forward_windows. Inlined into both of the kernel's loops (so
    it compiles twice, 3.2 s for the kernel): called instead (1.3 s), the general windows ran
    5-15% slower (64 x 32 x 24 x 24, 3x3 stride 3: 252-291 against 226-239 us inference; 4x4
    stride 2 5431-5471 against 5008-5033), though ceil-mode 2x2 windows ran faster."""
    T, R, S, sd, sh, sw, pd, ph, pw, dd, dh, dw = geometry
    C = x.shape[1]
    Do, P, Q = y.shape[2], y.shape[3], y.shape[4]
    lowest = x.dtype.type(-np.inf)
    n, c = nc // C, nc % C
    for od in range(Do):
        for p in range(P):
            q0 = Q2 if od < D2 and p < P2 else 0
            # The first depth tap in its own loop: with a loop over the taps around it,
            # the 2-D case (T = 1) ran 3-4x slower.
            for q in range(q0):
                y[n, c, od, p, q], index[n, c, od, p, q] = _max2x2(x, n, c, od * sd, p * sh, q * sw, lowest, -1)
            for t in range(1, T):
                for q in range(q0):
                    y[n, c, od, p, q], index[n, c, od, p, q] = _max2x2(
                        x, n, c, od * sd + t * dd, p * sh, q * sw, y[n, c, od, p, q], index[n, c, od, p, q])
            for q in range(q0, Q):
                y[n, c, od, p, q], index[n, c, od, p, q] = _window_max(x, n, c, od, p, q, geometry)


@cpu_kernel
def _forward_windows(x, geometry, y, index):
    """Window at a time, with an unrolled case for unpadded 2x2 windows wholly inside x."""
    T, R, S, sd, sh, sw, pd, ph, pw, dd, dh, dw = geometry
    N, C, D, H, W = x.shape
    Do, P, Q = y.shape[2], y.shape[3], y.shape[4]
    # Outputs od < D2, p < P2, q < Q2 have their window inside x. Ceil mode can add a last
    # row or column of windows hanging past an odd input: those take the checked loop.
    D2, P2, Q2 = 0, 0, 0
    if pd == 0 and ph == 0 and pw == 0 and R == 2 and S == 2 and dh == 1 and dw == 1:
        D2, P2, Q2 = _valid(Do, D, sd, (T - 1) * dd)[1], _valid(P, H, sh, 1)[1], _valid(Q, W, sw, 1)[1]
    if x.size < PARALLEL_MIN:
        for nc in range(N * C):
            _windows_volume(x, geometry, y, index, nc, D2, P2, Q2)
    else:
        for nc in prange(N * C):
            _windows_volume(x, geometry, y, index, nc, D2, P2, Q2)


@cpu_inline
def _rows_volume(x, geometry, y, index, nc):
    """Volume nc = n * C + c of _forward_rows."""
    T, R, S, sd, sh, sw, pd, ph, pw, dd, dh, dw = geometry
    C, D, H, W = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    Do, P, Q = y.shape[2], y.shape[3], y.shape[4]
    lowest = x.dtype.type(-np.inf)
    n, c = nc // C, nc % C
    xf, yf, jf = x[n, c].reshape(D * H * W), y[n, c].reshape(Do * P * Q), index[n, c].reshape(Do * P * Q)
    for i in range(Do * P * Q):
        yf[i] = lowest
        jf[i] = -1
    for od in range(Do):
        for p in range(P):
            for t in range(T):
                d = od * sd - pd + t * dd
                if d < 0 or d >= D:
                    continue
                for r in range(R):
                    h = p * sh - ph + r * dh
                    if h >= 0 and h < H:
                        for s in range(S):
                            # q0 <= q < q1: the outputs whose column-s tap is inside x
                            q0, q1 = _valid(Q, W, 1, s * dw - pw)
                            _row_max(xf, yf, jf, (d * H + h) * W + s * dw - pw, (od * P + p) * Q, q0, q1)


@cpu_kernel
def _forward_rows(x, geometry, y, index):
    """Stride-1 width (Inception's 3x3 pool): each output row is its own running maximum,
    one vectorised pass per tap (t, r, s) over the outputs whose tap is inside x; the taps are
    visited in the window loop's order, so ties and NaNs resolve alike (3.7x faster than
    window at a time on (8, 192, 28, 28); at stride 2 the passes are slower)."""
    N, C = x.shape[0], x.shape[1]
    if x.size < PARALLEL_MIN:
        for nc in range(N * C):
            _rows_volume(x, geometry, y, index, nc)
    else:
        for nc in prange(N * C):
            _rows_volume(x, geometry, y, index, nc)


# 3x3 windows (``_three``) in inference (values alone) run in parallel from fewer input values
# than PARALLEL_MIN: stride 2 (_rows3x3s2) from POOL3_PARALLEL_MIN, the others (_forward_3x3) from
# POOL3_SAME_PARALLEL_MIN; below, in the calling thread (values3x3: no parallel region). Training
# (indices kept) keeps PARALLEL_MIN. Batch 1, 2 threads, us (/work/probe/s31/pool2.py, pool3.py):
# stride 2, serial / two chunks: 32x32x32 16.4 / 13.4, 128x16x16 18.4 / 13.1, 224x8x8 12.1 / 10.1,
# 32x16x16 5.0 / 4.6, 16x16x16 3.6 / 4.2; stride 1, one chunk in a parallel region / two / serial:
# 64x16x16 9.6 / 7.2-8.4 / 9.9, 160x8x8 8.4 / 4.8-7.1 / 5.0, 32x16x16 6.8 / 4.5-6.7 / 5.8, 112x8x8
# 6.6 / 4.2-6.0 / 3.8, 224x4x4 7.1 / 4.5-6.0 / 4.3.
POOL3_PARALLEL_MIN = 1 << 13
POOL3_SAME_PARALLEL_MIN = 1 << 14


def max_pool3d_forward(x: Any, geometry: tuple, y: Any, index: Any) -> None:
    three = _three(geometry, x.shape)
    s2 = three and rows3x3s2(geometry, x.shape, y.shape, index.size)  # values alone (an empty index) only
    least = PARALLEL_MIN
    if three and not index.size:
        least = POOL3_PARALLEL_MIN if s2 else POOL3_SAME_PARALLEL_MIN
    chunks = 1 if x.size < least else batch_chunks(x.shape[0] * x.shape[1])
    rows = y.shape[0] * y.shape[1] * y.shape[3]
    if _flat2x2(geometry, x.shape, y.shape):
        if index.size:
            _forward_2x2(x, y, index, chunks)
        elif not rows2x2(x.shape, y.shape, index.size):
            _values_2x2(x, y, chunks)
        elif chunks == 1:  # the serial body itself: no parallel region to enter
            _rows2x2(x, y, 0, rows)
        else:
            _rows_2x2(x, y, chunks)
    elif three:
        if not s2:
            if chunks == 1 and not index.size:
                values3x3(x, geometry, y)
            else:
                _forward_3x3(x, geometry, y, index, chunks)
        elif chunks == 1:
            _rows3x3s2(x, y, 0, rows)
        else:
            _rows_3x3s2(x, y, chunks)
    else:
        if index.size == 0:  # values only asked for: these kernels find them with the indices
            index = np.empty(y.shape, np.int32)
        (_forward_rows if geometry[5] == 1 else _forward_windows)(x, geometry, y, index)


@cpu_inline
def _backward_volume(gy, index, gx, nc):
    C, D, H, W = gx.shape[1], gx.shape[2], gx.shape[3], gx.shape[4]
    Do, P, Q = gy.shape[2], gy.shape[3], gy.shape[4]
    zero = gx.dtype.type(0)
    n, c = nc // C, nc % C
    gf, gyf, jf = gx[n, c].reshape(D * H * W), gy[n, c].reshape(Do * P * Q), index[n, c].reshape(Do * P * Q)
    for i in range(D * H * W):
        gf[i] = zero
    for o in range(Do * P * Q):
        at = jf[o]
        if at >= 0:
            gf[at] += gyf[o]


@cpu_kernel
def max_pool3d_backward_input(gy, index, geometry, gx):
    N, C = gx.shape[0], gx.shape[1]
    # Overlapping windows can route two outputs to one input: each iteration owns a whole
    # (n, c) volume, so the scatter below never races.
    if gx.size < PARALLEL_MIN:
        for nc in range(N * C):
            _backward_volume(gy, index, gx, nc)
    else:
        for nc in prange(N * C):
            _backward_volume(gy, index, gx, nc)
