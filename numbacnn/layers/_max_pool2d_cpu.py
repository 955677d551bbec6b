"""max_pool3d CPU's fast paths for the 2-D windows models use most, on (N, C, 1, H, W) views:
2x2 at stride 2 (``_forward_2x2``) and 3x3 with padding 0 or 1 at any stride (``_forward_3x3``,
separable; blocks of small same-size planes share their passes). max_pool3d_cpu picks them
(``_flat2x2``, ``_three``) and takes its general kernels for every other geometry; the
interface, geometry tuple and index rules are max_pool3d_cpu's.
"""

import numpy as np

from .._jit import cpu_inline, cpu_kernel, cpu_serial, prange

__all__ = ["_flat2x2", "_forward_2x2", "_values_2x2", "_rows2x2", "_rows_2x2", "rows2x2", "_three", "_forward_3x3",
           "_rows3x3s2", "_rows_3x3s2", "rows3x3s2", "values3x3"]


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


# Input values per block of _rows2x2's first pass (8 KiB of float32 pairs' maxima: in L1).
_ROW_BLOCK = 2048


@cpu_serial
def _rows2x2(x, y, r0, r1):
    """Output rows r0..r1 of 2x2 stride-2 windows over planes whose rows are all read (H = 2P,
    W = 2Q), values alone: one flat sequence of rows, output row r from input rows 2r and
    2r + 1, whichever plane they are in. By blocks of rows: first every pair of neighbours in
    the block's input rows (one long flat pass, which vectorises), then each output from the
    pair above and the pair below: _values2x2's folds in its order (top pair, bottom pair, the
    two). A plane's own rows, 4 to 14 outputs wide, do not vectorise; one thread, batch 256,
    us, against _values2x2's loops: 128x8x8 1049 -> 446, 16x10x10 159 -> 73, 6x28x28 310 ->
    239, 20x24x24 644 -> 557; batch 1, 6x28x28 2.0 -> 0.9. Rows a multiple of 8 wide stay
    with _values2x2, which vectorises them (32x32: 1498 against 1556 here). x and y as the
    kernels take them, (N, C, 1, H, W) and (N, C, 1, P, Q): flattened here, not by the caller
    (two reshapes in Python cost 0.4 us of a batch-1 pool's 1.4)."""
    W, Q = x.shape[4], y.shape[4]
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    B = max(1, _ROW_BLOCK // (2 * W))  # output rows per block
    pairs = np.empty(B * W, xf.dtype)
    for a in range(r0, r1, B):
        b = min(r1, a + B)
        base = np.uint64(2 * a * W)
        for j in range((b - a) * W):  # input rows 2a .. 2b: (b - a) * 2W values, half as many pairs
            i = base + np.uint64(2 * j)
            pairs[j] = _larger(xf[i], xf[i + np.uint64(1)])
        for r in range(b - a):
            t, o = np.uint64(2 * r * Q), np.uint64((a + r) * Q)
            for q in range(Q):
                u = np.uint64(q)
                yf[o + u] = _larger(pairs[t + u], pairs[t + np.uint64(Q) + u])


def rows2x2(x_shape: tuple, y_shape: tuple, index_size: int) -> bool:
    """Whether a 2x2 pool (``_flat2x2``) takes _rows2x2 (values alone, every row read, rows not a
    multiple of 8 wide)."""
    return (index_size == 0 and x_shape[3] == 2 * y_shape[3] and x_shape[4] == 2 * y_shape[4]
            and y_shape[4] % 8 != 0)


@cpu_kernel
def _forward_2x2(x, y, index, chunks):
    """2-D, 2x2 windows at stride 2, unpadded, undilated, every window inside x (network3's
    pools): 3x faster than _forward_windows (batch 10, one thread: 79 -> 29 us on 20x24x24,
    33 -> 12 us on 40x8x8), in ``chunks`` parallel chunks of the planes, with the index."""
    N, C, _, H, W = x.shape
    P, Q = y.shape[3], y.shape[4]
    xf, yf, jf = x.reshape(x.size), y.reshape(y.size), index.reshape(index.size)
    NC = N * C
    for t in prange(chunks):
        for nc in range(t * NC // chunks, (t + 1) * NC // chunks):
            _plane2x2(xf, yf, jf, nc, H, W, P, Q)


@cpu_kernel
def _values_2x2(x, y, chunks):
    """_forward_2x2's values alone (inference's, where _rows2x2 does not apply). A kernel of
    its own, as _rows_2x2: the training step's pools compile _forward_2x2 alone, 1.9 -> 1.4 s
    (from an empty cache, one process, the compile of its float32 training specialisation)."""
    N, C, _, H, W = x.shape
    P, Q = y.shape[3], y.shape[4]
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    NC = N * C
    for t in prange(chunks):
        for nc in range(t * NC // chunks, (t + 1) * NC // chunks):
            _values2x2(xf, yf, nc, H, W, P, Q)


@cpu_kernel
def _rows_2x2(x, y, chunks):
    """_rows2x2 over the threads: ``chunks`` parallel chunks of the output rows. A kernel of
    its own, not a branch of _forward_2x2: a training step compiles that one, and with this
    path inside it took 1.5 s to compile instead of 0.9 (a cold ``numbacnn train``)."""
    R = y.shape[0] * y.shape[1] * y.shape[3]
    for t in prange(chunks):
        _rows2x2(x, y, t * R // chunks, (t + 1) * R // chunks)


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
    """_plane3x3's values alone (no index wanted: inference; same-size planes take _same_rows,
    _forward_3x3), the same clamped taps folded in
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


@cpu_serial
def _rows3x3s2(x, y, r0, r1):
    """Output rows r0..r1 of 3x3 windows at stride 2, padding 1, over planes of even height and
    width (H = 2P, W = 2Q), values alone, as one flat sequence of rows across planes (as
    _rows2x2): by blocks of rows, first each input row's three taps around every second
    column, the centres the windows use (one flat pass with a stride of 2, no column wasted;
    column 0's left tap clamps onto it, as _rows3's), then each output the fold of the rows
    2r - 1 (2r on a plane's first row: clamped), 2r and 2r + 1, contiguous. The same folds in
    the same order as _values3x3, which computes the taps around every column and reads every
    second (googlenet_mini's stride-2 pools at batch 256, one thread, us: 32x32x32 3820 ->
    2449, 112x16x16 3578 -> 2990, 224x8x8 2192 -> 1708; batch 1 32x32x32 14.1 -> 8.5)."""
    W, P, Q = x.shape[4], y.shape[3], y.shape[4]
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    B = max(1, _ROW_BLOCK // (2 * W))  # output rows per block
    taps = np.empty((2 * B + 1) * Q, xf.dtype)
    one, q1 = np.uint64(1), np.uint64(Q)
    for a in range(r0, r1, B):
        b = min(r1, a + B)
        lo = 2 * a - 1 if a % P else 2 * a  # the row above the block's first, inside its plane
        n = (2 * b - lo) * Q
        base = np.uint64(lo * W)
        for j in range(1, n):  # taps[j]: input row lo + j // Q, centre 2 * (j % Q): x index base + 2j
            i = base + np.uint64(2 * j)
            taps[j] = _larger(_larger(xf[i - one], xf[i]), xf[i + one])
        for j in range(0, n, Q):  # each row's centre 0 (the pass above read the row before)
            i = base + np.uint64(2 * j)
            taps[j] = _larger(_larger(xf[i], xf[i]), xf[i + one])
        for r in range(a, b):
            mid = np.uint64((2 * r - lo) * Q)
            top = mid - q1 if r % P else mid
            o = np.uint64(r * Q)
            for q in range(Q):
                u = np.uint64(q)
                yf[o + u] = _larger(_larger(taps[top + u], taps[mid + u]), taps[mid + q1 + u])


def rows3x3s2(geometry: tuple, x_shape: tuple, y_shape: tuple, index_size: int) -> bool:
    """Whether a 3x3 pool (``_three``) takes _rows3x3s2: values alone, stride 2, padding 1,
    every plane of even height and width (its windows end on its last row and column)."""
    return (index_size == 0 and geometry[4] == 2 and geometry[5] == 2 and geometry[7] == 1 and geometry[8] == 1
            and x_shape[3] == 2 * y_shape[3] and x_shape[4] == 2 * y_shape[4])


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
    same = _same(geometry, H, W, P, Q) and not jf.size
    B = _SAME_BLOCK // (H * W) if same and H * W < _SAME_SMALL else 1
    for t in prange(chunks):
        lo, hi = t * NC // chunks, (t + 1) * NC // chunks
        if jf.size:
            hv = np.empty(H * Q, x.dtype)  # flat, indexed unsigned: the passes vectorise
            hj = np.empty(H * Q, np.int32)
            for nc in range(lo, hi):
                _plane3x3(xf, yf, jf, nc, H, W, P, Q, geometry, hv, hj)
        else:
            _values_planes3x3(xf, yf, lo, hi, H, W, P, Q, geometry, same, B)


@cpu_serial
def values3x3(x, geometry, y):
    """_forward_3x3's values alone (inference) in the calling thread: its one chunk without the
    parallel region (small pools at batch 1: 1.3-2 us of 3-6 a call; ``max_pool3d_forward``)."""
    _, _, _, H, W = x.shape
    P, Q = y.shape[3], y.shape[4]
    same = _same(geometry, H, W, P, Q)
    _values_planes3x3(x.reshape(x.size), y.reshape(y.size), np.int64(0), x.shape[0] * x.shape[1], H, W, P, Q, geometry,
                      same, _SAME_BLOCK // (H * W) if same and H * W < _SAME_SMALL else 1)


@cpu_serial
def _values_planes3x3(xf, yf, lo, hi, H, W, P, Q, geometry, same, B):
    """Planes lo..hi of _forward_3x3's values alone (inference), one chunk's. A function of its
    own, not inlined into the parallel loop: _forward_3x3 compiled in 3.5 s instead of 5.2-5.3,
    inference as fast; the training forward (_plane3x3) stays inlined, which ran 1.6x faster
    there than in a function of its own (batch 256 32x32x32 stride 2, 11.0 against 17.6 ms)."""
    t = np.empty(B * H * W, xf.dtype)  # flat, indexed unsigned: the passes vectorise
    if same:  # same-size planes, a block (of one where planes are large) at a time
        for nc in range(lo, hi, B):
            nb = min(B, hi - nc)
            _rows3(xf, t, np.uint64(nc * H * W), nb * H, W)
            _same_rows(yf, np.uint64(nc * H * W), t, H, W, nb)
    else:
        for nc in range(lo, hi):
            _values3x3(xf, yf, nc, H, W, P, Q, geometry, t)


@cpu_kernel
def _rows_3x3s2(x, y, chunks):
    """_rows3x3s2 over the threads, in ``chunks`` parallel chunks of the output rows (a kernel
    of its own, as _rows_2x2)."""
    R = y.shape[0] * y.shape[1] * y.shape[3]
    for t in prange(chunks):
        _rows3x3s2(x, y, t * R // chunks, (t + 1) * R // chunks)
