"""conv2d CPU, stride 1: Winograd's minimal filtering F(4x4, 3x3) with BLAS products.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). A 4x4 block of
outputs of one 3x3 filter is ``A^T [(G g G^T) * (B^T d B)] A`` for the 6x6 input tile d that
covers it: 36 multiplications instead of 144. Summed over input channels, the products become
36 independent matrix products, one per point e of the 6x6 transform:

    M[e] (tiles, K) = V[e] (tiles, C) @ U[e] (C, K),   V = B^T d B,  U = G g G^T,

four times fewer multiply-adds than the direct convolution, in BLAS. The backward is the chain
rule through the same formula: with Z[e] = (A dy A^T)[e] for each 4x4 tile of the output
gradient, the weight gradient is ``G^T (sum over tiles of V[e]^T @ Z[e]) G`` and the input
gradient of a tile ``B (Z[e] @ U[e]^T) B^T``, added back where neighbouring tiles overlap.

A larger kernel (up to 6x6) is cut into 3x3 sub-kernels, zero past its edge: a 5x5 one is
four, each seeing the tiles shifted by 0 or 3 pixels. Their transformed tiles sit side by side
in V's rows (nsub*C columns) and their transformed weights stacked in U, so the same 36
products sum over every sub-kernel at once: 9 multiplications per output and channel pair
instead of 25.

The layout follows the pixel-major path (conv2d_cpu): each sample becomes a zero-padded HWC
image (padded up to whole tiles), and its tiles are processed a block of tile rows at a time,
sized to keep V and M in L2. The transforms run over contiguous channels; the products run
with one BLAS thread inside a parallel loop over chunks of the batch. The weight gradient
accumulates per chunk (no two threads write the same partial) and is summed and transformed
back by ``winograd_reduce``.

Rounding: the transforms' constants (the points 0, +-1, +-2) make float32 results about ten
times further from the exact ones than the direct sum's (measured 3e-6 against 3e-7 of the
largest output, 64 channels); float64 stays at 1e-15. F(2x2, 3x3) would round like the
direct sum, but its four-times-larger transformed tiles made it 1.5x slower here.
"""

from __future__ import annotations

import numpy as np

from .._blas import gemm
from .._jit import REASSOC, cpu_inline, cpu_kernel, cpu_serial, prange
from .._threads import single_thread_blas
from .conv2d_cpu import _bias_sum, _from_hwc, _to_hwc

# Tile block: the transformed input and output of a block (36 * tiles * (C + K) values) stay
# under this many float32 elements (1 MiB), next to BLAS's packing buffers in a 2 MiB L2.
_BLOCK_ELEMENTS = 256 * 1024
_U64 = np.uint64


# The 1-D transforms of F(4, 3) and the transposes the backward needs. ``c`` holds the
# constants in the arrays' dtype: (2, 4, 5, 8) for B and A, (1/4, 1/6, 1/12, 1/24) for G.
@cpu_inline
def _bt(d, c):  # B^T d
    d0, d1, d2, d3, d4, d5 = d
    two, four, five, _ = c
    t1, t2 = d4 - four * d2, d3 - four * d1
    t3, t4 = d4 - d2, two * (d3 - d1)
    return four * d0 - five * d2 + d4, t1 + t2, t1 - t2, t3 + t4, t3 - t4, four * d1 - five * d3 + d5


@cpu_inline
def _b(v, c):  # B v
    v0, v1, v2, v3, v4, v5 = v
    two, four, five, _ = c
    return (four * v0, four * (v2 - v1 + v5) + two * (v4 - v3), -five * v0 - four * (v1 + v2) - v3 - v4,
            v1 - v2 + two * (v3 - v4) - five * v5, v0 + v1 + v2 + v3 + v4, v5)


@cpu_inline
def _at(m, c):  # A^T m
    m0, m1, m2, m3, m4, m5 = m
    two, four, _, eight = c
    s12, d12, s34, d34 = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    return m0 + s12 + s34, d12 + two * d34, s12 + four * s34, d12 + eight * d34 + m5


@cpu_inline
def _a(y, c):  # A y
    y0, y1, y2, y3 = y
    two, four, _, eight = c
    s02, d13 = y0 + four * y2, two * y1 + eight * y3
    return y0, y0 + y1 + y2 + y3, y0 - y1 + y2 - y3, s02 + d13, s02 - d13, y3


