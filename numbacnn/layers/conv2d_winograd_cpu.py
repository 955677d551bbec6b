"""conv2d CPU, 3x3 stride 1: Winograd's minimal filtering F(2x2, 3x3) with BLAS products.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). A 2x2 block of
outputs of one 3x3 filter is ``A^T [(G g G^T) * (B^T d B)] A`` for the 4x4 input tile d that
covers it: 16 multiplications instead of 36. Summed over input channels, the products become
16 independent matrix products, one per point e of the 4x4 transform:

    M[e] (tiles, K) = V[e] (tiles, C) @ U[e] (C, K),   V = B^T d B,  U = G g G^T,

2.25 times fewer multiply-adds than the direct convolution, in BLAS. The backward is the chain
rule through the same formula: with Z[e] = (A dy A^T)[e] for each 2x2 tile of the output
gradient, the weight gradient is ``G^T (sum over tiles of V[e]^T @ Z[e]) G`` and the input
gradient of a tile ``B (Z[e] @ U[e]^T) B^T``, added back where neighbouring tiles overlap.

The layout follows the pixel-major path (conv2d_cpu): each sample becomes a zero-padded HWC
image (padded up to whole tiles), and its tiles are processed a block of tile rows at a time,
sized to keep V and M in L2. The transforms run over contiguous channels (vectorised); the
products run with one BLAS thread inside a parallel loop over chunks of the batch. The weight
gradient accumulates per chunk (no two threads write the same partial) and is summed and
transformed back by ``winograd_reduce``. The arithmetic differs from the direct sum by
rounding only (F(2x2, 3x3)'s transforms hold 0, +-1 and 1/2).
"""

from __future__ import annotations

import numpy as np

from .._blas import gemm
from .._jit import REASSOC, cpu_inline, cpu_kernel, prange
from .._threads import single_thread_blas
from .conv2d_cpu import _bias_sum, _to_hwc

# Tile block: the transformed input and output of a block (16 * tiles * (C + K) values) stay
# under this many float32 elements (1 MiB), next to BLAS's packing buffers in a 2 MiB L2.
_BLOCK_ELEMENTS = 256 * 1024
_U64 = np.uint64


# The four 1-D transforms of F(2, 3) and their transposes (used by the backward).
@cpu_inline
def _bt(d):  # B^T d
    d0, d1, d2, d3 = d
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@cpu_inline
def _b(v):  # B v (the input gradient of B^T d)
    v0, v1, v2, v3 = v
    return v0, v1 - v2 + v3, v2 + v1 - v0, -v3


@cpu_inline
def _at(m):  # A^T m
    m0, m1, m2, m3 = m
    return m0 + m1 + m2, m1 - m2 - m3


@cpu_inline
def _a(y0, y1):  # A y (the gradient of A^T m)
    return y0, y0 + y1, y0 - y1, -y1


@cpu_inline
def _g(g0, g1, g2, half):  # G g
    return g0, half * (g0 + g1 + g2), half * (g0 - g1 + g2), g2


@cpu_inline
def _gt(u0, u1, u2, u3, half):  # G^T u (the gradient of G g)
    return u0 + half * (u1 + u2), half * (u1 - u2), half * (u1 + u2) + u3


@cpu_inline
def _load16(f, o, step):
    """The 16 values f[o + e*step], e = 0..15 (one tile point each), as a tuple."""
    return (f[o], f[o + step], f[o + 2 * step], f[o + 3 * step], f[o + 4 * step], f[o + 5 * step],
            f[o + 6 * step], f[o + 7 * step], f[o + 8 * step], f[o + 9 * step], f[o + 10 * step],
            f[o + 11 * step], f[o + 12 * step], f[o + 13 * step], f[o + 14 * step], f[o + 15 * step])


