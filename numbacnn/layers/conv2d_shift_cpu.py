"""conv2d CPU's shifted-taps path ("shift", conv2d_plan): a direct convolution, multiplied in
registers by _taps_cpu's tile instead of through a column matrix.

Each sample is read as the phase planes of its zero-padded image: plane (c, a, b) holds the
padded image's rows a, a + sh, ... and columns b, b + sw, ... (at stride 1, one plane a
channel: the padded image itself), each Hp = P + dh * (R - 1) // sh by Wp = Q + dw * (S - 1)
// sw. Every output is computed on a plane's grid, o = p * Wp + q: tap (c, r, s) of every
output is then one flat offset away (the plane of phases (r * dh % sh, s * dw % sw), r * dh
// sh rows and s * dw // sw columns in), so the convolution is a product of the weights (K,
C*R*S) as they are laid out with "rows" of the image that start at those offsets (``taps``),
with no column matrix; the grid's Wp - Q extra columns per row are computed and dropped as
each tile is written out. An image that needs no padding at stride 1 is its own plane (x is
read in place: 1x1 and "valid" convolutions copy nothing), else a chunk copies each sample
into its scratch xp first. No tap of a grid output reads past its plane; groups take their
channels' planes and weights.

A tile is ROWS output channels by columns(x) grid outputs; its sums go to the call's ``acc``
and out to y with the bias, a residual (inference's conv + add) and relu's rule (NaN kept),
in that order, while they are in L1. Where the grid's rows are padded and y's rows fit the tile
whole (``_dense``: a whole number of tiles wide, or of vectors on AVX2), the tiles take y's
outputs alone and write them straight from their registers. Batches of the thread count or
more give each chunk whole samples; below it (batch-1 inference of a large enough sample,
conv2d_plan) each sample's tiles are split over the chunks.
"""

import numpy as np
from numba.core import config as _numba_config

from .._jit import cpu_inline, cpu_kernel, cpu_serial, prange
from ._taps_cpu import ROWS, VECTOR_BYTES, columns, lanes_of, taps, taps_out, tile_columns

__all__ = ["shift_forward", "shift_scratch"]

# Raw pointers escape NUMBA_BOUNDSCHECK: in that mode each tile checks its extents itself.
_CHECK_EXTENTS = bool(_numba_config.BOUNDSCHECK)

# Output rows a whole number of vectors wide (8, 16, 24, ... in float32 on AVX2) go straight to
# y, the tiles covering y's plane densely (``_dense``), on machines of these vector bytes:
# measured on AVX2 only (AVX-512's 3 vectors a tile go densely only on rows of whole tiles).
ROW_VECTOR_BYTES = 32


