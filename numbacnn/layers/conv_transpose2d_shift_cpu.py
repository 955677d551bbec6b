"""conv_transpose2d CPU forward on shifted taps (groups 1, no dilation), a stride phase at a time.

Output row i = u * sh + a takes the kernel rows r = r0, r0 + sh, ... (r0 = (a + pad) mod sh),
the m-th of them from input row u + e - m (e = (a + pad - r0) / sh), and columns alike: each
of the sh * sw phases of y is a stride-1 convolution of x with a sub-kernel. With x padded by
``top`` rows and ``left`` columns of zeros (Hx x Wx), tap (c, m, n) of every output of phase
(a, b) is the flat offset c * Hx * Wx + (e - m + top) * Wx + (f - n + left) away from the grid
index u * Wx + v, so the phase is _taps_cpu's product of its weights, (K, C * M * N) gathered
from w, with rows of x read in place, as conv2d's shifted taps (conv2d_shift_cpu). Each tile's
sums go out to y's positions of that phase with the bias. One kernel over chunks of the batch,
each padding its samples into its own image (the ``col`` scratch, far larger).

Against the column path (BLAS product, then col2im; conv_transpose2d_cpu), N16 64x16x16 -> 32,
kernel 4, stride 2, 2 threads, one process: 1130 against 1313 us.
"""

import functools

import numpy as np

from .._jit import cpu_kernel, cpu_serial, prange
from ._taps_cpu import ROWS, columns, taps
from .conv2d_shift_cpu import _CHECK_EXTENTS, _pad

__all__ = ["fits", "shift_transposed"]