def tile_rows(tw: int, C: int, K: int) -> int:
    """Tile rows per block (tw tiles each) for C input and K output channels."""
    return max(1, _BLOCK_ELEMENTS // (16 * tw * (C + K)))


def plane_size(tiles: int, channels: int) -> int:
    """Elements per transform point (plane) of V or M: the transforms touch all 16 planes at
    once, so planes a multiple of 4 KiB apart would share L1 sets (measured: the input
    transform ran 5x slower). Whole 64-byte lines, an odd number of them."""
    lines = -(-tiles * channels // 16)
    return 16 * (lines + 1 - lines % 2)


@cpu_inline
def _load4(f, o, step):
    return f[o], f[o + step], f[o + 2 * step], f[o + 3 * step]


@cpu_inline
def _store4(f, o, step, v):
    f[o] = v[0]
    f[o + step] = v[1]
    f[o + 2 * step] = v[2]
    f[o + 3 * step] = v[3]


@cpu_inline
def _add4(f, o, step, v):
    f[o] += v[0]
    f[o + step] += v[1]
    f[o + 2 * step] += v[2]
    f[o + 3 * step] += v[3]


# The tile loops below name every point with a constant index: a tuple indexed by a loop
# variable is spilled to the stack, and then LLVM does not vectorise over the channels.
@cpu_inline
def _input_tiles(xp, V, i0, i1):
    """V[a*4 + b, t, c] = (B^T d B)[a, b] for the tiles t = (i - i0)*tw + j of tile rows
    [i0, i1), d = xp[2i:2i+4, 2j:2j+4, c]."""
    Hp, Wp, C = xp.shape
    tw = (Wp - 2) // 2
    xf = xp.reshape(xp.size)
    vf = V.reshape(V.size)
    row, col, plane = _U64(Wp * C), _U64(C), _U64(V.shape[1])
    for i in range(i0, i1):
        for j in range(tw):
            o = _U64((2 * i * Wp + 2 * j) * C)
            ov = _U64(((i - i0) * tw + j) * C)
            for c in range(C):
                x0, v0 = o + _U64(c), ov + _U64(c)
                c0 = _bt(_load4(xf, x0, row))
                c1 = _bt(_load4(xf, x0 + col, row))
                c2 = _bt(_load4(xf, x0 + 2 * col, row))
                c3 = _bt(_load4(xf, x0 + 3 * col, row))
                _store4(vf, v0, plane, _bt((c0[0], c1[0], c2[0], c3[0])))
                _store4(vf, v0 + 4 * plane, plane, _bt((c0[1], c1[1], c2[1], c3[1])))
                _store4(vf, v0 + 8 * plane, plane, _bt((c0[2], c1[2], c2[2], c3[2])))
                _store4(vf, v0 + 12 * plane, plane, _bt((c0[3], c1[3], c2[3], c3[3])))


@cpu_inline
def _input_tiles_grad(V, gxp, i0, i1):
    """The transpose of _input_tiles: gxp[2i:2i+4, 2j:2j+4, c] += B V[:, t, c] B^T."""
    Hp, Wp, C = gxp.shape
    tw = (Wp - 2) // 2
    xf = gxp.reshape(gxp.size)
    vf = V.reshape(V.size)
    row, col, plane = _U64(Wp * C), _U64(C), _U64(V.shape[1])
    for i in range(i0, i1):
        for j in range(tw):
            o = _U64((2 * i * Wp + 2 * j) * C)
            ov = _U64(((i - i0) * tw + j) * C)
            for c in range(C):
                x0, v0 = o + _U64(c), ov + _U64(c)
                r0 = _b(_load4(vf, v0, 4 * plane))
                r1 = _b(_load4(vf, v0 + plane, 4 * plane))
                r2 = _b(_load4(vf, v0 + 2 * plane, 4 * plane))
                r3 = _b(_load4(vf, v0 + 3 * plane, 4 * plane))
                _add4(xf, x0, col, _b((r0[0], r1[0], r2[0], r3[0])))
                _add4(xf, x0 + row, col, _b((r0[1], r1[1], r2[1], r3[1])))
                _add4(xf, x0 + 2 * row, col, _b((r0[2], r1[2], r2[2], r3[2])))
                _add4(xf, x0 + 3 * row, col, _b((r0[3], r1[3], r2[3], r3[3])))


@cpu_inline
def _output_tiles(M, pix, i0, i1, P, Q):
    """pix = A^T M A per tile of tile rows [i0, i1): pix holds their output pixels, row
    (p - 2*i0)*Q + q, a column per channel (tiles hanging over the edge are cut)."""
    K = pix.shape[1]
    tw = (Q + 1) // 2
    mf = M.reshape(M.size)
    pf = pix.reshape(pix.size)
    plane, pk = _U64(M.shape[1]), _U64(K)
    for i in range(i0, i1):
        two_rows = 2 * i + 1 < P
        for j in range(tw):
            two_cols = 2 * j + 1 < Q
            om = _U64(((i - i0) * tw + j) * K)
            op = _U64((2 * (i - i0) * Q + 2 * j) * K)
            oq = op + _U64(Q * K)
            for k in range(K):
                m0, p0, q0 = om + _U64(k), op + _U64(k), oq + _U64(k)
                r0 = _at(_load4(mf, m0, 4 * plane))
                r1 = _at(_load4(mf, m0 + plane, 4 * plane))
                r2 = _at(_load4(mf, m0 + 2 * plane, 4 * plane))
                r3 = _at(_load4(mf, m0 + 3 * plane, 4 * plane))
                y0 = _at((r0[0], r1[0], r2[0], r3[0]))
                y1 = _at((r0[1], r1[1], r2[1], r3[1]))
                pf[p0] = y0[0]
                if two_cols:
                    pf[p0 + pk] = y0[1]
                if two_rows:
                    pf[q0] = y1[0]
                    if two_cols:
                        pf[q0 + pk] = y1[1]


@cpu_inline
def _output_tiles_grad(pix, M, i0, i1, P, Q):
    """The transpose of _output_tiles: M[:, t, k] = A dy A^T for each 2x2 tile dy of pix
    (pixels outside the output read as zero)."""
    K = pix.shape[1]
    tw = (Q + 1) // 2
    mf = M.reshape(M.size)
    pf = pix.reshape(pix.size)
    plane, pk = _U64(M.shape[1]), _U64(K)
    zero = M.dtype.type(0)
    for i in range(i0, i1):
        two_rows = 2 * i + 1 < P
        for j in range(tw):
            two_cols = 2 * j + 1 < Q
            om = _U64(((i - i0) * tw + j) * K)
            op = _U64((2 * (i - i0) * Q + 2 * j) * K)
            oq = op + _U64(Q * K)
            for k in range(K):
                m0, p0, q0 = om + _U64(k), op + _U64(k), oq + _U64(k)
                y00 = pf[p0]
                y01 = pf[p0 + pk] if two_cols else zero
                y10 = pf[q0] if two_rows else zero
                y11 = pf[q0 + pk] if two_rows and two_cols else zero
                z0 = _a(y00, y10)  # A dy, column 0
                z1 = _a(y01, y11)
                _store4(mf, m0, plane, _a(z0[0], z1[0]))
                _store4(mf, m0 + 4 * plane, plane, _a(z0[1], z1[1]))
                _store4(mf, m0 + 8 * plane, plane, _a(z0[2], z1[2]))
                _store4(mf, m0 + 12 * plane, plane, _a(z0[3], z1[3]))


@cpu_kernel
def winograd_weights(w, U):
    """U[a*4 + b, c, k] = (G w[k, c] G^T)[a, b]."""
    K, C = w.shape[0], w.shape[1]
    half = w.dtype.type(0.5)
    for k in prange(K):
        for c in range(C):
            g = w[k, c]
            c0 = _g(g[0, 0], g[1, 0], g[2, 0], half)
            c1 = _g(g[0, 1], g[1, 1], g[2, 1], half)
            c2 = _g(g[0, 2], g[1, 2], g[2, 2], half)
            for a in range(4):
                u = _g(c0[a], c1[a], c2[a], half)
                for s in range(4):
                    U[4 * a + s, c, k] = u[s]


@cpu_kernel
def conv2d_forward_winograd(x, U, b, xp, V, M, pix, y, pt, pl, tr):
    """y[n] = conv2d(x[n]) + b, 3x3 stride 1. Scratch per chunk t of the batch: V[t] (16,
    plane_size(tr*tw, C)), M[t] (16, plane_size(tr*tw, K)), pix[t] (2*tr*Q, K); xp: padded HWC images, one per chunk
    or one per sample (N: kept for the backward)."""
    N, K, P, Q = y.shape
    T, C = V.shape[0], x.shape[1]
    th, tw = (P + 1) // 2, (Q + 1) // 2
    L = P * Q
    for t in prange(T):
        for n in range(t * N // T, (t + 1) * N // T):
            xpn = xp[n] if xp.shape[0] == N else xp[t]
            _to_hwc(x[n], xpn, pt, pl)
            yn = y[n].reshape(K, L)
            for i0 in range(0, th, tr):
                i1 = min(th, i0 + tr)
                nt = (i1 - i0) * tw
                _input_tiles(xpn, V[t], i0, i1)
                for e in range(16):
                    gemm(False, False, nt, K, C, V[t, e], C, U[e].reshape(C * K), K, 0, M[t, e], K)
                _output_tiles(M[t], pix[t], i0, i1, P, Q)
                la, lb = 2 * i0 * Q, min(P, 2 * i1) * Q
                for k in range(K):
                    bk = b[k] if b.size else yn.dtype.type(0)
                    for l in range(la, lb):
                        yn[k, l] = pix[t, l - la, k] + bk


@cpu_kernel
def conv2d_backward_winograd(x, U, gy, xp, gxp, V, M, pix, part, gx, pt, pl, tr, want_gx):
    """part[t] (16, C, K) = chunk t's weight gradient in the transformed domain; gx[n] (when
    ``want_gx``) = the input gradient, gathered in the padded HWC scratch gxp[t]. xp: the
    forward's padded HWC images, one per sample."""
    N, K, P, Q = gy.shape
    T, C, H, W = V.shape[0], x.shape[1], x.shape[2], x.shape[3]
    th, tw = (P + 1) // 2, (Q + 1) // 2
    L = P * Q
    for t in prange(T):
        n0 = t * N // T
        for n in range(n0, (t + 1) * N // T):
            if want_gx:
                gxp[t].reshape(gxp[t].size)[:] = 0
            gyn = gy[n].reshape(K, L)
            for i0 in range(0, th, tr):
                i1 = min(th, i0 + tr)
                nt = (i1 - i0) * tw
                la, lb = 2 * i0 * Q, min(P, 2 * i1) * Q
                for l in range(la, lb):
                    for k in range(K):
                        pix[t, l - la, k] = gyn[k, l]
                _input_tiles(xp[n], V[t], i0, i1)
                _output_tiles_grad(pix[t], M[t], i0, i1, P, Q)
                beta = 0 if n == n0 and i0 == 0 else 1
                for e in range(16):
                    ve, me = V[t, e], M[t, e]
                    # part[t, e] (+)= V[e]^T @ Z[e]; then V[e] = Z[e] @ U[e]^T, the tiles' gradient
                    gemm(True, False, C, K, nt, ve, C, me, K, beta, part[t, e].reshape(C * K), K)
                    if want_gx:
                        gemm(False, True, nt, C, K, me, K, U[e].reshape(C * K), K, 0, ve, C)
                if want_gx:
                    _input_tiles_grad(V[t], gxp[t], i0, i1)
            if want_gx:
                for c in range(C):
                    for h in range(H):
                        for w in range(W):
                            gx[n, c, h, w] = gxp[t, h + pt, w + pl, c]


@cpu_kernel(fastmath=REASSOC)  # the bias sum runs in vector lanes; NaN/Inf still propagate
def winograd_reduce(part, gw, gy3, gb):
    """gw[k, c] += G^T (sum of the chunks' part[:, :, c, k]) G; gb += gy3 summed (if any)."""
    T, _, C, K = part.shape
    half = gw.dtype.type(0.5)
    pf = part.reshape(part.size)
    plane = _U64(C * K)
    for k in prange(K):
        for c in range(C):
            o = _U64(c * K + k)
            for t in range(1, T):  # the chunks' sums into part[0], which this k owns
                for e in range(16):
                    pf[o + _U64(e) * plane] += pf[o + _U64(t * 16 + e) * plane]
            u = _load16(pf, o, plane)
            r0 = _gt(u[0], u[4], u[8], u[12], half)
            r1 = _gt(u[1], u[5], u[9], u[13], half)
            r2 = _gt(u[2], u[6], u[10], u[14], half)
            r3 = _gt(u[3], u[7], u[11], u[15], half)
            for a in range(3):
                g = _gt(r0[a], r1[a], r2[a], r3[a], half)
                for s in range(3):
                    gw[k, c, a, s] += g[s]
        if gb.size:
            gb[k] += _bias_sum(gy3, k)


def padded_shape(x_shape: tuple[int, ...], P: int, Q: int) -> tuple[int, int, int]:
    """The padded HWC image of one sample: whole 4x4 tiles at stride 2 over a P x Q output."""
    return 2 * ((P + 1) // 2) + 2, 2 * ((Q + 1) // 2) + 2, x_shape[1]


def conv2d_forward_wino(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, U: np.ndarray,
                        xp: np.ndarray, V: np.ndarray, M: np.ndarray, pix: np.ndarray, pads: tuple[int, int],
                        tr: int) -> None:
    """y = conv2d(x, w) + b (3x3, stride 1, groups 1). ``U`` (16, C, K) receives the
    transformed weights (the backward takes them from there). Scratch: ``xp`` (T or N,
    padded_shape), per chunk ``V`` (T, 16, plane_size(tr*tw, C)), ``M`` (T, 16, plane_size(tr*tw, K)), ``pix``
    (T, 2*tr*Q, K)."""
    with single_thread_blas:
        winograd_weights(w, U)
        conv2d_forward_winograd(x, U, b, xp, V, M, pix, y, pads[0], pads[1], tr)


def conv2d_backward_wino(x: np.ndarray, gy: np.ndarray, gw: np.ndarray, gb: np.ndarray, gx: np.ndarray | None,
                         U: np.ndarray, xp: np.ndarray, gxp: np.ndarray | None, V: np.ndarray, M: np.ndarray,
                         pix: np.ndarray, part: np.ndarray, pads: tuple[int, int], tr: int) -> None:
    """gw += the weight gradient, gb += the bias gradient, gx = the input gradient (None: not
    wanted; then ``gxp`` may be None). ``U`` and ``xp`` (one image per sample) as the forward
    left them; scratch as there, plus ``gxp`` (T, padded_shape) and ``part`` (T, 16, C, K)."""
    N, K = gy.shape[:2]
    with single_thread_blas:
        conv2d_backward_winograd(x, U, gy, xp, xp if gxp is None else gxp, V, M, pix, part,
                                 x if gx is None else gx, pads[0], pads[1], tr, gx is not None)
        winograd_reduce(part, gw, gy.reshape(N, K, -1), gb)
