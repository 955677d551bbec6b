"""conv1d CPU (one-row conv2d), stride 1, kernel 5: Winograd's F(4, 5) with BLAS products.

A one-row convolution's im2col path spends nearly all of its time in three products of 2*C*K*5
flops per output (forward, weight gradient, input gradient); F(4, 5) gives 4 outputs of a
5-tap filter from 8 products instead of 20, with the 1-D transforms of conv2d_winograd5_tiles
(bt8, at8, g8 and their transposes). For each tile i (outputs 4i .. 4i+3 of a row, padded
input 4i .. 4i+7):

    V[a] (C, tiles) = (B^T d)[a],  U[a] (K, C) = (G g)[a],  M[a] = U[a] @ V[a],  y = A^T M

and the backward: Z[a] (K, tiles) = (A gy)[a]; the weight gradient's transform
part[a] += Z[a] @ V[a]^T, then gw = G^T part (the reduction); the tiles' input gradient
V[a] = U[a]^T @ Z[a], then B V scattered and added into gx (tiles overlap by 4).

A block's columns are the tiles of one or more whole samples (``tiles`` per block, from
``scratch``), so each product runs over several samples when one is short. Each chunk t of the
batch owns V[t], M[t], R[t] (the transforms' row buffers) and part[t]: no two threads write
the same element. The transforms work one row at a time through R: a padded row split into its
4 phases (position 4u + j in phase j, slot u) makes every tile's 8 inputs contiguous loads
across tiles, so the transform loops run in vector lanes.

NaN and Inf: a tile transform spreads one over the tile's 4 outputs, so a non-finite output
(or gy value) makes the wrappers return False and the caller recompute on the im2col path, as
conv2d_winograd_cpu does. Rounding: float32 results about 1e-6 of the largest output from the
direct sum (1-D transforms: one G, B, A each, not two as in F(4x4, 5x5)).
"""

from __future__ import annotations

import numpy as np

from .._blas import gemm
from .._jit import REASSOC, cpu_inline, cpu_kernel, cpu_serial, prange
from .._threads import single_thread_blas
from .conv2d_hwc_cpu import bias_sum
from .conv2d_winograd5_tiles import a8, at8, b8, bt8, consts5, g8, gt8
from .conv2d_winograd_cpu import winograd_nonfinite
from .conv2d_winograd_tiles import plane_size

__all__ = ["scratch1d", "conv1d_forward_wino", "conv1d_backward_wino"]

_U64 = np.uint64
# A block's V and M (8 * tiles * (C + K) values) stay under this many elements (1 MiB of
# float32), as conv2d_winograd_cpu's blocks: next to BLAS's packing buffers in a 1 MiB L2.
_BLOCK_ELEMENTS = 256 * 1024


@cpu_kernel
def winograd1d_weights(w, U, c):
    """U[a, k*C + ch] = (G w[k, ch])[a] for a (K, C, 5) weight."""
    K, C = w.shape[:2]
    for k in prange(K):
        for ch in range(C):
            g = w[k, ch]
            u = g8((g[0], g[1], g[2], g[3], g[4]), c)
            o = k * C + ch
            U[0, o], U[1, o], U[2, o], U[3, o] = u[0], u[1], u[2], u[3]
            U[4, o], U[5, o], U[6, o], U[7, o] = u[4], u[5], u[6], u[7]


