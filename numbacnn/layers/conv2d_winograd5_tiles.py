"""conv2d CPU, Winograd F(4x4, 5x5): the tile transforms (conv2d_winograd5_cpu runs them).

F(4, 5) on the points 0, +-1, +-2, +-1/2 and infinity (the set F(6, 3) uses: Lavin & Gray;
NNPACK): an 8x8 input tile gives a 4x4 block of outputs of a 5x5 filter with 64
multiplications instead of 400. The 1-D transforms below are the rows of

    A^T (4x8) = [1  1  1  1  1   1    1   0]    G (8x5) = [  1     0     0     0     0 ]
                [0  1 -1  2 -2  1/2 -1/2  0]              [-2/9  -2/9  -2/9  -2/9  -2/9]
                [0  1  1  4  4  1/4  1/4  0]              [-2/9   2/9  -2/9   2/9  -2/9]
                [0  1 -1  8 -8  1/8 -1/8  1]              [ 1/90  1/45  2/45  4/45  8/45]
                                                          [ 1/90 -1/45  2/45 -4/45  8/45]
    B^T (8x8) = [1   0   -21/4   0    21/4   0   -1 0]    [32/45 16/45  8/45  4/45  2/45]
                [0   1    1   -17/4 -17/4    1    1 0]    [32/45 -16/45 8/45 -4/45  2/45]
                [0  -1    1    17/4 -17/4   -1    1 0]    [  0     0     0     0     1 ]
                [0  1/2  1/4  -5/2  -5/4     2    1 0]
                [0 -1/2  1/4   5/2  -5/4    -2    1 0]
                [0   2    4   -5/2   -5     1/2   1 0]
                [0  -2    4    5/2   -5    -1/2   1 0]
                [0  -1    0    21/4   0   -21/4   0 1]

and their transposes for the backward (tests/layers/test_conv2d_winograd5.py checks each
against these matrices). The four tile routines work as conv2d_winograd_tiles' do: 16
channels at a time in a small per-thread buffer R, whose constant offsets let LLVM run the
transform in vector lanes.
"""

from __future__ import annotations

import functools

import numpy as np

from .._jit import cpu_call, cpu_inline, cpu_serial
from .conv2d_winograd_tiles import _copy, _st4

_U64 = np.uint64


# ``c`` holds the constants in the arrays' dtype (consts5): the exact binary fractions of A and
# B, then G's ninths and forty-fifths.
@cpu_call
def bt8(d, c):  # B^T d
    d0, d1, d2, d3, d4, d5, d6, d7 = d
    half, quarter, two, four, five, f425, f525, f25, f125 = c[:9]
    e1, o1 = d2 + d6 - f425 * d4, d1 + d5 - f425 * d3
    e2, o2 = quarter * d2 - f125 * d4 + d6, half * d1 - f25 * d3 + two * d5
    e3, o3 = four * d2 - five * d4 + d6, two * d1 - f25 * d3 + half * d5
    return (d0 - d6 + f525 * (d4 - d2), e1 + o1, e1 - o1, e2 + o2, e2 - o2, e3 + o3, e3 - o3,
            d7 - d1 + f525 * (d3 - d5))


@cpu_call
def b8(v, c):  # B v
    v0, v1, v2, v3, v4, v5, v6, v7 = v
    half, quarter, two, four, five, f425, f525, f25, f125 = c[:9]
    s12, d12, s34, d34, s56, d56 = v1 + v2, v1 - v2, v3 + v4, v3 - v4, v5 + v6, v5 - v6
    return (v0, d12 + half * d34 + two * d56 - v7, s12 + quarter * s34 + four * s56 - f525 * v0,
            f525 * v7 - f425 * d12 - f25 * (d34 + d56), f525 * v0 - f425 * s12 - f125 * s34 - five * s56,
            d12 + two * d34 + half * d56 - f525 * v7, s12 + s34 + s56 - v0, v7)


@cpu_call
def at8(m, c):  # A^T m
    m0, m1, m2, m3, m4, m5, m6, m7 = m
    half, quarter, two, four = c[:4]
    eighth, eight = c[9], c[10]
    s12, d12, s34, d34, s56, d56 = m1 + m2, m1 - m2, m3 + m4, m3 - m4, m5 + m6, m5 - m6
    return (m0 + s12 + s34 + s56, d12 + two * d34 + half * d56, s12 + four * s34 + quarter * s56,
            d12 + eight * d34 + eighth * d56 + m7)


