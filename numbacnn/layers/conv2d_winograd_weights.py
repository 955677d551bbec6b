"""conv2d CPU, Winograd F(4x4, 3x3): the weight side (conv2d_winograd_cpu runs the rest).

``winograd_weights`` turns w into U, the 36 (sub-kernels x C, K) matrices of G g G^T the
products multiply by, and ``winograd_reduce`` sums the chunks' transformed weight gradients
and takes them back through G^T . G into gw (with the bias gradient).
"""

from __future__ import annotations

import numpy as np

from .._jit import REASSOC, cpu_inline, cpu_kernel, prange
from .conv2d_hwc_cpu import bias_sum
from .conv2d_winograd_tiles import g_transform, gt_transform, ld6

_U64 = np.uint64


@cpu_inline
def _tap(wk, r, s, zero):
    return wk[r, s] if r < wk.shape[0] and s < wk.shape[1] else zero


@cpu_kernel
def winograd_weights(w, U, cg):
    """U[0, 6a + b] = the (nsub*C, K) matrix, row sub*C + ch, of (G g G^T)[a, b] for the 3x3
    piece g of w[k, ch] that sub-kernel ``sub`` covers (zero past w's edge); U[1, 6a + b] its
    transpose, for the input gradient's products (BLAS ran them 1.5-2.5x slower transposing on
    the fly), when U has room for it (an inference forward's U does not)."""
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
                c0 = g_transform((_tap(wk, r0, s0, zero), _tap(wk, r0 + 1, s0, zero), _tap(wk, r0 + 2, s0, zero)), cg)
                c1 = g_transform((_tap(wk, r0, s0 + 1, zero), _tap(wk, r0 + 1, s0 + 1, zero),
                                    _tap(wk, r0 + 2, s0 + 1, zero)), cg)
                c2 = g_transform((_tap(wk, r0, s0 + 2, zero), _tap(wk, r0 + 1, s0 + 2, zero),
                                    _tap(wk, r0 + 2, s0 + 2, zero)), cg)
                for a in range(6):
                    u = g_transform((c0[a], c1[a], c2[a]), cg)
                    for s in range(6):
                        U[0, 6 * a + s, (sub * C + ch) * K + k] = u[s]
                        if U.shape[0] > 1:
                            U[1, 6 * a + s, k * J + sub * C + ch] = u[s]


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
                u0 = ld6(pf, o, plane)  # u0[b] = u[0, b]
                u1 = ld6(pf, o + 6 * plane, plane)
                u2 = ld6(pf, o + 12 * plane, plane)
                u3 = ld6(pf, o + 18 * plane, plane)
                u4 = ld6(pf, o + 24 * plane, plane)
                u5 = ld6(pf, o + 30 * plane, plane)
                r0 = gt_transform((u0[0], u1[0], u2[0], u3[0], u4[0], u5[0]), cg)  # r0[a] = (G^T u)[a, 0]
                r1 = gt_transform((u0[1], u1[1], u2[1], u3[1], u4[1], u5[1]), cg)
                r2 = gt_transform((u0[2], u1[2], u2[2], u3[2], u4[2], u5[2]), cg)
                r3 = gt_transform((u0[3], u1[3], u2[3], u3[3], u4[3], u5[3]), cg)
                r4 = gt_transform((u0[4], u1[4], u2[4], u3[4], u4[4], u5[4]), cg)
                r5 = gt_transform((u0[5], u1[5], u2[5], u3[5], u4[5], u5[5]), cg)
                a0, s0 = 3 * (sub // ns), 3 * (sub % ns)
                for a in range(min(3, KH - a0)):
                    g = gt_transform((r0[a], r1[a], r2[a], r3[a], r4[a], r5[a]), cg)
                    for s in range(min(3, KW - s0)):
                        gw[k, ch, a0 + a, s0 + s] += g[s]
        if gb.size:
            gb[k] += bias_sum(gy3, k)
