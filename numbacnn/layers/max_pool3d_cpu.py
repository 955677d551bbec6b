"""max_pool3d CPU kernels: (N, C, D, H, W) arrays, parallel over the N*C volumes (serial
under ``PARALLEL_MIN`` input elements, see ``_threads``). They serve max_pool1d and
max_pool2d too, on (N, C, 1, 1, L) and (N, C, 1, H, W) views.

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
    """Volume nc = n * C + c of _forward_windows."""
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


def _flat2x2(geometry: tuple, x_shape: tuple, y_shape: tuple) -> bool:
    """2-D, 2x2 windows at stride 2, unpadded, undilated, none hanging past x (ceil mode)."""
    T, R, S, _, sh, sw, pd, ph, pw, _, dh, dw = geometry
    return ((T, R, S, sh, sw, pd, ph, pw, dh, dw) == (1, 2, 2, 2, 2, 0, 0, 0, 1, 1) and x_shape[2] == 1
            and 2 * y_shape[3] <= x_shape[3] and 2 * y_shape[4] <= x_shape[4])


@cpu_inline
def _later(best, at, v, i):
    # window_max's rule for a run of taps (v, i) after (best, at): strict '>' keeps the first
    # maximum, the last NaN wins
    t = (v > best) | (v != v)
    return (v if t else best), (i if t else at)


@cpu_inline
def _larger(best, v):
    # _later's value alone: which of equal maxima, or of NaNs, wins does not show in it
    return v if (v > best) | (v != v) else best


@cpu_inline
def _plane2x2(xf, yf, jf, nc, H, W, P, Q):
    """Plane nc of _forward_2x2: _max2x2's taps and rule unrolled over flat arrays, with
    unsigned offsets and selects instead of branches."""
    ib, ob = np.uint64(nc * H * W), np.uint64(nc * P * Q)
    for p in range(P):
        row, o = ib + np.uint64(2 * p * W), ob + np.uint64(p * Q)
        for q in range(Q):
            i = row + np.uint64(2 * q)
            a, b, c, d = xf[i], xf[i + np.uint64(1)], xf[i + np.uint64(W)], xf[i + np.uint64(W + 1)]
            at = np.int32(2 * p * W + 2 * q)
            best, k = _later(a, np.int32(0), b, np.int32(1))
            best, k = _later(best, k, c, np.int32(W))
            best, k = _later(best, k, d, np.int32(W + 1))
            yf[o + np.uint64(q)] = best
            jf[o + np.uint64(q)] = at + k


@cpu_inline
def _values2x2(xf, yf, nc, H, W, P, Q):
    """_plane2x2's values alone (no index wanted: inference)."""
    ib, ob = np.uint64(nc * H * W), np.uint64(nc * P * Q)
    for p in range(P):
        row, o = ib + np.uint64(2 * p * W), ob + np.uint64(p * Q)
        for q in range(Q):
            i = row + np.uint64(2 * q)
            top = _larger(xf[i], xf[i + np.uint64(1)])
            bottom = _larger(xf[i + np.uint64(W)], xf[i + np.uint64(W + 1)])
            yf[o + np.uint64(q)] = _larger(top, bottom)