@cpu_call
def a8(y, c):  # A y
    y0, y1, y2, y3 = y
    half, quarter, two, four = c[:4]
    eighth, eight = c[9], c[10]
    e1, o1 = y0 + y2, y1 + y3
    e2, o2 = y0 + four * y2, two * y1 + eight * y3
    e3, o3 = y0 + quarter * y2, half * y1 + eighth * y3
    return y0, e1 + o1, e1 - o1, e2 + o2, e2 - o2, e3 + o3, e3 - o3, y3


@cpu_call
def g8(g, c):  # G g
    g0, g1, g2, g3, g4 = g
    two, four, eight, sixteen = c[2], c[3], c[10], c[11]
    n29, n90, n245 = c[12], c[13], c[14]  # -2/9, 1/90, 2/45
    e1, o1 = g0 + g2 + g4, g1 + g3
    e2, o2 = g0 + four * g2 + sixteen * g4, two * g1 + eight * g3
    e3, o3 = sixteen * g0 + four * g2 + g4, eight * g1 + two * g3
    return (g0, n29 * (e1 + o1), n29 * (e1 - o1), n90 * (e2 + o2), n90 * (e2 - o2), n245 * (e3 + o3),
            n245 * (e3 - o3), g4)


@cpu_call
def gt8(u, c):  # G^T u
    u0, u1, u2, u3, u4, u5, u6, u7 = u
    two, four, eight, sixteen = c[2], c[3], c[10], c[11]
    n29, n90, n245 = c[12], c[13], c[14]
    s12, d12 = n29 * (u1 + u2), n29 * (u1 - u2)
    s34, d34 = n90 * (u3 + u4), n90 * (u3 - u4)
    s56, d56 = n245 * (u5 + u6), n245 * (u5 - u6)
    return (u0 + s12 + s34 + sixteen * s56, d12 + two * d34 + eight * d56, s12 + four * s34 + four * s56,
            d12 + eight * d34 + two * d56, s12 + sixteen * s34 + s56 + u7)


@functools.lru_cache(maxsize=None)
def consts5(dtype: np.dtype) -> tuple:
    """The constants the transforms take, in ``dtype`` (built once per dtype: 3.3 us a call, a
    tenth of network3's conv2 at batch 1)."""
    f = np.dtype(dtype).type
    return (f(0.5), f(0.25), f(2), f(4), f(5), f(4.25), f(5.25), f(2.5), f(1.25), f(0.125), f(8), f(16),
            f(-2) / f(9), f(1) / f(90), f(2) / f(45))


@cpu_call
def ld8(f, o, step):
    return (f[o], f[o + step], f[o + 2 * step], f[o + 3 * step], f[o + 4 * step], f[o + 5 * step],
            f[o + 6 * step], f[o + 7 * step])


@cpu_call
def _st8(f, o, step, v):  # constant indices throughout: a tuple indexed by a loop variable is spilled
    f[o] = v[0]
    f[o + step] = v[1]
    f[o + 2 * step] = v[2]
    f[o + 3 * step] = v[3]
    f[o + 4 * step] = v[4]
    f[o + 5 * step] = v[5]
    f[o + 6 * step] = v[6]
    f[o + 7 * step] = v[7]


_LANES = 16
_OUT = 64 * _LANES
LANES_SCRATCH5 = 128 * _LANES  # elements of R


@cpu_inline
def _col(t, i):  # (t[0][i], ..., t[7][i]); callers pass a constant i
    return t[0][i], t[1][i], t[2][i], t[3][i], t[4][i], t[5][i], t[6][i], t[7][i]


@cpu_inline
def _square_lanes(R, c, f):
    """R[_OUT + (8a + b)*L + l] = (F x F^T)[a, b] with x from R[(8r + s)*L + l], F the 8x8 1-D
    transform ``f`` (bt8: B^T d B; b8: B v B^T)."""
    row, col = _U64(8 * _LANES), _U64(_LANES)
    for l in range(_LANES):
        x0 = _U64(l)
        v0 = _U64(_OUT + l)
        cs = (f(ld8(R, x0, row), c), f(ld8(R, x0 + col, row), c), f(ld8(R, x0 + 2 * col, row), c),
              f(ld8(R, x0 + 3 * col, row), c), f(ld8(R, x0 + 4 * col, row), c), f(ld8(R, x0 + 5 * col, row), c),
              f(ld8(R, x0 + 6 * col, row), c), f(ld8(R, x0 + 7 * col, row), c))  # cs[s] = column s of F x
        _st8(R, v0, col, f(_col(cs, 0), c))
        _st8(R, v0 + row, col, f(_col(cs, 1), c))
        _st8(R, v0 + 2 * row, col, f(_col(cs, 2), c))
        _st8(R, v0 + 3 * row, col, f(_col(cs, 3), c))
        _st8(R, v0 + 4 * row, col, f(_col(cs, 4), c))
        _st8(R, v0 + 5 * row, col, f(_col(cs, 5), c))
        _st8(R, v0 + 6 * row, col, f(_col(cs, 6), c))
        _st8(R, v0 + 7 * row, col, f(_col(cs, 7), c))


