"""conv2d CPU, Winograd F(4x4, 3x3): the tile transforms (conv2d_winograd_cpu runs them).

The 1-D transforms of F(4, 3) (B^T, A^T, G and the transposes the backward needs), and the
four tile routines the kernels call per block of tile rows: input tiles to V, V's gradient
back to the image, M to output pixels, the output gradient to M. A block may hold several
samples' tiles one after the other (small images, conv2d_winograd_cpu): ``r0`` is where a
sample's tile rows start in the block, in V, M and pix alike. Each works on 16 channels
at a time in a small per-thread buffer (see the note above _LANES).
"""

from __future__ import annotations

import numpy as np

from .._jit import cpu_call, cpu_inline, cpu_serial

_U64 = np.uint64


def plane_size(tiles: int, channels: int) -> int:
    """Elements per transform point (plane) of V or M: the transforms touch all planes at
    once, so planes a multiple of 4 KiB apart would share L1 sets (measured: the input
    transform ran 5x slower). Whole 64-byte lines, an odd number of them."""
    lines = -(-tiles * channels // 16)
    return 16 * (lines + 1 - lines % 2)


def group_rows(tr: int, th: int, N: int, T: int) -> int:
    """Tile rows per block, given room for ``tr`` of them, a sample's ``th`` and a batch of N in
    T chunks. Room for two samples or more: whole samples, their tiles one after the other, so
    each product runs over them all (one small image alone gives BLAS products a few rows
    high), as evenly as the largest chunk allows. Else as many rows as room for, spread
    evenly over the sample's blocks."""
    if tr >= 2 * th:
        per_chunk = -(-N // T)
        g = min(tr // th, per_chunk)
        return -(-per_chunk // -(-per_chunk // g)) * th
    return -(-th // -(-th // tr))


# The 1-D transforms of F(4, 3) and the transposes the backward needs. ``c`` holds the
# constants in the arrays' dtype: (2, 4, 5, 8) for B and A, (1/4, 1/6, 1/12, 1/24) for G.
@cpu_call
def _bt(d, c):  # B^T d
    d0, d1, d2, d3, d4, d5 = d
    two, four, five, _ = c
    t1, t2 = d4 - four * d2, d3 - four * d1
    t3, t4 = d4 - d2, two * (d3 - d1)
    return four * d0 - five * d2 + d4, t1 + t2, t1 - t2, t3 + t4, t3 - t4, four * d1 - five * d3 + d5


@cpu_call
def _b(v, c):  # B v
    v0, v1, v2, v3, v4, v5 = v
    two, four, five, _ = c
    return (four * v0, four * (v2 - v1 + v5) + two * (v4 - v3), -five * v0 - four * (v1 + v2) - v3 - v4,
            v1 - v2 + two * (v3 - v4) - five * v5, v0 + v1 + v2 + v3 + v4, v5)


@cpu_call
def _at(m, c):  # A^T m
    m0, m1, m2, m3, m4, m5 = m
    two, four, _, eight = c
    s12, d12, s34, d34 = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    return m0 + s12 + s34, d12 + two * d34, s12 + four * s34, d12 + eight * d34 + m5


@cpu_call
def _a(y, c):  # A y
    y0, y1, y2, y3 = y
    two, four, _, eight = c
    s02, d13 = y0 + four * y2, two * y1 + eight * y3
    return y0, y0 + y1 + y2 + y3, y0 - y1 + y2 - y3, s02 + d13, s02 - d13, y3


@cpu_call
def g_transform(g, c):  # G g
    g0, g1, g2 = g
    q, s, t, f = c  # 1/4, 1/6, 1/12, 1/24
    e = f * g0 + s * g2
    return q * g0, -s * (g0 + g1 + g2), -s * (g0 - g1 + g2), e + t * g1, e - t * g1, g2


@cpu_call
def gt_transform(u, c):  # G^T u
    u0, u1, u2, u3, u4, u5 = u
    q, s, t, f = c
    return (q * u0 - s * (u1 + u2) + f * (u3 + u4), s * (u2 - u1) + t * (u3 - u4),
            s * (u3 + u4 - u1 - u2) + u5)


@cpu_call
def ld6(f, o, step):
    return f[o], f[o + step], f[o + 2 * step], f[o + 3 * step], f[o + 4 * step], f[o + 5 * step]


@cpu_call
def _st6(f, o, step, v):
    f[o] = v[0]
    f[o + step] = v[1]
    f[o + 2 * step] = v[2]
    f[o + 3 * step] = v[3]
    f[o + 4 * step] = v[4]
    f[o + 5 * step] = v[5]


@cpu_call
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
        c0 = f(ld6(R, x0, row), c)  # column 0 of F x
        c1 = f(ld6(R, x0 + col, row), c)
        c2 = f(ld6(R, x0 + 2 * col, row), c)
        c3 = f(ld6(R, x0 + 3 * col, row), c)
        c4 = f(ld6(R, x0 + 4 * col, row), c)
        c5 = f(ld6(R, x0 + 5 * col, row), c)
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
        r0 = _at(ld6(R, x0, row), c)  # column 0 of A^T m
        r1 = _at(ld6(R, x0 + col, row), c)
        r2 = _at(ld6(R, x0 + 2 * col, row), c)
        r3 = _at(ld6(R, x0 + 3 * col, row), c)
        r4 = _at(ld6(R, x0 + 4 * col, row), c)
        r5 = _at(ld6(R, x0 + 5 * col, row), c)
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
def input_tiles(xp, V, R, i0, i1, r0, tw, sub, ns, nsub, c):
    """V[6a + b, t, sub*C + ch] = (B^T d B)[a, b] for the tiles t = (r0 + i - i0)*tw + j of tile
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
            ov = _U64((((r0 + i - i0) * tw + j) * nsub + sub) * C)
            for c0 in range(0, C, _LANES):
                n = min(_LANES, C - c0)
                for a in range(6):
                    for b in range(6):
                        _copy(R, _U64((6 * a + b) * _LANES), xf, o + _U64(a) * row + _U64(b) * col + _U64(c0), n, False)
                _square_lanes(R, c, _bt)
                for e in range(36):
                    _copy(vf, _U64(e) * plane + ov + _U64(c0), R, _U64(_OUT + e * _LANES), n, False)


@cpu_serial
def input_tiles_grad(V, gxp, R, i0, i1, r0, tw, sub, ns, nsub, c):
    """The transpose of input_tiles: gxp[4i+du:4i+du+6, 4j+dv:4j+dv+6, ch] += B V[:, t,
    sub*C + ch] B^T."""
    Hp, Wp, C = gxp.shape
    du, dv = 3 * (sub // ns), 3 * (sub % ns)
    xf, vf = gxp.reshape(gxp.size), V.reshape(V.size)
    row, col, plane = _U64(Wp * C), _U64(C), _U64(V.shape[1])
    for i in range(i0, i1):
        for j in range(tw):
            o = _U64(((4 * i + du) * Wp + 4 * j + dv) * C)
            ov = _U64((((r0 + i - i0) * tw + j) * nsub + sub) * C)
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
def output_tiles(M, pix, R, i0, i1, r0, P, Q, c):
    """pix = A^T M A per tile of tile rows [i0, i1): pix holds their output pixels, row
    (p + 4*(r0 - i0))*Q + q, a column per channel (tiles hanging over the edge are cut)."""
    K = pix.shape[1]
    tw = (Q + 3) // 4
    mf, pf = M.reshape(M.size), pix.reshape(pix.size)
    plane, pk, pq = _U64(M.shape[1]), _U64(K), _U64(Q * K)
    for i in range(i0, i1):
        rows = min(4, P - 4 * i)
        for j in range(tw):
            cols = min(4, Q - 4 * j)
            om = _U64(((r0 + i - i0) * tw + j) * K)
            op = _U64((4 * (r0 + i - i0) * Q + 4 * j) * K)
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
def output_tiles_grad(pix, M, R, i0, i1, r0, P, Q, c):
    """The transpose of output_tiles: M[:, t, k] = A dy A^T for each 4x4 tile dy of pix
    (pixels outside the output read as zero)."""
    K = pix.shape[1]
    tw = (Q + 3) // 4
    mf, pf = M.reshape(M.size), pix.reshape(pix.size)
    plane, pk, pq = _U64(M.shape[1]), _U64(K), _U64(Q * K)
    for i in range(i0, i1):
        rows = min(4, P - 4 * i)
        for j in range(tw):
            cols = min(4, Q - 4 * j)
            om = _U64(((r0 + i - i0) * tw + j) * K)
            op = _U64((4 * (r0 + i - i0) * Q + 4 * j) * K)
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