@cpu_inline
def _g(g, c):  # G g
    g0, g1, g2 = g
    q, s, t, f = c  # 1/4, 1/6, 1/12, 1/24
    e = f * g0 + s * g2
    return q * g0, -s * (g0 + g1 + g2), -s * (g0 - g1 + g2), e + t * g1, e - t * g1, g2


@cpu_inline
def _gt(u, c):  # G^T u
    u0, u1, u2, u3, u4, u5 = u
    q, s, t, f = c
    return (q * u0 - s * (u1 + u2) + f * (u3 + u4), s * (u2 - u1) + t * (u3 - u4),
            s * (u3 + u4 - u1 - u2) + u5)


@cpu_inline
def _ld6(f, o, step):
    return f[o], f[o + step], f[o + 2 * step], f[o + 3 * step], f[o + 4 * step], f[o + 5 * step]


@cpu_inline
def _st6(f, o, step, v):
    f[o] = v[0]
    f[o + step] = v[1]
    f[o + 2 * step] = v[2]
    f[o + 3 * step] = v[3]
    f[o + 4 * step] = v[4]
    f[o + 5 * step] = v[5]


@cpu_inline
def _st4(f, o, step, v):
    f[o] = v[0]
    f[o + step] = v[1]
    f[o + 2 * step] = v[2]
    f[o + 3 * step] = v[3]


@cpu_inline
def _copy(dst, od, src, os, n, add):
    """dst[od:od+n] (+)= src[os:os+n]."""
    for i in range(n):
        if add:
            dst[od + _U64(i)] += src[os + _U64(i)]
        else:
            dst[od + _U64(i)] = src[os + _U64(i)]


@cpu_inline
def _zero(dst, od, n):
    for i in range(n):
        dst[od + _U64(i)] = dst.dtype.type(0)


