"""conv2d CPU, stride 1, 5x5 kernels: Winograd's F(4x4, 5x5) with BLAS products.

The 5x5 case of conv2d_winograd_cpu (whose docstring describes the scheme, the layout, the
blocking, the NaN/Inf fallback and the parallel structure; its public functions hand 5x5
kernels here). There, a 5x5 kernel was four 3x3 sub-kernels of F(4x4, 3x3): 4 x 36 = 144
products per 4x4 output block and channel pair, 9 per output. F(4x4, 5x5) covers the block
with one 8x8 tile: 64 products, 4 per output, and one input tile transform per block instead
of four (the transforms are in conv2d_winograd5_tiles). On N8-16x28x28-K32 (padding 2), one
thread, the batch's products took 0.26 ms against 0.52 ms, its input transforms 0.16-0.21 ms
against 0.40 ms, and the layer's forward+backward 2.9-3.3 ms against 5.1-6.8 ms (fastest of
interleaved runs on a shared machine). The output transforms write y (and read gy) in place:
the pixel-major buffer they filled before, transposed into y afterwards, cost about as much
as the transform itself.

Rounding: the 8-point transforms (constants up to 21/4 and 32/45) put float32 results about
5e-6 of the largest output from the exact ones (the four F(4, 3) sub-kernels: 3e-6; the direct
sum: 2e-7), measured on 16 and 64 input channels; float64 stays near 1e-14.
"""

from __future__ import annotations

import numpy as np

from .._blas import gemm
from .._jit import REASSOC, cpu_kernel, prange
from .conv2d_hwc_cpu import bias_sum, from_hwc, to_hwc
from .conv2d_winograd5_tiles import (LANES_SCRATCH5, g8, gt8, input_tiles5, input_tiles5_grad, ld8, output_tiles5,
                                     output_tiles5_grad)
from .conv2d_winograd_tiles import group_rows, plane_size
from .conv2d_winograd_weights import WEIGHT_RUN, store_block, sum_chunks

@cpu_kernel
def winograd_weights5(w, U, c, transposed):
    """U[0, 8a + b] = the (C, K) matrix of (G g G^T)[a, b], g = w[k, ch]; ``transposed``: its
    (K, C) transpose instead, for the input gradient's products (blocked as
    conv2d_winograd_weights.winograd_weights is)."""
    K, C = w.shape[:2]
    rows = K if transposed else C
    cols = C if transposed else K
    for task in prange(rows):
        row = np.int64(task)  # prange's index may be unsigned; mixed with signed ints it turns float
        block = np.empty((64, WEIGHT_RUN), w.dtype)
        for c0 in range(0, cols, WEIGHT_RUN):
            n = min(WEIGHT_RUN, cols - c0)
            for i in range(n):
                k, ch = (row, c0 + i) if transposed else (c0 + i, row)
                g = w[k, ch]
                k0 = g8((g[0, 0], g[1, 0], g[2, 0], g[3, 0], g[4, 0]), c)  # column 0 of G g
                k1 = g8((g[0, 1], g[1, 1], g[2, 1], g[3, 1], g[4, 1]), c)
                k2 = g8((g[0, 2], g[1, 2], g[2, 2], g[3, 2], g[4, 2]), c)
                k3 = g8((g[0, 3], g[1, 3], g[2, 3], g[3, 3], g[4, 3]), c)
                k4 = g8((g[0, 4], g[1, 4], g[2, 4], g[3, 4], g[4, 4]), c)
                for a in range(8):
                    u = g8((k0[a], k1[a], k2[a], k3[a], k4[a]), c)
                    for s in range(8):
                        block[8 * a + s, i] = u[s]
            store_block(block, U, row * cols + c0, n)