@cpu_inline
def _at_lanes(R, c):  # R[_OUT + (4a + s)*L + l] = (A^T m A)[a, s], m from R[(8e + f)*L + l]
    row, col = _U64(8 * _LANES), _U64(_LANES)
    for l in range(_LANES):
        x0 = _U64(l)
        y0 = _U64(_OUT + l)
        rs = (at8(ld8(R, x0, row), c), at8(ld8(R, x0 + col, row), c), at8(ld8(R, x0 + 2 * col, row), c),
              at8(ld8(R, x0 + 3 * col, row), c), at8(ld8(R, x0 + 4 * col, row), c), at8(ld8(R, x0 + 5 * col, row), c),
              at8(ld8(R, x0 + 6 * col, row), c), at8(ld8(R, x0 + 7 * col, row), c))  # rs[f] = column f of A^T m
        _st4(R, y0, col, at8(_col(rs, 0), c))
        _st4(R, y0 + 4 * col, col, at8(_col(rs, 1), c))
        _st4(R, y0 + 8 * col, col, at8(_col(rs, 2), c))
        _st4(R, y0 + 12 * col, col, at8(_col(rs, 3), c))


@cpu_inline
def _a_lanes(R, c):  # R[_OUT + (8e + f)*L + l] = (A y A^T)[e, f], y from R[(4a + s)*L + l]
    row, col = _U64(4 * _LANES), _U64(_LANES)
    eight = _U64(8 * _LANES)
    for l in range(_LANES):
        x0 = _U64(l)
        m0 = _U64(_OUT + l)
        zs = (a8((R[x0], R[x0 + row], R[x0 + 2 * row], R[x0 + 3 * row]), c),
              a8((R[x0 + col], R[x0 + col + row], R[x0 + col + 2 * row], R[x0 + col + 3 * row]), c),
              a8((R[x0 + 2 * col], R[x0 + 2 * col + row], R[x0 + 2 * col + 2 * row], R[x0 + 2 * col + 3 * row]), c),
              a8((R[x0 + 3 * col], R[x0 + 3 * col + row], R[x0 + 3 * col + 2 * row], R[x0 + 3 * col + 3 * row]), c))
        z0, z1, z2, z3 = zs  # z_s = column s of A y
        _st8(R, m0, col, a8((z0[0], z1[0], z2[0], z3[0]), c))
        _st8(R, m0 + eight, col, a8((z0[1], z1[1], z2[1], z3[1]), c))
        _st8(R, m0 + 2 * eight, col, a8((z0[2], z1[2], z2[2], z3[2]), c))
        _st8(R, m0 + 3 * eight, col, a8((z0[3], z1[3], z2[3], z3[3]), c))
        _st8(R, m0 + 4 * eight, col, a8((z0[4], z1[4], z2[4], z3[4]), c))
        _st8(R, m0 + 5 * eight, col, a8((z0[5], z1[5], z2[5], z3[5]), c))
        _st8(R, m0 + 6 * eight, col, a8((z0[6], z1[6], z2[6], z3[6]), c))
        _st8(R, m0 + 7 * eight, col, a8((z0[7], z1[7], z2[7], z3[7]), c))


@cpu_serial
def input_tiles5(xp, V, R, i0, i1, r0, tw, c):
    """V[8a + b, t, ch] = (B^T d B)[a, b] for the tiles t = (r0 + i - i0)*tw + j of tile rows
    [i0, i1), d = xp[4i:4i+8, 4j:4j+8, ch] (r0: where the sample's tiles start in the block)."""
    Hp, Wp, C = xp.shape
    xf, vf = xp.reshape(xp.size), V.reshape(V.size)
    row, col, plane = _U64(Wp * C), _U64(C), _U64(V.shape[1])
    for i in range(i0, i1):
        for j in range(tw):
            o = _U64((4 * i * Wp + 4 * j) * C)
            ov = _U64(((r0 + i - i0) * tw + j) * C)
            for c0 in range(0, C, _LANES):
                n = min(_LANES, C - c0)
                for a in range(8):
                    for b in range(8):
                        _copy(R, _U64((8 * a + b) * _LANES), xf, o + _U64(a) * row + _U64(b) * col + _U64(c0), n, False)
                _square_lanes(R, c, bt8)
                for e in range(64):
                    _copy(vf, _U64(e) * plane + ov + _U64(c0), R, _U64(_OUT + e * _LANES), n, False)