def tile_rows(tw: int, C: int, K: int) -> int:
    """Tile rows per block (tw tiles each) for C input and K output channels."""
    return max(1, _BLOCK_ELEMENTS // (36 * tw * (C + K)))


def plane_size(tiles: int, channels: int) -> int:
    """Elements per transform point (plane) of V or M: the transforms touch all 36 planes at
    once, so planes a multiple of 4 KiB apart would share L1 sets (measured: the input
    transform ran 5x slower). Whole 64-byte lines, an odd number of them."""
    lines = -(-tiles * channels // 16)
    return 16 * (lines + 1 - lines % 2)


def _consts(dtype: np.dtype) -> tuple[tuple, tuple]:
    f = np.dtype(dtype).type
    return (f(2), f(4), f(5), f(8)), (f(1) / f(4), f(1) / f(6), f(1) / f(12), f(1) / f(24))


# The tile transforms work on _LANES channels at a time in a small per-thread buffer R: the
# tile's points are copied in (R[e*_LANES + l], point e, channel c0 + l), transformed there and
# the results copied out (from R[_OUT + e*_LANES + l]). Inside R every offset is a constant,
# so LLVM vectorises the transform over the lanes; run straight over the planes and images
# (36 arrays' worth of unknown offsets) it stayed scalar and took 3.4x longer (7.7 against
# 2.3 ms for the input transform of N32-64x32x32 on one thread). Points are named with
# constant indices throughout: a tuple indexed by a loop variable is spilled to the stack.
_LANES = 16
_OUT = 36 * _LANES
LANES_SCRATCH = 72 * _LANES  # elements of R


@cpu_inline
def _square_lanes(R, c, f):
    """R[_OUT + (6a + b)*L + l] = (F x F^T)[a, b] with x from R[(6r + s)*L + l], F the 6x6 1-D
    transform ``f`` (_bt: B^T d B; _b: B v B^T)."""
    row, col = _U64(6 * _LANES), _U64(_LANES)
    for l in range(_LANES):
        x0 = _U64(l)
        v0 = _U64(_OUT + l)
        c0 = f(_ld6(R, x0, row), c)  # column 0 of F x
        c1 = f(_ld6(R, x0 + col, row), c)
        c2 = f(_ld6(R, x0 + 2 * col, row), c)
        c3 = f(_ld6(R, x0 + 3 * col, row), c)
        c4 = f(_ld6(R, x0 + 4 * col, row), c)
        c5 = f(_ld6(R, x0 + 5 * col, row), c)
        _st6(R, v0, col, f((c0[0], c1[0], c2[0], c3[0], c4[0], c5[0]), c))
        _st6(R, v0 + row, col, f((c0[1], c1[1], c2[1], c3[1], c4[1], c5[1]), c))
        _st6(R, v0 + 2 * row, col, f((c0[2], c1[2], c2[2], c3[2], c4[2], c5[2]), c))
        _st6(R, v0 + 3 * row, col, f((c0[3], c1[3], c2[3], c3[3], c4[3], c5[3]), c))
        _st6(R, v0 + 4 * row, col, f((c0[4], c1[4], c2[4], c3[4], c4[4], c5[4]), c))
        _st6(R, v0 + 5 * row, col, f((c0[5], c1[5], c2[5], c3[5], c4[5], c5[5]), c))


@cpu_inline
def _at_lanes(R, c):  # R[_OUT + (4a + s)*L + l] = (A^T m A)[a, s], m from R[(6e + f)*L + l]
    row, col = _U64(6 * _LANES), _U64(_LANES)
    for l in range(_LANES):
        x0 = _U64(l)
        y0 = _U64(_OUT + l)
        r0 = _at(_ld6(R, x0, row), c)  # column 0 of A^T m
        r1 = _at(_ld6(R, x0 + col, row), c)
        r2 = _at(_ld6(R, x0 + 2 * col, row), c)
        r3 = _at(_ld6(R, x0 + 3 * col, row), c)
        r4 = _at(_ld6(R, x0 + 4 * col, row), c)
        r5 = _at(_ld6(R, x0 + 5 * col, row), c)
        _st4(R, y0, col, _at((r0[0], r1[0], r2[0], r3[0], r4[0], r5[0]), c))
        _st4(R, y0 + 4 * col, col, _at((r0[1], r1[1], r2[1], r3[1], r4[1], r5[1]), c))
        _st4(R, y0 + 8 * col, col, _at((r0[2], r1[2], r2[2], r3[2], r4[2], r5[2]), c))
        _st4(R, y0 + 12 * col, col, _at((r0[3], r1[3], r2[3], r3[3], r4[3], r5[3]), c))


@cpu_inline
def _a_lanes(R, c):  # R[_OUT + (6e + f)*L + l] = (A y A^T)[e, f], y from R[(4a + s)*L + l]
    row, col = _U64(4 * _LANES), _U64(_LANES)
    six = _U64(6 * _LANES)
    for l in range(_LANES):
        x0 = _U64(l)
        m0 = _U64(_OUT + l)
        y0 = (R[x0], R[x0 + row], R[x0 + 2 * row], R[x0 + 3 * row])  # column 0 of y
        y1 = (R[x0 + col], R[x0 + col + row], R[x0 + col + 2 * row], R[x0 + col + 3 * row])
        y2 = (R[x0 + 2 * col], R[x0 + 2 * col + row], R[x0 + 2 * col + 2 * row], R[x0 + 2 * col + 3 * row])
        y3 = (R[x0 + 3 * col], R[x0 + 3 * col + row], R[x0 + 3 * col + 2 * row], R[x0 + 3 * col + 3 * row])
        z0 = _a(y0, c)  # columns of A y
        z1 = _a(y1, c)
        z2 = _a(y2, c)
        z3 = _a(y3, c)
        _st6(R, m0, col, _a((z0[0], z1[0], z2[0], z3[0]), c))
        _st6(R, m0 + six, col, _a((z0[1], z1[1], z2[1], z3[1]), c))
        _st6(R, m0 + 2 * six, col, _a((z0[2], z1[2], z2[2], z3[2]), c))
        _st6(R, m0 + 3 * six, col, _a((z0[3], z1[3], z2[3], z3[3]), c))
        _st6(R, m0 + 4 * six, col, _a((z0[4], z1[4], z2[4], z3[4]), c))
        _st6(R, m0 + 5 * six, col, _a((z0[5], z1[5], z2[5], z3[5]), c))


@cpu_serial
def _input_tiles(xp, V, R, i0, i1, tw, sub, ns, nsub, c):
    """V[6a + b, t, sub*C + ch] = (B^T d B)[a, b] for the tiles t = (i - i0)*tw + j of tile
    rows [i0, i1), d = xp[4i+du:4i+du+6, 4j+dv:4j+dv+6, ch]: the tiles that sub-kernel ``sub``
    (of nsub, ``ns`` per row) sees, at (du, dv) = 3 * (sub // ns, sub % ns). A row of V holds
    every sub-kernel's C columns, so one product per point covers them all."""
    Hp, Wp, C = xp.shape
    du, dv = 3 * (sub // ns), 3 * (sub % ns)
    xf, vf = xp.reshape(xp.size), V.reshape(V.size)
    row, col, plane = _U64(Wp * C), _U64(C), _U64(V.shape[1])
    for i in range(i0, i1):
        for j in range(tw):
            o = _U64(((4 * i + du) * Wp + 4 * j + dv) * C)
            ov = _U64((((i - i0) * tw + j) * nsub + sub) * C)
            for c0 in range(0, C, _LANES):
                n = min(_LANES, C - c0)
                for a in range(6):
                    for b in range(6):
                        _copy(R, _U64((6 * a + b) * _LANES), xf, o + _U64(a) * row + _U64(b) * col + _U64(c0), n, False)
                _square_lanes(R, c, _bt)
                for e in range(36):
                    _copy(vf, _U64(e) * plane + ov + _U64(c0), R, _U64(_OUT + e * _LANES), n, False)


@cpu_serial
def _input_tiles_grad(V, gxp, R, i0, i1, tw, sub, ns, nsub, c):
    """The transpose of _input_tiles: gxp[4i+du:4i+du+6, 4j+dv:4j+dv+6, ch] += B V[:, t,
    sub*C + ch] B^T."""
    Hp, Wp, C = gxp.shape
    du, dv = 3 * (sub // ns), 3 * (sub % ns)
    xf, vf = gxp.reshape(gxp.size), V.reshape(V.size)
    row, col, plane = _U64(Wp * C), _U64(C), _U64(V.shape[1])
    for i in range(i0, i1):
        for j in range(tw):
            o = _U64(((4 * i + du) * Wp + 4 * j + dv) * C)
            ov = _U64((((i - i0) * tw + j) * nsub + sub) * C)
            for c0 in range(0, C, _LANES):
                n = min(_LANES, C - c0)
                for e in range(36):
                    _copy(R, _U64(e * _LANES), vf, _U64(e) * plane + ov + _U64(c0), n, False)
                _square_lanes(R, c, _b)
                for a in range(6):
                    for b in range(6):
                        _copy(xf, o + _U64(a) * row + _U64(b) * col + _U64(c0), R, _U64(_OUT + (6 * a + b) * _LANES), n,
                              True)


@cpu_serial
def _output_tiles(M, pix, R, i0, i1, P, Q, c):
    """pix = A^T M A per tile of tile rows [i0, i1): pix holds their output pixels, row
    (p - 4*i0)*Q + q, a column per channel (tiles hanging over the edge are cut)."""
    K = pix.shape[1]
    tw = (Q + 3) // 4
    mf, pf = M.reshape(M.size), pix.reshape(pix.size)
    plane, pk, pq = _U64(M.shape[1]), _U64(K), _U64(Q * K)
    for i in range(i0, i1):
        rows = min(4, P - 4 * i)
        for j in range(tw):
            cols = min(4, Q - 4 * j)
            om = _U64(((i - i0) * tw + j) * K)
            op = _U64((4 * (i - i0) * Q + 4 * j) * K)
            for k0 in range(0, K, _LANES):
                n = min(_LANES, K - k0)
                for e in range(36):
                    _copy(R, _U64(e * _LANES), mf, _U64(e) * plane + om + _U64(k0), n, False)
                _at_lanes(R, c)
                for a in range(rows):
                    for s in range(cols):
                        _copy(pf, op + _U64(a) * pq + _U64(s) * pk + _U64(k0), R, _U64(_OUT + (4 * a + s) * _LANES), n,
                              False)


@cpu_serial
def _output_tiles_grad(pix, M, R, i0, i1, P, Q, c):
    """The transpose of _output_tiles: M[:, t, k] = A dy A^T for each 4x4 tile dy of pix
    (pixels outside the output read as zero)."""
    K = pix.shape[1]
    tw = (Q + 3) // 4
    mf, pf = M.reshape(M.size), pix.reshape(pix.size)
    plane, pk, pq = _U64(M.shape[1]), _U64(K), _U64(Q * K)
    for i in range(i0, i1):
        rows = min(4, P - 4 * i)
        for j in range(tw):
            cols = min(4, Q - 4 * j)
            om = _U64(((i - i0) * tw + j) * K)
            op = _U64((4 * (i - i0) * Q + 4 * j) * K)
            for k0 in range(0, K, _LANES):
                n = min(_LANES, K - k0)
                for a in range(4):
                    for s in range(4):
                        if a < rows and s < cols:
                            _copy(R, _U64((4 * a + s) * _LANES), pf, op + _U64(a) * pq + _U64(s) * pk + _U64(k0), n,
                                  False)
                        else:
                            _zero(R, _U64((4 * a + s) * _LANES), n)
                _a_lanes(R, c)
                for e in range(36):
                    _copy(mf, _U64(e) * plane + om + _U64(k0), R, _U64(_OUT + e * _LANES), n, False)


@cpu_inline
def _tap(wk, r, s, zero):
    return wk[r, s] if r < wk.shape[0] and s < wk.shape[1] else zero


@cpu_kernel
def winograd_weights(w, U, cg):
    """U[0, 6a + b] = the (nsub*C, K) matrix, row sub*C + ch, of (G g G^T)[a, b] for the 3x3
    piece g of w[k, ch] that sub-kernel ``sub`` covers (zero past w's edge); U[1, 6a + b] its
    transpose, for the input gradient's products (BLAS ran them 1.5-2.5x slower transposing on
    the fly)."""
    K, C, KH, KW = w.shape
    ns = (KW + 2) // 3
    nsub = ((KH + 2) // 3) * ns
    J = nsub * C
    zero = w.dtype.type(0)
    for k in prange(K):
        for ch in range(C):
            for sub in range(nsub):
                r0, s0 = 3 * (sub // ns), 3 * (sub % ns)
                wk = w[k, ch]
                c0 = _g((_tap(wk, r0, s0, zero), _tap(wk, r0 + 1, s0, zero), _tap(wk, r0 + 2, s0, zero)), cg)
                c1 = _g((_tap(wk, r0, s0 + 1, zero), _tap(wk, r0 + 1, s0 + 1, zero), _tap(wk, r0 + 2, s0 + 1, zero)), cg)
                c2 = _g((_tap(wk, r0, s0 + 2, zero), _tap(wk, r0 + 1, s0 + 2, zero), _tap(wk, r0 + 2, s0 + 2, zero)), cg)
                for a in range(6):
                    u = _g((c0[a], c1[a], c2[a]), cg)
                    for s in range(6):
                        U[0, 6 * a + s, (sub * C + ch) * K + k] = u[s]
                        U[1, 6 * a + s, k * J + sub * C + ch] = u[s]


@cpu_kernel
def conv2d_forward_winograd(x, U, b, xp, V, M, pix, R, y, pt, pl, tr, ns, c):
    """y[n] = conv2d(x[n]) + b, stride 1, as the sum of the 3x3 sub-kernels' convolutions of
    shifted tiles (``ns`` of them per row). Scratch per chunk t of the batch: V[t], M[t], pix[t]
    and R[t] (``scratch``); xp: padded HWC images, one per chunk or one per sample (N: kept for
    the backward)."""
    N, K, P, Q = y.shape
    T = V.shape[0]
    J = U.shape[2] // K
    nsub = J // x.shape[1]
    th, tw = (P + 3) // 4, (Q + 3) // 4
    L = P * Q
    for t in prange(T):
        for n in range(t * N // T, (t + 1) * N // T):
            xpn = xp[n] if xp.shape[0] == N else xp[t]
            _to_hwc(x[n], xpn, pt, pl)
            yn = y[n].reshape(K, L)
            for i0 in range(0, th, tr):
                i1 = min(th, i0 + tr)
                nt = (i1 - i0) * tw
                for sub in range(nsub):
                    _input_tiles(xpn, V[t], R[t], i0, i1, tw, sub, ns, nsub, c)
                for e in range(36):
                    gemm(False, False, nt, K, J, V[t, e], J, U[0, e], K, 0, M[t, e], K)
                _output_tiles(M[t], pix[t], R[t], i0, i1, P, Q, c)
                la, lb = 4 * i0 * Q, min(P, 4 * i1) * Q
                for k in range(K):
                    bk = b[k] if b.size else yn.dtype.type(0)
                    for l in range(la, lb):
                        yn[k, l] = pix[t, l - la, k] + bk


@cpu_kernel
def conv2d_backward_winograd(x, U, gy, xp, gxp, V, M, pix, R, part, gx, pt, pl, tr, ns, want_gx, c):
    """part[t] (36, nsub*C, K) = chunk t's weight gradient in the transformed domain; gx[n] (when
    ``want_gx``) = the input gradient, gathered in the padded HWC scratch gxp[t]. xp: the
    forward's padded HWC images, one per sample."""
    N, K, P, Q = gy.shape
    T = V.shape[0]
    J = U.shape[2] // K
    nsub = J // x.shape[1]
    th, tw = (P + 3) // 4, (Q + 3) // 4
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
                la, lb = 4 * i0 * Q, min(P, 4 * i1) * Q
                for l in range(la, lb):
                    for k in range(K):
                        pix[t, l - la, k] = gyn[k, l]
                _output_tiles_grad(pix[t], M[t], R[t], i0, i1, P, Q, c)
                beta = 0 if n == n0 and i0 == 0 else 1
                for sub in range(nsub):
                    _input_tiles(xp[n], V[t], R[t], i0, i1, tw, sub, ns, nsub, c)
                for e in range(36):
                    ve, me = V[t, e], M[t, e]
                    # part[t, e] (+)= V[e]^T @ Z[e]; then V[e] = Z[e] @ U[e]^T, the tiles' gradient
                    gemm(True, False, J, K, nt, ve, J, me, K, beta, part[t, e].reshape(J * K), K)
                    if want_gx:
                        gemm(False, False, nt, J, K, me, K, U[1, e], J, 0, ve, J)
                if want_gx:
                    for sub in range(nsub):
                        _input_tiles_grad(V[t], gxp[t], R[t], i0, i1, tw, sub, ns, nsub, c)
            if want_gx:
                _from_hwc(gxp[t], gx[n], pt, pl)


@cpu_kernel(fastmath=REASSOC)  # the bias sum runs in vector lanes; NaN/Inf still propagate
def winograd_reduce(part, gw, gy3, gb, cg):
    """gw[k, ch] += G^T (sum of the chunks' part[:, :, sub*C + ch, k]) G for each sub-kernel, in
    the 3x3 piece of the kernel it covers; gb += gy3 summed (if any)."""
    T, _, J, K = part.shape
    C, KH, KW = gw.shape[1], gw.shape[2], gw.shape[3]
    ns = (KW + 2) // 3
    pf = part.reshape(part.size)
    plane = _U64(J * K)
    for k in prange(K):
        for ch in range(C):
            for sub in range(J // C):
                o = _U64((sub * C + ch) * K + k)
                for t in range(1, T):  # the chunks' sums into part[0], which this k owns
                    for e in range(36):
                        pf[o + _U64(e) * plane] += pf[o + _U64(t * 36 + e) * plane]
                u0 = _ld6(pf, o, plane)  # u0[b] = u[0, b]
                u1 = _ld6(pf, o + 6 * plane, plane)
                u2 = _ld6(pf, o + 12 * plane, plane)
                u3 = _ld6(pf, o + 18 * plane, plane)
                u4 = _ld6(pf, o + 24 * plane, plane)
                u5 = _ld6(pf, o + 30 * plane, plane)
                r0 = _gt((u0[0], u1[0], u2[0], u3[0], u4[0], u5[0]), cg)  # r0[a] = (G^T u)[a, 0]
                r1 = _gt((u0[1], u1[1], u2[1], u3[1], u4[1], u5[1]), cg)
                r2 = _gt((u0[2], u1[2], u2[2], u3[2], u4[2], u5[2]), cg)
                r3 = _gt((u0[3], u1[3], u2[3], u3[3], u4[3], u5[3]), cg)
                r4 = _gt((u0[4], u1[4], u2[4], u3[4], u4[4], u5[4]), cg)
                r5 = _gt((u0[5], u1[5], u2[5], u3[5], u4[5], u5[5]), cg)
                a0, s0 = 3 * (sub // ns), 3 * (sub % ns)
                for a in range(min(3, KH - a0)):
                    g = _gt((r0[a], r1[a], r2[a], r3[a], r4[a], r5[a]), cg)
                    for s in range(min(3, KW - s0)):
                        gw[k, ch, a0 + a, s0 + s] += g[s]
        if gb.size:
            gb[k] += _bias_sum(gy3, k)


def scratch(N: int, T: int, C: int, K: int, P: int, Q: int, kernel: tuple[int, int]
            ) -> tuple[dict[str, tuple[int, ...]], int]:
    """Shapes of the scratch arrays for a batch of N cut into T chunks (a P x Q output), and
    the tile rows per block: ``xp`` holds N padded HWC images (the forward keeps them for the
    backward; pass T there when no backward follows), ``part`` the weight gradient partials.
    A kernel larger than 3x3 is cut into 3x3 sub-kernels (``U`` holds each one's transform)."""
    th, tw = (P + 3) // 4, (Q + 3) // 4
    nr, ns = (kernel[0] + 2) // 3, (kernel[1] + 2) // 3
    J = nr * ns * C  # columns of the transformed input: every sub-kernel's channels
    tr = tile_rows(tw, J, K)
    tr = -(-th // -(-th // tr))  # as many tile rows as before, spread evenly over the blocks
    return {"U": (2, 36, J * K), "xp": (N, 4 * th + 3 * nr - 1, 4 * tw + 3 * ns - 1, C),
            "V": (T, 36, plane_size(tr * tw, J)), "M": (T, 36, plane_size(tr * tw, K)), "pix": (T, 4 * tr * Q, K),
            "R": (T, LANES_SCRATCH), "part": (T, 36, J, K)}, tr


def conv2d_forward_wino(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, U: np.ndarray,
                        xp: np.ndarray, V: np.ndarray, M: np.ndarray, pix: np.ndarray, R: np.ndarray,
                        pads: tuple[int, int], tr: int) -> None:
    """y = conv2d(x, w) + b (stride 1, groups 1; pads: top and left). ``U`` receives the
    transformed weights (the backward takes them from there); ``xp`` (N or T images), ``V``,
    ``M``, ``pix`` and ``R`` are scratch as ``scratch`` shapes them."""
    c, cg = _consts(x.dtype)
    with single_thread_blas:
        winograd_weights(w, U, cg)
        conv2d_forward_winograd(x, U, b, xp, V, M, pix, R, y, pads[0], pads[1], tr, (w.shape[3] + 2) // 3, c)


def conv2d_backward_wino(x: np.ndarray, gy: np.ndarray, gw: np.ndarray, gb: np.ndarray, gx: np.ndarray | None,
                         U: np.ndarray, xp: np.ndarray, gxp: np.ndarray | None, V: np.ndarray, M: np.ndarray,
                         pix: np.ndarray, R: np.ndarray, part: np.ndarray, pads: tuple[int, int], tr: int) -> None:
    """gw += the weight gradient, gb += the bias gradient, gx = the input gradient (None: not
    wanted; then ``gxp`` may be None). ``U`` and ``xp`` (one image per sample) as the forward
    left them; scratch as there, plus ``gxp`` (T padded images) and ``part``."""
    N, K = gy.shape[:2]
    c, cg = _consts(x.dtype)
    with single_thread_blas:
        conv2d_backward_winograd(x, U, gy, xp, xp if gxp is None else gxp, V, M, pix, R, part,
                                 x if gx is None else gx, pads[0], pads[1], tr, (gw.shape[3] + 2) // 3, gx is not None, c)
        winograd_reduce(part, gw, gy.reshape(N, K, -1), gb, cg)