# The row routines index with unsigned offsets: a signed index gets a negative-index check per
# element, which keeps LLVM from vectorising the loops (as in _conv_columns). The four that the
# kernels call are compiled apart (cpu_serial), not inlined into the parallel loops: inlined,
# the forward kernel took 18 s and the backward 40 s to compile from an empty cache, apart 10 s
# and 17 s (a busy 2-core machine), with no run-time difference measured.
@cpu_inline
def _phases(row, buf, s, src, slots):
    """buf[j*s + u] = row[src + 4u + j] (0 outside row) for j < 4, u < slots: a row split into
    its 4 phases. Slots whose 4 values all lie inside copy in one loop (an interleaved load
    LLVM vectorises; four stride-4 loops ran 2.8x slower, measured)."""
    n = row.size
    zero = row.dtype.type(0)
    lo = min(slots, (3 - src) // 4) if src < 0 else 0
    hi = max(lo, min(slots, (n - 4 - src) // 4 + 1)) if n - 4 - src >= 0 else lo
    for u in range(lo):
        for j in range(4):
            p = src + 4 * u + j
            buf[_U64(j * s + u)] = row[_U64(p)] if p >= 0 and p < n else zero
    s1, s2, s3 = _U64(s), _U64(2 * s), _U64(3 * s)
    for ui in range(lo, hi):
        u = _U64(ui)
        p = _U64(src + 4 * ui)
        buf[u], buf[s1 + u], buf[s2 + u], buf[s3 + u] = row[p], row[p + _U64(1)], row[p + _U64(2)], row[p + _U64(3)]
    for u in range(hi, slots):
        for j in range(4):
            p = src + 4 * u + j
            buf[_U64(j * s + u)] = row[_U64(p)] if p >= 0 and p < n else zero


@cpu_inline
def _unphases(buf, s, row, dst, slots, add):
    """row[dst + 4u + j] = buf[j*s + u] (``add``: +=) where that lies inside row, j < 4, u <
    slots: _phases' inverse, interleaved stores in one loop where all 4 land inside."""
    n = row.size
    lo = min(slots, (3 - dst) // 4) if dst < 0 else 0
    hi = max(lo, min(slots, (n - 4 - dst) // 4 + 1)) if n - 4 - dst >= 0 else lo
    for u in range(lo):
        for j in range(4):
            p = dst + 4 * u + j
            if p >= 0 and p < n:
                row[_U64(p)] = row[_U64(p)] + buf[_U64(j * s + u)] if add else buf[_U64(j * s + u)]
    s1, s2, s3 = _U64(s), _U64(2 * s), _U64(3 * s)
    for ui in range(lo, hi):
        u = _U64(ui)
        p = _U64(dst + 4 * ui)
        if add:
            row[p] += buf[u]
            row[p + _U64(1)] += buf[s1 + u]
            row[p + _U64(2)] += buf[s2 + u]
            row[p + _U64(3)] += buf[s3 + u]
        else:
            row[p], row[p + _U64(1)], row[p + _U64(2)], row[p + _U64(3)] = buf[u], buf[s1 + u], buf[s2 + u], buf[s3 + u]
    for u in range(hi, slots):
        for j in range(4):
            p = dst + 4 * u + j
            if p >= 0 and p < n:
                row[_U64(p)] = row[_U64(p)] + buf[_U64(j * s + u)] if add else buf[_U64(j * s + u)]


@cpu_inline
def _nonfinite(row, lo, hi):
    """How many of row[lo:hi] are NaN or +-Inf."""
    bad = 0
    for i in range(lo, hi):
        v = row[_U64(i)]
        bad += np.int64(v - v != 0)
    return bad


@cpu_serial
def _input_row(xr, V, buf, o, i0, cnt, pl, c):
    """V[:, o + u] = B^T d for the tiles i0 + u, u < cnt, of the row xr padded by pl on the
    left (zero outside): buf holds the padded row's 4 phases, cnt + 1 slots each."""
    s = cnt + 1
    _phases(xr, buf, s, 4 * i0 - pl, s)
    s1, s2, s3, one = _U64(s), _U64(2 * s), _U64(3 * s), _U64(1)
    for ui in range(cnt):
        u = _U64(ui)
        v = bt8((buf[u], buf[s1 + u], buf[s2 + u], buf[s3 + u],
                 buf[u + one], buf[s1 + u + one], buf[s2 + u + one], buf[s3 + u + one]), c)
        q = _U64(o) + u
        V[0, q], V[1, q], V[2, q], V[3, q] = v[0], v[1], v[2], v[3]
        V[4, q], V[5, q], V[6, q], V[7, q] = v[4], v[5], v[6], v[7]


@cpu_serial
def _output_row(M, yr, bk, buf, o, i0, cnt, c):
    """yr[4(i0 + u) + r] = (A^T M[:, o + u])[r] + bk, for the outputs inside yr; returns how
    many of them are NaN or +-Inf."""
    s1, s2, s3 = _U64(cnt), _U64(2 * cnt), _U64(3 * cnt)
    for ui in range(cnt):
        u = _U64(ui)
        q = _U64(o) + u
        r = at8((M[0, q], M[1, q], M[2, q], M[3, q], M[4, q], M[5, q], M[6, q], M[7, q]), c)
        buf[u], buf[s1 + u], buf[s2 + u], buf[s3 + u] = r[0] + bk, r[1] + bk, r[2] + bk, r[3] + bk
    _unphases(buf, cnt, yr, 4 * i0, cnt, False)
    return _nonfinite(yr, 4 * i0, min(yr.size, 4 * (i0 + cnt)))


@cpu_serial
def _grad_row(gyr, M, buf, o, i0, cnt, c):
    """M[:, o + u] = A gy for the tiles i0 + u of the row gyr (zero past its end); returns how
    many of gyr's values read are NaN or +-Inf."""
    _phases(gyr, buf, cnt, 4 * i0, cnt)
    s1, s2, s3 = _U64(cnt), _U64(2 * cnt), _U64(3 * cnt)
    for ui in range(cnt):
        u = _U64(ui)
        z = a8((buf[u], buf[s1 + u], buf[s2 + u], buf[s3 + u]), c)
        q = _U64(o) + u
        M[0, q], M[1, q], M[2, q], M[3, q] = z[0], z[1], z[2], z[3]
        M[4, q], M[5, q], M[6, q], M[7, q] = z[4], z[5], z[6], z[7]
    return _nonfinite(gyr, 4 * i0, min(gyr.size, 4 * (i0 + cnt)))


@cpu_serial
def _scatter_row(V, gxr, buf, o, i0, cnt, pl, c):
    """gxr[4(i0 + u) + j - pl] += (B V[:, o + u])[j] where that lies inside gxr: the tiles'
    input gradient, overlapping tiles summed (buf: 8 rows of cnt; rows 4-7 land one tile on)."""
    s = cnt
    for ui in range(cnt):
        u = _U64(ui)
        q = _U64(o) + u
        v = b8((V[0, q], V[1, q], V[2, q], V[3, q], V[4, q], V[5, q], V[6, q], V[7, q]), c)
        buf[u], buf[_U64(s) + u], buf[_U64(2 * s) + u], buf[_U64(3 * s) + u] = v[0], v[1], v[2], v[3]
        buf[_U64(4 * s) + u], buf[_U64(5 * s) + u], buf[_U64(6 * s) + u], buf[_U64(7 * s) + u] = v[4], v[5], v[6], v[7]
    _unphases(buf, s, gxr, 4 * i0 - pl, cnt, True)
    _unphases(buf[4 * s:], s, gxr, 4 * i0 - pl + 4, cnt, True)


@cpu_kernel
def conv1d_forward_winograd(x, U, b, V, M, R, y, pl, tiles, c, nonfinite):
    """y[n] = conv1d(x[n]) + b (b empty: no bias), a 5-tap kernel at stride 1 with pl padding on
    the left. Chunk t of the batch runs blocks of ``tiles`` tile columns (whole samples, or part
    of one long sample) through V[t], M[t] and R[t]. nonfinite[t] = how many of chunk t's
    outputs are NaN or +-Inf."""
    N, K, Q = y.shape
    C = x.shape[1]
    T = V.shape[0]
    tw = (Q + 3) // 4
    g = max(1, tiles // tw)
    tb = min(tw, tiles)
    zero = y.dtype.type(0)
    for t in prange(T):
        bad = 0
        n1 = (t + 1) * N // T
        for nb in range(t * N // T, n1, g):
            ne = min(n1, nb + g)
            for i0 in range(0, tw, tb):
                cnt = min(tw, i0 + tb) - i0
                nt = (ne - nb) * cnt
                for n in range(nb, ne):
                    for ch in range(C):
                        _input_row(x[n, ch], V[t], R[t], ch * nt + (n - nb) * cnt, i0, cnt, pl, c)
                for a in range(8):  # M[a] (K, nt) = U[a] (K, C) @ V[a] (C, nt)
                    gemm(False, False, K, nt, C, U[a], C, V[t, a], nt, 0, M[t, a], nt)
                for n in range(nb, ne):
                    for k in range(K):
                        bk = b[k] if b.size else zero
                        bad += _output_row(M[t], y[n, k], bk, R[t], k * nt + (n - nb) * cnt, i0, cnt, c)
        nonfinite[t] = bad


@cpu_kernel
def conv1d_backward_winograd(x, U, gy, V, M, R, part, gx, pl, tiles, want_gx, c, nonfinite):
    """part[t, a] (K, C) = chunk t's weight gradient in the transformed domain; gx[n] (when
    ``want_gx``) = the input gradient. x's tiles are transformed again here (nothing is kept
    from the forward); blocks as the forward's. nonfinite[t] = how many of chunk t's values of
    gy are NaN or +-Inf."""
    N, K, Q = gy.shape
    C = x.shape[1]
    T = V.shape[0]
    tw = (Q + 3) // 4
    g = max(1, tiles // tw)
    tb = min(tw, tiles)
    for t in prange(T):
        bad = 0
        n0, n1 = t * N // T, (t + 1) * N // T
        for nb in range(n0, n1, g):
            ne = min(n1, nb + g)
            for i0 in range(0, tw, tb):
                cnt = min(tw, i0 + tb) - i0
                nt = (ne - nb) * cnt
                for n in range(nb, ne):
                    for k in range(K):
                        bad += _grad_row(gy[n, k], M[t], R[t], k * nt + (n - nb) * cnt, i0, cnt, c)
                    for ch in range(C):
                        _input_row(x[n, ch], V[t], R[t], ch * nt + (n - nb) * cnt, i0, cnt, pl, c)
                beta = 0 if nb == n0 and i0 == 0 else 1
                for a in range(8):
                    # part[t, a] (+)= Z[a] (K, nt) @ V[a]^T; then V[a] = U[a]^T @ Z[a], the tiles' gradient
                    gemm(False, True, K, C, nt, M[t, a], nt, V[t, a], nt, beta, part[t, a], C)
                    if want_gx:
                        gemm(True, False, C, nt, K, U[a], C, M[t, a], nt, 0, V[t, a], nt)
                if want_gx:
                    for n in range(nb, ne):
                        if i0 == 0:
                            gx[n].reshape(gx[n].size)[:] = 0
                        for ch in range(C):
                            _scatter_row(V[t], gx[n, ch], R[t], ch * nt + (n - nb) * cnt, i0, cnt, pl, c)
        nonfinite[t] = bad


@cpu_kernel(fastmath=REASSOC)  # the bias sum runs in vector lanes; NaN/Inf still propagate
def winograd1d_reduce(part, gw, gy3, gb, c):
    """gw[k, ch] += G^T (the chunks' part[:, :, k*C + ch] summed); gb += gy3 summed (if any)."""
    T = part.shape[0]
    K, C = gw.shape[:2]
    for k in prange(K):
        for ch in range(C):
            o = k * C + ch
            u0, u1, u2, u3 = part[0, 0, o], part[0, 1, o], part[0, 2, o], part[0, 3, o]
            u4, u5, u6, u7 = part[0, 4, o], part[0, 5, o], part[0, 6, o], part[0, 7, o]
            for t in range(1, T):
                u0, u1, u2, u3 = u0 + part[t, 0, o], u1 + part[t, 1, o], u2 + part[t, 2, o], u3 + part[t, 3, o]
                u4, u5, u6, u7 = u4 + part[t, 4, o], u5 + part[t, 5, o], u6 + part[t, 6, o], u7 + part[t, 7, o]
            r = gt8((u0, u1, u2, u3, u4, u5, u6, u7), c)
            gw[k, ch, 0] += r[0]
            gw[k, ch, 1] += r[1]
            gw[k, ch, 2] += r[2]
            gw[k, ch, 3] += r[3]
            gw[k, ch, 4] += r[4]
        if gb.size:
            gb[k] += bias_sum(gy3, k)


def scratch1d(N: int, T: int, C: int, K: int, Q: int) -> tuple[dict[str, tuple[int, ...]], int]:
    """Scratch shapes for a batch of N in T chunks giving Q outputs per row, and the tile
    columns per block: whole samples while 2 or more fit in _BLOCK_ELEMENTS (as evenly as
    the largest chunk allows), else one sample's tiles in as few equal blocks as fit."""
    tw = (Q + 3) // 4
    room = max(1, _BLOCK_ELEMENTS // (8 * (C + K)))  # tile columns
    if room >= 2 * tw:
        per_chunk = -(-N // T)
        g = min(room // tw, per_chunk)
        tiles = -(-per_chunk // -(-per_chunk // g)) * tw
    else:
        tiles = -(-tw // -(-tw // room))
    tb = min(tw, tiles)
    return {"U": (8, K * C), "V": (T, 8, plane_size(tiles, C)), "M": (T, 8, plane_size(tiles, K)),
            "R": (T, 8 * (tb + 1)), "part": (T, 8, K * C), "nonfinite": (T,)}, tiles


def _rows(a: np.ndarray) -> np.ndarray:
    # An (N, C, 1, L) array (conv2d's view of a conv1d's) as (N, C, L), sharing its memory.
    return a.reshape(a.shape[0], a.shape[1], a.shape[-1])


def conv1d_forward_wino(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, U: np.ndarray,
                        V: np.ndarray, M: np.ndarray, R: np.ndarray, nonfinite: np.ndarray, pl: int,
                        tiles: int) -> bool:
    """y = conv1d(x, w) + b on (N, C, 1, L) views (w: (K, C, 1, 5); pl: left padding), with the
    scratch ``scratch1d`` shapes. False when x or w holds NaN or Inf: then y is not PyTorch's,
    and the im2col path must recompute it."""
    c = consts5(x.dtype)
    with single_thread_blas:
        winograd1d_weights(_rows(w), U, c)
        conv1d_forward_winograd(_rows(x), U, b, V, M, R, _rows(y), pl, tiles, c, nonfinite)
    if not nonfinite.any():
        return True
    return winograd_nonfinite(x.reshape(-1)) == 0 and winograd_nonfinite(w.reshape(-1)) == 0


def conv1d_backward_wino(x: np.ndarray, w: np.ndarray, gy: np.ndarray, gw: np.ndarray, gb: np.ndarray,
                         gx: np.ndarray | None, U: np.ndarray, V: np.ndarray, M: np.ndarray, R: np.ndarray,
                         part: np.ndarray, nonfinite: np.ndarray, pl: int, tiles: int) -> bool:
    """gw += the weight gradient, gb += the bias gradient (gb empty: no bias), gx = the input
    gradient (None: not wanted), on (N, C, 1, L) views. False when gy holds NaN or Inf: then gw
    and gb are left alone, gx is not PyTorch's, and the im2col path must compute all three."""
    c = consts5(x.dtype)
    gw3 = _rows(gw)
    if not np.shares_memory(gw3, gw):
        raise ValueError("conv1d_backward_wino: the weight gradient must be contiguous (it is added into)")
    with single_thread_blas:
        winograd1d_weights(_rows(w), U, c)
        conv1d_backward_winograd(_rows(x), U, _rows(gy), V, M, R, part, _rows(x if gx is None else gx), pl, tiles,
                                 gx is not None, c, nonfinite)
        if nonfinite.any():
            return False
        winograd1d_reduce(part, gw3, _rows(gy), gb, c)
    return True