@cpu_serial
def input_tiles5_grad(V, gxp, R, i0, i1, r0, tw, c):
    """The transpose of input_tiles5: gxp[4i:4i+8, 4j:4j+8, ch] += B V[:, t, ch] B^T."""
    Hp, Wp, C = gxp.shape
    xf, vf = gxp.reshape(gxp.size), V.reshape(V.size)
    row, col, plane = _U64(Wp * C), _U64(C), _U64(V.shape[1])
    for i in range(i0, i1):
        for j in range(tw):
            o = _U64((4 * i * Wp + 4 * j) * C)
            ov = _U64(((r0 + i - i0) * tw + j) * C)
            for c0 in range(0, C, _LANES):
                n = min(_LANES, C - c0)
                for e in range(64):
                    _copy(R, _U64(e * _LANES), vf, _U64(e) * plane + ov + _U64(c0), n, False)
                _square_lanes(R, c, b8)
                for a in range(8):
                    for b in range(8):
                        _copy(xf, o + _U64(a) * row + _U64(b) * col + _U64(c0), R, _U64(_OUT + (8 * a + b) * _LANES), n,
                              True)


@cpu_serial
def output_tiles5(M, yn, b, R, i0, i1, r0, c, relu):
    """yn[k, 4i + a, 4j + s] = (A^T M[:, t, k] A)[a, s] + b[k] (b empty: no bias) for the tiles
    t of tile rows [i0, i1) (tiles hanging over the edge are cut), through relu's rule when
    ``relu`` (NaN kept, -0.0 to 0); returns how many of the sums are NaN or +-Inf (counted before
    the relu, which would hide a -Inf). Written straight into the (K, P, Q) output: a pixel-major
    buffer transposed afterwards took longer than the transform."""
    K, P, Q = yn.shape
    tw = (Q + 3) // 4
    mf, yf = M.reshape(M.size), yn.reshape(yn.size)
    plane = _U64(M.shape[1])
    zero = yn.dtype.type(0)
    bad = 0
    for i in range(i0, i1):
        rows = min(4, P - 4 * i)
        for j in range(tw):
            cols = min(4, Q - 4 * j)
            om = _U64(((r0 + i - i0) * tw + j) * K)
            for k0 in range(0, K, _LANES):
                n = min(_LANES, K - k0)
                for e in range(64):
                    _copy(R, _U64(e * _LANES), mf, _U64(e) * plane + om + _U64(k0), n, False)
                _at_lanes(R, c)
                for l in range(n):
                    bk = b[k0 + l] if b.size else zero
                    for a in range(rows):
                        o = _U64(((k0 + l) * P + 4 * i + a) * Q + 4 * j)
                        for s in range(cols):
                            v = R[_U64(_OUT + (4 * a + s) * _LANES + l)] + bk
                            yf[o + _U64(s)] = (zero if v <= zero else v) if relu else v
                            bad += np.int64(v - v != 0)  # NaN or +-Inf: v - v is 0 for the rest
    return bad


@cpu_serial
def output_tiles5_grad(gyn, M, R, i0, i1, r0, c):
    """The transpose of output_tiles5: M[:, t, k] = A dy A^T for each 4x4 tile dy of the output
    gradient gyn (K, P, Q) (pixels outside it read as zero); returns how many of the values
    read are NaN or +-Inf."""
    K, P, Q = gyn.shape
    tw = (Q + 3) // 4
    mf, gf = M.reshape(M.size), gyn.reshape(gyn.size)
    plane = _U64(M.shape[1])
    zero = gyn.dtype.type(0)
    bad = 0
    for i in range(i0, i1):
        rows = min(4, P - 4 * i)
        for j in range(tw):
            cols = min(4, Q - 4 * j)
            om = _U64(((r0 + i - i0) * tw + j) * K)
            for k0 in range(0, K, _LANES):
                n = min(_LANES, K - k0)
                for l in range(n):
                    for a in range(4):
                        o = _U64(((k0 + l) * P + 4 * i + a) * Q + 4 * j)
                        for s in range(4):
                            g = zero
                            if a < rows and s < cols:
                                g = gf[o + _U64(s)]
                                bad += np.int64(g - g != 0)
                            R[_U64((4 * a + s) * _LANES + l)] = g
                _a_lanes(R, c)
                for e in range(64):
                    _copy(mf, _U64(e) * plane + om + _U64(k0), R, _U64(_OUT + e * _LANES), n, False)
    return bad