@cpu_kernel
def _forward_2x2(x, y, index, chunks):
    """2-D, 2x2 windows at stride 2, unpadded, undilated, every window inside x (network3's
    pools): 3x faster than _forward_windows (batch 10, one thread: 79 -> 29 us on 20x24x24,
    33 -> 12 us on 40x8x8), in ``chunks`` parallel chunks of the planes. An empty index:
    values only."""
    N, C, _, H, W = x.shape
    P, Q = y.shape[3], y.shape[4]
    xf, yf, jf = x.reshape(x.size), y.reshape(y.size), index.reshape(index.size)
    NC = N * C
    for t in prange(chunks):
        for nc in range(t * NC // chunks, (t + 1) * NC // chunks):
            if jf.size:
                _plane2x2(xf, yf, jf, nc, H, W, P, Q)
            else:
                _values2x2(xf, yf, nc, H, W, P, Q)


def _three(geometry: tuple, x_shape: tuple) -> bool:
    """2-D, 3x3 windows, undilated, padding 0 or 1 (GoogLeNet's, Inception's and ResNet's
    pools). _forward_3x3 against the kernels they took before, one thread, batch 64, CPU time,
    busy machine: stride 1, padding 1 (_forward_rows) 32x16x16 5.6 -> 1.7 ms, 160x8x8 12.5 -> 3.2 ms,
    224x4x4 7.7 -> 1.3 ms; stride 2, padding 1 (_forward_windows) 32x32x32 25.6 -> 4.0 ms,
    112x16x16 21.9 -> 4.8 ms, 224x8x8 10.9 -> 2.6 ms."""
    T, R, S, _, _, _, _, ph, pw, _, dh, dw = geometry
    return (T, R, S, dh, dw) == (1, 3, 3, 1, 1) and x_shape[2] == 1 and max(ph, pw) <= 1


@cpu_inline
def _row3(xf, ib, i0, i1, i2):
    best, at = _later(xf[ib + np.uint64(i0)], np.int32(i0), xf[ib + np.uint64(i1)], np.int32(i1))
    return _later(best, at, xf[ib + np.uint64(i2)], np.int32(i2))


@cpu_inline
def _plane3x3(xf, yf, jf, nc, H, W, P, Q, geometry, hv, hj):
    """Plane nc of _forward_3x3: the three-tap fold of every row of x once for each output
    column (hv, hj: this thread's (H, Q) values and indices), then each output the fold of the
    three rows its window spans, in order: the rule is associative over ordered runs (a later
    run wins when strictly larger or NaN), so this is window_max's fold, with four
    compare-selects instead of eight. A tap past an edge of x reads the nearest row or column
    of the window inside x instead (clamped): a repeated row is a whole block next to its
    original and a repeated column sits next to its own, so the elements' first appearances
    and their last appearances keep the window's order, and the fold still finds the first of
    equal maxima and the last NaN."""
    sh, sw, ph, pw = geometry[4], geometry[5], geometry[7], geometry[8]
    ib, ob = np.uint64(nc * H * W), np.uint64(nc * P * Q)
    for h in range(H):
        base, hq = h * W, np.uint64(h * Q)
        for q in range(Q):
            w = q * sw - pw
            best, at = _row3(xf, ib, base + max(w, 0), base + min(max(w + 1, 0), W - 1), base + min(w + 2, W - 1))
            hv[hq + np.uint64(q)] = best
            hj[hq + np.uint64(q)] = at
    for p in range(P):
        h = p * sh - ph
        r0, r1 = np.uint64(max(h, 0) * Q), np.uint64(min(max(h + 1, 0), H - 1) * Q)
        r2 = np.uint64(min(h + 2, H - 1) * Q)
        o = ob + np.uint64(p * Q)
        for q in range(Q):
            u = np.uint64(q)
            best, at = _later(hv[r0 + u], hj[r0 + u], hv[r1 + u], hj[r1 + u])
            best, at = _later(best, at, hv[r2 + u], hj[r2 + u])
            yf[o + u] = best
            jf[o + u] = at


@cpu_inline
def _rows3(xf, t, ib, H, W):
    """t[h*W + m] = the larger of x[h, m-1], x[h, m], x[h, m+1] in that order, each clamped
    into the row: the three taps of every window centred on column m. One flat pass over the
    plane (long loops vectorise where a plane's rows, 4 to 32 wide, do not); the two end
    columns of each row, which that pass took from the rows beside, are redone after."""
    one = np.uint64(1)
    if W == 1:
        for j in range(H):
            t[j] = xf[ib + np.uint64(j)]
        return
    for j in range(1, H * W - 1):
        i = ib + np.uint64(j)
        t[j] = _larger(_larger(xf[i - one], xf[i]), xf[i + one])
    for h in range(H):
        a, e = np.uint64(h * W), np.uint64(h * W + W - 1)
        t[a] = _larger(_larger(xf[ib + a], xf[ib + a]), xf[ib + a + one])
        t[e] = _larger(_larger(xf[ib + e - one], xf[ib + e]), xf[ib + e])


@cpu_inline
def _tap(xf, t, ib, h, m, W):
    # Row h's three clamped taps centred on column m: t's, or x's last column where m = W (a
    # ceil-mode window starting on that column: all three taps clamp onto it).
    return t[np.uint64(h * W + m)] if m < W else xf[ib + np.uint64(h * W + W - 1)]


@cpu_inline
def _values3x3(xf, yf, nc, H, W, P, Q, geometry, t):
    """_plane3x3's values alone (no index wanted: inference), the same clamped taps folded in
    the same order: _rows3 into this thread's H*W scratch ``t``, then per output the rows
    its window spans. Output row p's window is centred on row p*sh - ph + 1, column q's on
    q*sw - pw + 1 (each at least 0: padding is at most 1; at most H or W: the window starts
    inside x). Against per-row passes over an (H, Q) scratch indexed signed (not vectorised):
    googlenet_mini's eight pools at batch 256, 2 threads, 20.0 -> 11.4 ms; batch 1, one
    thread, 64x16x16 stride 1 24.7 -> 8.4 us, 64x32x32 stride 2 40 -> 30 us."""
    sh, sw, ph, pw = geometry[4], geometry[5], geometry[7], geometry[8]
    ib, ob = np.uint64(nc * H * W), np.uint64(nc * P * Q)
    _rows3(xf, t, ib, H, W)
    m0 = 1 - pw
    inside = (Q - 1) * sw + m0 < W  # every column's centre inside x: t alone
    if _same(geometry, H, W, P, Q):
        _same_rows(yf, ob, t, H, W, 1)
        return
    for p in range(P):
        c = p * sh - ph + 1
        h0, h1, h2 = max(c - 1, 0), min(c, H - 1), min(c + 1, H - 1)
        o = ob + np.uint64(p * Q)
        if inside:
            r0, r1, r2 = np.uint64(h0 * W + m0), np.uint64(h1 * W + m0), np.uint64(h2 * W + m0)
            if sw == 1:
                for q in range(Q):
                    u = np.uint64(q)
                    yf[o + u] = _larger(_larger(t[r0 + u], t[r1 + u]), t[r2 + u])
            else:
                for q in range(Q):
                    u = np.uint64(q * sw)
                    yf[o + np.uint64(q)] = _larger(_larger(t[r0 + u], t[r1 + u]), t[r2 + u])
        else:
            for q in range(Q):
                m = q * sw + m0
                yf[o + np.uint64(q)] = _larger(_larger(_tap(xf, t, ib, h0, m, W), _tap(xf, t, ib, h1, m, W)),
                                               _tap(xf, t, ib, h2, m, W))


@cpu_inline
def _same(geometry, H, W, P, Q):
    # Stride 1, padding 1, the output x's size (Inception's branch pools), over 2 rows.
    return geometry[4] == 1 and geometry[5] == 1 and geometry[7] == 1 and geometry[8] == 1 and P == H and Q == W \
        and H > 2


@cpu_inline
def _same_rows(yf, ob, t, H, W, B):
    """The outputs of B consecutive same-size planes (``_same``) from their rows' taps t
    (_rows3 over the B*H rows): rows whose window lies inside their plane in one flat pass,
    each plane's first and last row (whose pass read the plane beside) written out after with
    their clamped taps. The planes of a block share the passes: 4x4 and 8x8 planes are mostly
    end rows and loop set-up a plane at a time (``_SAME_SMALL``)."""
    for j in range(W, (B * H - 1) * W):
        u = np.uint64(j)
        yf[ob + u] = _larger(_larger(t[u - np.uint64(W)], t[u]), t[u + np.uint64(W)])
    for b in range(B):
        for p in (0, H - 1):
            r = b * H * W
            r0, r1, r2 = np.uint64(r + max(p - 1, 0) * W), np.uint64(r + p * W), np.uint64(r + min(p + 1, H - 1) * W)
            o = ob + np.uint64(r + p * W)
            for q in range(W):
                u = np.uint64(q)
                yf[o + u] = _larger(_larger(t[r0 + u], t[r1 + u]), t[r2 + u])


# Same-size planes under _SAME_SMALL elements go through _same_rows in blocks of up to
# _SAME_BLOCK elements (the row taps stay in L1 beside x and y). googlenet_mini at batch 256,
# 2 threads, alternating trees, us, blocks against a plane at a time: 224x4x4 463-468 / 652-656,
# 112x8x8 468-490 / 724-742, 160x8x8 671-673 / 1032-1040; 64x16x16 in blocks of 4 planes
# 907-1163 / 880-937, so larger planes stay one at a time (and blocks of 4096 elements were
# slower still: 1321-1475).
_SAME_SMALL = 128
_SAME_BLOCK = 1024


@cpu_kernel
def _forward_3x3(x, geometry, y, index, chunks):
    """2-D, 3x3 undilated windows, padding 0 or 1, any stride (GoogLeNet's, Inception's and
    ResNet's pools): separable (_plane3x3), in ``chunks`` parallel chunks of the planes, each
    with its own row scratch. Every window meets x (PyTorch's pools start each window inside
    x or in the left padding, of at most 1), so clamping always finds a tap. An empty index:
    values only (_values3x3)."""
    N, C, _, H, W = x.shape
    P, Q = y.shape[3], y.shape[4]
    xf, yf, jf = x.reshape(x.size), y.reshape(y.size), index.reshape(index.size)
    NC = N * C
    B = _SAME_BLOCK // (H * W) if _same(geometry, H, W, P, Q) and H * W < _SAME_SMALL and not jf.size else 1
    for t in prange(chunks):
        hv = np.empty(B * H * max(Q, W), x.dtype)  # flat, indexed unsigned: the passes vectorise
        lo, hi = t * NC // chunks, (t + 1) * NC // chunks
        if jf.size:
            hj = np.empty(H * Q, np.int32)
            for nc in range(lo, hi):
                _plane3x3(xf, yf, jf, nc, H, W, P, Q, geometry, hv, hj)
        elif B > 1:  # same-size planes, a block at a time
            for nc in range(lo, hi, B):
                nb = min(B, hi - nc)
                _rows3(xf, hv, np.uint64(nc * H * W), nb * H, W)
                _same_rows(yf, np.uint64(nc * H * W), hv, H, W, nb)
        else:
            for nc in range(lo, hi):
                _values3x3(xf, yf, nc, H, W, P, Q, geometry, hv)


def max_pool3d_forward(x: Any, geometry: tuple, y: Any, index: Any) -> None:
    chunks = 1 if x.size < PARALLEL_MIN else batch_chunks(x.shape[0] * x.shape[1])
    if _flat2x2(geometry, x.shape, y.shape):
        _forward_2x2(x, y, index, chunks)
    elif _three(geometry, x.shape):
        _forward_3x3(x, geometry, y, index, chunks)
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