def _axis(size: int, out: int, k: int, stride: int, pad: int) -> tuple[list, int, int]:
    # Per phase a: (first tap r0, taps M, e, outputs U), and the padding before and the padded
    # length of the input along one axis so that every tap of every output lands inside it.
    phases = []
    for a in range(stride):
        r0 = (a + pad) % stride
        M = len(range(r0, k, stride))
        phases.append((r0, M, (a + pad - r0) // stride, len(range(a, out, stride))))
    lead = max([M - 1 - e for _, M, e, _ in phases] + [0])
    length = max([lead + size] + [lead + e + U for _, _, e, U in phases if U])
    return phases, lead, length


@functools.lru_cache(maxsize=256)
def _tables(x_shape: tuple, y_shape: tuple, geo: tuple) -> tuple:
    # What depends on the shapes alone, made once: per row phase and column phase (first tap,
    # taps, e, outputs) as int64 arrays; the taps' offsets in the padded input, (sh*sw, Jmax);
    # per phase (J, U, V, a, b); the padded input's (top, left, Hx, Wx); Jmax.
    C = x_shape[1]
    _, R, S, sh, sw, _, _, pt, pl = geo
    rows, top, Hx = _axis(x_shape[2], y_shape[2], R, sh, pt)
    cols, left, Wx = _axis(x_shape[3], y_shape[3], S, sw, pl)
    J = max(1, max(M for _, M, _, _ in rows) * max(N for _, N, _, _ in cols) * C)
    offs, meta = np.zeros((sh * sw, J), np.int64), np.zeros((sh * sw, 5), np.int64)
    c = np.arange(C)[:, None, None] * (Hx * Wx)
    for a, (_, M, e, U) in enumerate(rows):
        for b, (_, N, f, V) in enumerate(cols):
            m, n = np.arange(M)[None, :, None], np.arange(N)[None, None, :]
            offs[a * sw + b, :C * M * N] = (c + (e - m + top) * Wx + (f - n + left)).reshape(-1)
            meta[a * sw + b] = (C * M * N, U, V, a, b)
    offs.flags.writeable = meta.flags.writeable = False  # shared by every call at these shapes
    return np.array(rows, np.int64), np.array(cols, np.int64), offs, meta, (top, left, Hx, Wx), J


@cpu_serial
def _gather(w, rows, cols, wph):
    """Phase (a, b)'s weights wph[a * sw + b]: K rows of its J = C * M * N taps (c, m, n),
    w[c, k, r0 + m * sh, s0 + n * sw] (the offsets' order, ``_tables``)."""
    C, K = w.shape[0], w.shape[1]
    sh, sw = rows.shape[0], cols.shape[0]
    for a in range(sh):
        r0, M = rows[a, 0], rows[a, 1]
        for b in range(sw):
            s0, N = cols[b, 0], cols[b, 1]
            i, J = a * sw + b, C * M * N
            for k in range(K):
                for c in range(C):
                    for m in range(M):
                        for n in range(N):
                            wph[i, k * J + (c * M + m) * N + n] = w[c, k, r0 + m * sh, s0 + n * sw]


@cpu_kernel
def _chunks(x, b, y, scratch, wph, offs, meta, top, left, Hx, Wx, sh, sw):
    """y = conv_transpose2d(x) + b (b empty: none), chunk t of the batch padding its samples
    into scratch[t] (at least C * Hx * Wx values)."""
    N, C = x.shape[0], x.shape[1]
    K, P, Q = y.shape[1], y.shape[2], y.shape[3]
    T = scratch.shape[0]
    NR = columns(scratch)
    zero, one = y.dtype.type(0), np.int64(1)
    yf = y.reshape(y.size)
    for t in prange(T):
        xpf = scratch[t].reshape(scratch[t].size)[:C * Hx * Wx]
        acc = np.empty(ROWS * NR, y.dtype)
        for n in range(t * N // T, (t + 1) * N // T):
            _pad(x[n], xpf, top, left, Hx, Wx, one, one)  # stride 1 (no literal: one specialisation)
            for ph in range(meta.shape[0]):
                J, U, V, a, bb = meta[ph, 0], meta[ph, 1], meta[ph, 2], meta[ph, 3], meta[ph, 4]
                if U == 0 or V == 0:
                    continue
                L = (U - 1) * Wx + V
                for k0 in range(0, K, ROWS):
                    rows = min(ROWS, K - k0)
                    for c0 in range(0, L, NR):
                        lanes = min(NR, L - c0)
                        if _CHECK_EXTENTS and J and (offs[ph, :J].min() < 0 or c0 + offs[ph, :J].max() + lanes
                                                     > xpf.size or (k0 + rows) * J > wph.shape[1]):
                            raise IndexError("conv_transpose2d shift: a tile reads past its image or weights")
                        taps(xpf, c0, offs[ph], J, wph[ph], k0 * J, J, rows, acc, lanes)
                        u, v, o = c0 // Wx, c0 % Wx, 0
                        while o < lanes:  # a grid row at a time: its first V go out, sw apart
                            seg = min(Wx - v, lanes - o)
                            if v < V:
                                cnt = min(seg, V - v)
                                for m in range(rows):
                                    bk = b[k0 + m] if b.size else -zero  # -0.0: the exact identity
                                    dst = np.uint64(((n * K + k0 + m) * P + u * sh + a) * Q + v * sw + bb)
                                    src = np.uint64(m * NR + o)
                                    for i in range(cnt):
                                        yf[dst + np.uint64(i * sw)] = acc[src + np.uint64(i)] + bk
                            o += seg
                            u += 1
                            v = 0


def fits(x_shape: tuple, y_shape: tuple, geo: tuple, col_shape: tuple) -> bool:
    """Whether the shifted-taps forward runs this transposed convolution: groups 1, no
    dilation, and the padded input fits the ``col`` scratch of each chunk."""
    if geo[0] != 1 or geo[5] != 1 or geo[6] != 1:
        return False
    _, _, _, _, (_, _, Hx, Wx), _ = _tables(tuple(x_shape), tuple(y_shape), tuple(geo))
    return x_shape[1] * Hx * Wx <= col_shape[1] * col_shape[2]


def shift_transposed(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, col: np.ndarray,
                     geo: tuple) -> None:
    """y = conv_transpose2d(x, w) + b on shifted taps (``fits``), ``col`` its scratch. The
    weights are gathered on every call (a training step changes them); the rest is the
    shapes' (``_tables``)."""
    rows, cols, offs, meta, (top, left, Hx, Wx), J = _tables(x.shape, y.shape, tuple(geo))
    wph = np.empty((geo[3] * geo[4], w.shape[1] * J), w.dtype)
    _gather(w, rows, cols, wph)
    _chunks(x, b, y, col, wph, offs, meta, top, left, Hx, Wx, geo[3], geo[4])