@cpu_kernel
def conv2d_forward_winograd5(x, U, b, xp, V, M, pix, R, y, pt, pl, tr, c, nonfinite, relu):
    """y[n] = conv2d(x[n]) + b, a 5x5 kernel at stride 1. Scratch per chunk t of the batch: V[t],
    M[t] and R[t] (pix is not used); xp[t]: chunk t's padded HWC image, each sample's in turn. tr: tile rows per block; past a sample's th, a block holds
    tr // th samples. nonfinite[t] = how many of chunk t's outputs are NaN or +-Inf (before ``relu``: y =
    relu(y) as it is stored, relu's rule)."""
    N, K, P, Q = y.shape
    C = x.shape[1]
    T = V.shape[0]
    th, tw = (P + 3) // 4, (Q + 3) // 4
    g = max(1, tr // th)
    for t in prange(T):
        bad = 0
        for nb in range(t * N // T, (t + 1) * N // T, g):
            ne = min((t + 1) * N // T, nb + g)
            for i0 in range(0, th, tr):
                i1 = min(th, i0 + tr)
                nt = (ne - nb) * (i1 - i0) * tw
                for n in range(nb, ne):
                    if i0 == 0:
                        to_hwc(x[n], xp[t], pt, pl)
                    input_tiles5(xp[t], V[t], R[t], i0, i1, (n - nb) * th, tw, c)
                for e in range(64):
                    gemm(False, False, nt, K, C, V[t, e], C, U[0, e], K, 0, M[t, e], K)
                for n in range(nb, ne):
                    bad += output_tiles5(M[t], y[n], b, R[t], i0, i1, (n - nb) * th, c, relu)
        nonfinite[t] = bad


@cpu_kernel
def conv2d_backward_winograd5(x, U, gy, xp, gxp, V, M, pix, R, part, gx, pt, pl, tr, want_gx, c, nonfinite):
    """part[t] (64, C, K) = chunk t's weight gradient in the transformed domain; gx[n] (when
    ``want_gx``) = the input gradient, gathered in the padded HWC scratch gxp[t]. xp: one padded
    HWC image per chunk, x[n]'s made again here; tr as the forward's. nonfinite[t] = how many
    of chunk t's values of gy are NaN or +-Inf."""
    N, K, P, Q = gy.shape
    C = x.shape[1]
    T = V.shape[0]
    th, tw = (P + 3) // 4, (Q + 3) // 4
    g = max(1, tr // th)
    for t in prange(T):
        bad = 0
        n0 = t * N // T
        for nb in range(n0, (t + 1) * N // T, g):
            ne = min((t + 1) * N // T, nb + g)
            for i0 in range(0, th, tr):
                i1 = min(th, i0 + tr)
                nt = (ne - nb) * (i1 - i0) * tw
                for n in range(nb, ne):
                    bad += output_tiles5_grad(gy[n], M[t], R[t], i0, i1, (n - nb) * th, c)
                    if i0 == 0:  # x[n] padded again, as in the 3x3 backward
                        to_hwc(x[n], xp[t], pt, pl)
                    input_tiles5(xp[t], V[t], R[t], i0, i1, (n - nb) * th, tw, c)
                beta = 0 if nb == n0 and i0 == 0 else 1
                for e in range(64):
                    ve, me = V[t, e], M[t, e]
                    # part[t, e] (+)= V[e]^T @ Z[e]; then V[e] = Z[e] @ U[e]^T, the tiles' gradient
                    gemm(True, False, C, K, nt, ve, C, me, K, beta, part[t, e].reshape(C * K), K)
                    if want_gx:
                        gemm(False, False, nt, C, K, me, K, U[0, e], C, 0, ve, C)
                if want_gx:
                    for n in range(nb, ne):
                        if i0 == 0:
                            gxp[t].reshape(gxp[t].size)[:] = 0
                        input_tiles5_grad(V[t], gxp[t], R[t], i0, i1, (n - nb) * th, tw, c)
                        if i1 == th:
                            from_hwc(gxp[t], gx[n], pt, pl)
        nonfinite[t] = bad


@cpu_kernel(fastmath=REASSOC)  # the bias sum runs in vector lanes; NaN/Inf still propagate
def winograd_reduce5(part, gw, gy3, gb, c):
    """gw[k, ch] += G^T (sum of the chunks' part[:, :, ch, k]) G; gb += gy3 summed (if any).
    Row ch of the partials (and gw[:, ch]) belongs to one task."""
    C, K = part.shape[2], part.shape[3]
    for task in prange(C):
        ch = np.int64(task)
        block = np.empty((64, WEIGHT_RUN), part.dtype)
        z, one = np.int64(0), np.int64(1)  # not literals: each would compile ld8 once more
        for k0 in range(0, K, WEIGHT_RUN):
            n = min(WEIGHT_RUN, K - k0)
            sum_chunks(part, ch, k0, n, block)
            for i in range(n):
                b = block[:, i]
                u0 = ld8(b, z, one)  # u0[b] = u[0, b]
                u1 = ld8(b, z + 8, one)
                u2 = ld8(b, z + 16, one)
                u3 = ld8(b, z + 24, one)
                u4 = ld8(b, z + 32, one)
                u5 = ld8(b, z + 40, one)
                u6 = ld8(b, z + 48, one)
                u7 = ld8(b, z + 56, one)
                r0 = gt8((u0[0], u1[0], u2[0], u3[0], u4[0], u5[0], u6[0], u7[0]), c)  # r0[a] = (G^T u)[a, 0]
                r1 = gt8((u0[1], u1[1], u2[1], u3[1], u4[1], u5[1], u6[1], u7[1]), c)
                r2 = gt8((u0[2], u1[2], u2[2], u3[2], u4[2], u5[2], u6[2], u7[2]), c)
                r3 = gt8((u0[3], u1[3], u2[3], u3[3], u4[3], u5[3], u6[3], u7[3]), c)
                r4 = gt8((u0[4], u1[4], u2[4], u3[4], u4[4], u5[4], u6[4], u7[4]), c)
                r5 = gt8((u0[5], u1[5], u2[5], u3[5], u4[5], u5[5], u6[5], u7[5]), c)
                r6 = gt8((u0[6], u1[6], u2[6], u3[6], u4[6], u5[6], u6[6], u7[6]), c)
                r7 = gt8((u0[7], u1[7], u2[7], u3[7], u4[7], u5[7], u6[7], u7[7]), c)
                for a in range(5):
                    g = gt8((r0[a], r1[a], r2[a], r3[a], r4[a], r5[a], r6[a], r7[a]), c)
                    for s in range(5):
                        gw[k0 + i, ch, a, s] += g[s]
    if gb.size:
        for k in prange(K):
            gb[k] += bias_sum(gy3, k)


def scratch5(N: int, T: int, C: int, K: int, P: int, Q: int, block: int
             ) -> tuple[dict[str, tuple[int, ...]], int]:
    """conv2d_winograd_cpu.scratch for a 5x5 kernel: the same arrays, 64 transform points; a
    block's V and M (64 * tiles * (C + K) values) stay under ``block`` elements, and hold
    several samples when one is smaller (as there)."""
    th, tw = (P + 3) // 4, (Q + 3) // 4
    tr = max(1, block // (64 * tw * (C + K)))
    tr = group_rows(tr, th, N, T)
    return {"U": (1, 64, C * K), "xp": (T, 4 * th + 4, 4 * tw + 4, C),
            "V": (T, 64, plane_size(tr * tw, C)), "M": (T, 64, plane_size(tr * tw, K)),
            "pix": (T, 1, 1),  # unused: the output transforms read and write y and gy in place
            "R": (T, LANES_SCRATCH5), "part": (T, 64, C, K), "nonfinite": (T,)}, tr