@cpu_inline
def _offsets(offs, Cg, R, S, Hp, Wp, sh, sw, dh, dw):
    """offs[(c * R + r) * S + s] = tap (c, r, s)'s flat offset in a group's phase planes: row
    offset r * dh is (r * dh // sh) rows into plane row phase r * dh % sh, columns alike. The
    divisions are a tap's (r, s), once each; a channel adds its planes' span (with them in the
    channel loop, 4.3 us a call for 64 channels of 3x3, on every chunk's critical path)."""
    if Cg <= 0:  # no channels: no taps (offs is empty)
        return
    RS, span = R * S, sh * sw * Hp * Wp
    for r in range(R):
        for s in range(S):
            offs[r * S + s] = (((r * dh) % sh) * sw + (s * dw) % sw) * Hp * Wp + (r * dh // sh) * Wp + s * dw // sw
    for c in range(1, Cg):
        for j in range(RS):
            offs[c * RS + j] = offs[j] + c * span


@cpu_serial
def _pad(xn, xpf, pt, pl, Hp, Wp, sh, sw):
    """xn (C, H, W) into xpf, the phase planes of its zero-padded image, flat: plane (c, a, b)
    is (Hp, Wp), its (i, j) the padded image's (i * sh + a, j * sw + b) (stride 1: one plane
    a channel, the padded image itself). The planes are zeroed in one pass, then x's values
    copied in, a run per plane row: zeroing each row's margins in loops of their own ran 3x
    slower (64 channels of 8x8 padded to 10x10, one call: 4.2 against 1.6 us; 16 of 32x32,
    4.1 against 2.5)."""
    C, H, W = xn.shape
    zero = xpf.dtype.type(0)
    for i in range(C * sh * sw * Hp * Wp):  # a loop LLVM makes a memset
        xpf[np.uint64(i)] = zero
    xf = xn.reshape(xn.size)
    if sh == sw == 1:  # each row of x a run of W: the padded image's row h + pt from column pl
        h0, h1, w0, w1 = max(0, -pt), min(H, Hp - pt), max(0, -pl), min(W, Wp - pl)  # (what of x the planes hold)
        for c in range(C):
            for h in range(h0, h1):
                dst, src = np.uint64((c * Hp + h + pt) * Wp + pl), np.uint64((c * H + h) * W)
                for j in range(w0, w1):
                    xpf[dst + np.uint64(j)] = xf[src + np.uint64(j)]
        return
    for c in range(C):
        for a in range(sh):
            for b in range(sw):
                base = ((c * sh + a) * sw + b) * Hp * Wp
                j0 = min(Wp, max(0, (pl - b + sw - 1) // sw))  # columns j0..j1 of a plane row lie in x
                j1 = max(j0, min(Wp, (W + pl - b + sw - 1) // sw))
                i0 = min(Hp, max(0, (pt - a + sh - 1) // sh))  # and rows i0..i1
                i1 = max(i0, min(Hp, (H + pt - a + sh - 1) // sh))
                for i in range(i0, i1):
                    row = np.uint64(base + i * Wp)
                    src = (c * H + i * sh + a - pt) * W + b - pl  # x's flat index of plane column 0 (may be negative)
                    if sw == 1:
                        for j in range(j0, j1):
                            xpf[row + np.uint64(j)] = xf[np.uint64(src + j)]
                    else:
                        for j in range(j0, j1):
                            xpf[row + np.uint64(j)] = xf[np.uint64(src + j * sw)]


@cpu_inline
def _dense(direct, Wp, Q, NR, width):
    """Whether the tiles cover y's plane densely, NR outputs in row order a tile, written
    straight to y (``direct`` not None: shift_forward asks for the straight store), where
    padding or a stride widens the grid (Wp > Q): with rows a whole number of tiles wide (each
    tile within a row), or, on ROW_VECTOR_BYTES machines (2 vectors a tile), of vectors
    (``width`` values; a tile's second vector may start the next row, its taps then ``xstep`` =
    Wp - Q + width on in x). The grid's tiles computed Wp - Q dropped columns a row (8x8 planes
    padded for a 3x3: 2 of 10) and copied their outputs out of acc by a scalar loop. AMD EPYC
    (AVX2), 2 threads, alternated with the grid's tiles: 32->32 3x3 at 32x32, batch 1, 154-162
    against 167-172 us; googlenet_mini's 3->32 stem at batch 128, in the model, 3.42-3.44 against
    4.05-4.14 ms; 3x3 64->64 at 8x8, batch 1, 65.5 -> 53.8 us, 128->128 195 -> 156."""
    return direct is not None and Wp != Q and (Q % NR == 0 or (
        VECTOR_BYTES == ROW_VECTOR_BYTES and NR == 2 * width and Q % width == 0))


@cpu_inline
def _per_block(direct, P, Q, Wp, NR, width):
    # tiles a block of ROWS channels: y's plane densely, or the grid's
    if _dense(direct, Wp, Q, NR, width):
        return (P * Q + NR - 1) // NR
    return ((P - 1) * Wp + Q + NR - 1) // NR


@cpu_serial
def _tiles(src, x0, offs, wf, b, sc, yf, rf, res, acc, n, t0, t1, G, K, Cg, Hp, Wp, P, Q, relu, direct):
    """Tiles t0..t1 of sample n (its padded image at src[x0:]), in the order (group, channel
    block, grid block): each summed into acc, then written out to y (flat, (N, K, P, Q)) with
    the scale sc and bias b (empty: none), the residual rf (flat like y; added when ``res``: an array either
    way, one specialisation instead of two, whose compile 2.6 s of 5.2 the residual's was) and
    relu's rule."""
    J = offs.size
    Kg, NR = K // G, columns(acc)
    reach = offs.max() if _CHECK_EXTENTS and J else 0  # the farthest tap (not the last at a stride)
    L = (P - 1) * Wp + Q
    width = lanes_of(acc)
    dense = _dense(direct, Wp, Q, NR, width)
    nb = _per_block(direct, P, Q, Wp, NR, width)
    per_group = (Kg + ROWS - 1) // ROWS * nb
    zero, one = acc.dtype.type(0), acc.dtype.type(1)
    flags = (1 if b.size else 0) + (2 if res else 0) + (4 if relu else 0) + (8 if sc.size else 0)
    for t in range(t0, t1):
        g = t // per_group
        mb, cb = (t - g * per_group) // nb, (t - g * per_group) % nb
        k0, c0 = g * Kg + mb * ROWS, cb * NR
        rows, lanes = min(ROWS, Kg - mb * ROWS), min(NR, L - c0)
        yo, xstep = (n * K + k0) * P * Q + c0, width
        if dense:  # tile cb: y's outputs c0.. of the plane in row order, each vector within a row
            o = c0 + width  # the second vector's first output: its row may be the next
            lanes = min(NR, P * Q - c0)
            c0 = c0 // Q * Wp + c0 % Q
            xstep = o // Q * Wp + o % Q - c0  # width but where o starts the next row
        xo = x0 + g * Cg * Hp * Wp + c0
        last = (lanes - 1) // width * (xstep - width) + lanes  # past the farthest lane's x, from a tap's start
        if _CHECK_EXTENTS and (xo < 0 or offs.min() < 0 or xo + reach + last > src.size or (k0 + rows) * J > wf.size
                               or acc.size < ROWS * NR or g >= G):
            raise IndexError("conv2d shift: a tile reads past its image or weights")
        if direct is not None and (Wp == Q or dense):  # the tile's outputs lie as in y: straight out
            if _CHECK_EXTENTS and (yo + (rows - 1) * P * Q + lanes > min(yf.size, rf.size)
                                   or (b.size and k0 + rows > b.size) or (sc.size and k0 + rows > sc.size)):
                raise IndexError("conv2d shift: a tile writes past y or reads past the bias or scale")
            taps_out(src, xo, offs, J, wf, k0 * J, J, rows, lanes, yf, yo, P * Q, b, sc, k0, rf, flags, xstep)
            continue
        taps(src, xo, offs, J, wf, k0 * J, J, rows, acc, lanes)
        p, q, o = c0 // Wp, c0 % Wp, 0
        while o < lanes:  # the tile's grid outputs, a row (of Wp) at a time: its first Q go out
            seg = min(Wp - q, lanes - o)
            if q < Q:
                cnt = min(seg, Q - q)
                for m in range(rows):
                    bk = b[k0 + m] if b.size else -zero  # -0.0: the exact identity, as the scale 1
                    sk = sc[k0 + m] if sc.size else one
                    dst, a = np.uint64(((n * K + k0 + m) * P + p) * Q + q), np.uint64(m * NR + o)
                    if res:
                        for i in range(cnt):
                            v = (acc[a + np.uint64(i)] * sk + bk) + rf[dst + np.uint64(i)]
                            yf[dst + np.uint64(i)] = zero if relu and v <= zero else v
                    else:
                        for i in range(cnt):
                            v = acc[a + np.uint64(i)] * sk + bk
                            yf[dst + np.uint64(i)] = zero if relu and v <= zero else v
            o += seg
            p += 1
            q = 0


@cpu_serial
def _samples(x, wf, b, sc, yf, rf, res, xpf, t, T, G, K, R, S, sh, sw, dh, dw, pt, pl, P, Q, relu, copy, direct):
    """Chunk t of T: whole samples (t * N // T to (t + 1) * N // T), or, for fewer samples
    than chunks (batch-1 inference), every sample's tiles t * tiles // T to (t + 1) * tiles //
    T. The tile count is this compiled kernel's own (its ROWS and columns), never a caller's: a
    cache compiled for another vector width stays consistent. Each sample is padded into this
    chunk's own xpf first (when ``copy``, else read in place). The taps' offsets and the
    tile's sums are arrays of this call (scratch passed in cost every call an arena request:
    1x1 convolutions on this path ran about 5 us slower a call in googlenet_mini at batch 1,
    for 0.7 us of work)."""
    N, C, H, W = x.shape
    Hp, Wp = P + dh * (R - 1) // sh, Q + dw * (S - 1) // sw
    tiles = G * ((K // G + ROWS - 1) // ROWS) * _per_block(direct, P, Q, Wp, columns(yf), lanes_of(yf))
    n0, n1, a, z = t * N // T, (t + 1) * N // T, np.int64(0), np.int64(tiles)
    if N < T:
        n0, n1, a, z = np.int64(0), np.int64(N), np.int64(t * tiles // T), np.int64((t + 1) * tiles // T)
    offs = np.empty(C // G * R * S, np.int64)
    acc = np.empty(ROWS * columns(yf), yf.dtype)
    _offsets(offs, C // G, R, S, Hp, Wp, sh, sw, dh, dw)
    for n in range(n0, n1):
        if copy:
            _pad(x[n], xpf, pt, pl, Hp, Wp, sh, sw)
        src, x0 = (xpf, np.int64(0)) if copy else (x.reshape(x.size), np.int64(n * C * H * W))
        _tiles(src, x0, offs, wf, b, sc, yf, rf, res, acc, np.int64(n), a, z, G, K, C // G * sh * sw, Hp, Wp, P, Q,
               relu, direct)


@cpu_kernel
def _shift_chunks(x, wf, b, sc, yf, rf, res, xp, T, G, K, R, S, sh, sw, dh, dw, pt, pl, P, Q, relu, copy, direct):
    """The batch in T chunks (``_samples``), each with its own padded image xp[t] (xp is (T, 0,
    0, 0) where x is read in place). Where the tiles are split, each chunk pads the whole sample
    itself: tiles reading one image that another core had just written ran slower on two
    threads than on one (32->32 3x3 at 32x32: 139 against 119 us; each padding its own, 76)."""
    for t in prange(T):
        _samples(x, wf, b, sc, yf, rf, res, xp[t].reshape(xp[t].size), np.int64(t), T, G, K, R, S, sh, sw, dh, dw,
                 pt, pl, P, Q, relu, copy, direct)


def _copies(geo: tuple, x_hw: tuple[int, ...], out_hw: tuple[int, ...]) -> bool:
    # Whether x needs a padded copy: not when it is its own padded image (stride 1, no padding,
    # and every row and column of it read: 1x1 and "valid" convolutions).
    R, S, sh, sw, dh, dw, pt, pl = geo[1:]
    return not (sh == sw == 1 and pt == pl == 0 and (out_hw[0] + dh * (R - 1), out_hw[1] + dw * (S - 1)) == tuple(x_hw))


def _planes(geo: tuple, out_hw: tuple[int, ...]) -> tuple[int, int]:
    # A phase plane's (height, width): the outputs plus the rows and columns the taps reach past them.
    return out_hw[0] + geo[5] * (geo[1] - 1) // geo[3], out_hw[1] + geo[6] * (geo[2] - 1) // geo[4]


def shift_scratch(T: int, x_shape: tuple[int, ...], out: tuple[int, ...], geo: tuple) -> tuple:
    """The forward's scratch, ((shape, dtype), ...), for an (N, C, H, W) input in T chunks: the
    phase planes of a padded sample per chunk, none where x is read in place."""
    if not _copies(geo, x_shape[2:], out[-2:]):
        return ()
    return (((T, x_shape[1] * geo[3] * geo[4], *_planes(geo, out[-2:])), None),)


def shift_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, scratch: tuple, geo: tuple, T: int,
                  relu: bool = False, residual: np.ndarray | None = None, last: list | None = None,
                  scale: np.ndarray | None = None) -> None:
    """y = conv2d(x, w) * scale + b (scale None, b empty: none) (+ ``residual``), relu'd when ``relu`` (any
    groups, stride, padding, dilation), in T chunks, with ``shift_scratch``'s arrays. One chunk
    runs in the calling thread (no parallel region). ``last`` (an inference plan's): the last
    call's arrays and kernel arguments, reused for the same objects (as im2col's)."""
    if last and last[0] is x and last[1] is w and last[2] is b and last[3] is y and last[4] is residual \
            and last[5] == relu and (not scratch or last[6] is scratch[0]) and last[7] is scale:
        kernel, args = last[8:]
    else:
        G, R, S, sh, sw, dh, dw, pt, pl = geo
        N, K, P, Q = y.shape
        copy = bool(scratch)
        xp = scratch[0] if copy else np.empty((T, 0, 0, 0), x.dtype)
        yf = y.reshape(y.size)
        head = (x, w.reshape(w.size), b, np.empty(0, y.dtype) if scale is None else scale, yf,
                yf if residual is None else residual.reshape(residual.size),
                residual is not None)
        # Where the grid is y's plane (Wp == Q: 1x1 kernels), the tiles write y from their
        # registers: ``direct`` True, else None, whose kernels leave that code out (Numba prunes
        # an argument's ``is None`` by its type): the store costs a cold ``numbacnn train``
        # (lenet5's 5x5 forwards on this path) 0.5 s of compiling where it is in the kernel.
        # Rows a whole number of vectors wide go straight out (``_dense``), rows of one vector
        # at batch 1 only: where another convolution of the model keeps the grid (None), True is a
        # second compile of these kernels (a cold ``numbacnn train``, its 8x8 digits' 5x5 conv1 at
        # batch 32 beside conv2's 4x4 outputs: 24.9 -> 29.7 s of compiling).
        lane = VECTOR_BYTES // y.itemsize
        direct = True if _planes(geo, (P, Q))[1] == Q or Q % tile_columns(y.itemsize) == 0 \
            or (VECTOR_BYTES == ROW_VECTOR_BYTES and Q % lane == 0 and (Q > lane or N == 1)) else None
        tail = (G, K, R, S, sh, sw, dh, dw, pt, pl, P, Q, relu, copy, direct)
        if T == 1:
            kernel, args = _samples, (*head, xp[0].reshape(xp[0].size), 0, 1, *tail)
        else:
            kernel, args = _shift_chunks, (*head, xp, T, *tail)
        if last is not None:
            last[:] = [x, w, b, y, residual, relu, scratch[0] if copy else None, scale, kernel, args]
    kernel(*args)
