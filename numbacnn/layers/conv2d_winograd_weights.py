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


@cpu_inline
def _tap(wk, r, s, zero):
    return wk[r, s] if r < wk.shape[0] and s < wk.shape[1] else zero


# Columns a weight task transforms into a small block before writing it out: each of its
# points then becomes one contiguous run of U, where writing every column's 36 values straight
# to their 36 planes cost three times as much (128 -> 128 channels, one thread: 1.51 against
# 0.51 ms; the reduction likewise).
WEIGHT_RUN = 16


@cpu_inline
def store_block(block, U, o, n):
    """U[0, e, o + i] = block[e, i] for every point e and i < n: one contiguous run per point."""
    for e in range(block.shape[0]):
        for i in range(n):
            U[0, e, o + i] = block[e, i]


@cpu_inline
def sum_chunks(part, row, k0, n, block):
    """block[e, i] = the chunks' part[:, e, row, k0 + i] summed in chunk order, for i < n."""
    for e in range(part.shape[1]):
        for i in range(n):
            block[e, i] = part[0, e, row, k0 + i]
    for t in range(1, part.shape[0]):
        for e in range(part.shape[1]):
            for i in range(n):
                block[e, i] += part[t, e, row, k0 + i]


@cpu_kernel
def winograd_weights(w, U, cg, transposed):
    """U[0, 6a + b] = the (nsub*C, K) matrix, row sub*C + ch, of (G g G^T)[a, b] for the 3x3
    piece g of w[k, ch] that sub-kernel ``sub`` covers (zero past w's edge); ``transposed``:
    its (K, nsub*C) transpose instead, which the input gradient's products read (BLAS ran
    them 1.5-2.5x slower transposing on the fly)."""
    K, C, KH, KW = w.shape
    ns = (KW + 2) // 3
    J = ((KH + 2) // 3) * ns * C
    rows = K if transposed else J
    cols = J if transposed else K
    zero = w.dtype.type(0)
    for task in prange(rows):
        row = np.int64(task)  # prange's index may be unsigned; mixed with signed ints it turns float
        block = np.empty((36, WEIGHT_RUN), w.dtype)
        for c0 in range(0, cols, WEIGHT_RUN):
            n = min(WEIGHT_RUN, cols - c0)
            for i in range(n):
                k, j = (row, c0 + i) if transposed else (c0 + i, row)
                sub, ch = j // C, j % C
                r0, s0 = 3 * (sub // ns), 3 * (sub % ns)
                wk = w[k, ch]
                c0_ = g_transform((_tap(wk, r0, s0, zero), _tap(wk, r0 + 1, s0, zero), _tap(wk, r0 + 2, s0, zero)), cg)
                c1 = g_transform((_tap(wk, r0, s0 + 1, zero), _tap(wk, r0 + 1, s0 + 1, zero),
                                  _tap(wk, r0 + 2, s0 + 1, zero)), cg)
                c2 = g_transform((_tap(wk, r0, s0 + 2, zero), _tap(wk, r0 + 1, s0 + 2, zero),
                                  _tap(wk, r0 + 2, s0 + 2, zero)), cg)
                for a in range(6):
                    u = g_transform((c0_[a], c1[a], c2[a]), cg)
                    for s in range(6):
                        block[6 * a + s, i] = u[s]
            store_block(block, U, row * cols + c0, n)


@cpu_kernel(fastmath=REASSOC)  # the bias sum runs in vector lanes; NaN/Inf still propagate
def winograd_reduce(part, gw, gy3, gb, cg):
    """gw[k, ch] += G^T (sum of the chunks' part[:, :, sub*C + ch, k]) G for each sub-kernel, in
    the 3x3 piece of the kernel it covers; gb += gy3 summed (if any). Row sub*C + ch of the
    partials belongs to one task, whose sub-kernel owns its piece of gw[:, ch]."""
    J, K = part.shape[2], part.shape[3]
    C, KH, KW = gw.shape[1], gw.shape[2], gw.shape[3]
    ns = (KW + 2) // 3
    for task in prange(J):
        j = np.int64(task)  # as in winograd_weights
        sub, ch = j // C, j % C
        a0, s0 = 3 * (sub // ns), 3 * (sub % ns)
        block = np.empty((36, WEIGHT_RUN), part.dtype)
        z, one = np.int64(0), np.int64(1)  # not literals: each would compile ld6 once more
        for k0 in range(0, K, WEIGHT_RUN):
            n = min(WEIGHT_RUN, K - k0)
            sum_chunks(part, j, k0, n, block)
            for i in range(n):
                b = block[:, i]
                u0 = ld6(b, z, one)  # u0[b] = u[0, b]
                u1 = ld6(b, z + 6, one)
                u2 = ld6(b, z + 12, one)
                u3 = ld6(b, z + 18, one)
                u4 = ld6(b, z + 24, one)
                u5 = ld6(b, z + 30, one)
                r0 = gt_transform((u0[0], u1[0], u2[0], u3[0], u4[0], u5[0]), cg)  # r0[a] = (G^T u)[a, 0]
                r1 = gt_transform((u0[1], u1[1], u2[1], u3[1], u4[1], u5[1]), cg)
                r2 = gt_transform((u0[2], u1[2], u2[2], u3[2], u4[2], u5[2]), cg)
                r3 = gt_transform((u0[3], u1[3], u2[3], u3[3], u4[3], u5[3]), cg)
                r4 = gt_transform((u0[4], u1[4], u2[4], u3[4], u4[4], u5[4]), cg)
                r5 = gt_transform((u0[5], u1[5], u2[5], u3[5], u4[5], u5[5]), cg)
                for a in range(min(3, KH - a0)):
                    g = gt_transform((r0[a], r1[a], r2[a], r3[a], r4[a], r5[a]), cg)
                    for s in range(min(3, KW - s0)):
                        gw[k0 + i, ch, a0 + a, s0 + s] += g[s]
    if gb.size:
        for k in prange(K):
            gb[k] += bias_sum(gy3, k)
