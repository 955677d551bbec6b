"""conv_transpose2d CPU: conv2d's input gradient, run forward, through BLAS and col2im.

Each thread owns a chunk of the batch. For its sample n and group g, one product gives the
column matrix col[g] = w[g]^T @ x[n, g] (rows (k, r, s), columns the input pixels), and
col2im (numbacnn.layers._conv_columns) adds it into y[n]: only the owning thread ever
writes a sample's output, so no pixel has two writers. The backward runs the other two of
conv2d's products with x and gy swapped: im2col(gy[n]) is the column matrix a conv2d over gy
would read, the input gradient is w[g] @ col[g] (a plain convolution of gy; through numbacnn._micro's
tile where ``micro_fits``: 3.48 -> 3.30 ms the backward of N16 64x16x16 -> 32, kernel 4, stride 2,
2 threads, alternating, /work/probe/s28/ctab.py), and the weight
gradient's transpose col[g] @ x[n, g]^T, summed over each chunk's samples into its own partial
and the partials summed (and transposed back) afterwards: the product with the long side
(K*R*S rows) first ran 20-25% faster than x[n, g] @ col[g]^T (one thread, 64x16x16 -> 32,
kernel 4: 2.8 against 3.6 ms a batch of 16). With a column stride above 1 (and the output's
phases no wider than the input, as in every usual upsampling), col2im adds into the phase
planes of y[n] (merged into y[n] with the bias) and im2col reads the phase planes of gy[n],
where the strided copies become flat ones (_conv_columns). Every wrapper runs under
``single_thread_blas``: BLAS threads of their own would fight Numba's pool for the cores.
``geo`` is conv2d's: (groups, R, S, stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._blas import gemm
from .._jit import REASSOC, cpu_kernel, cpu_serial, prange
from .._micro import micro_fits, micro_gemm
from .._threads import batch_chunks, single_thread_blas
from ._conv_columns import col2im, col2im_phases, im2col, im2col_phases, merge_phases, phase_shape, split_phases
from ._taps_cpu import VECTOR_BYTES
from .conv2d_hwc_cpu import bias_sum
from .conv2d_winograd_cpu import winograd_nonfinite
from .conv_transpose2d_shift_cpu import fits, shift_transposed
from .conv_transpose2d_wide_cpu import wide_forward, wide_plan

__all__ = ["conv_transpose2d_scratch", "conv_transpose2d_forward", "conv_transpose2d_backward"]

Geometry = tuple[int, int, int, int, int, int, int, int, int]


def conv_transpose2d_scratch(x_shape: tuple[int, ...], y_shape: tuple[int, ...], geo: Geometry,
                             dtype: Any = None) -> dict[str, tuple]:
    """Scratch shapes for an (N, C, H, W) input and (N, K, P, Q) output: "col", a column matrix
    (K*R*S, H*W) per chunk of the batch; "part", a transposed weight-gradient partial
    (K/groups*R*S, C/groups) per chunk and group; "phase", the phase planes of one output (or
    output gradient) per chunk where _conv_columns.phase_shape gives them (a column stride
    above 1, the output's phases no wider than the input), else empty planes (the kernels then
    take the strided copies); for a ``dtype`` forward that runs as one wide 3x3 convolution
    (conv_transpose2d_wide_cpu), "wide": that convolution's plan and its output's shape."""
    N, C, H, W = x_shape
    K, P, Q = y_shape[1:]
    G, R, S, sh, sw = geo[:5]
    T = batch_chunks(N)
    phase = phase_shape(K, P, Q, sh, sw, W) or (0, 1, 1, 1, 1)
    scratch = {"col": (T, K * R * S, H * W), "part": (T, G, K // G * R * S, C // G), "phase": (T, *phase)}
    wide = None if dtype is None else wide_plan(x_shape, y_shape, geo, dtype)
    if wide is not None:
        scratch["wide"] = wide
    return scratch


# The column copies are serial functions the parallel kernels call, not inlined into them:
# Numba's parallel passes slowed down with every loop in a prange body, and inlined, the two
# column paths took the kernels' cold compile from 25 to 65 s (all six, one busy machine).
@cpu_serial
def _from_columns(cf, pn, yn, b, H, W, geo):
    """yn = col2im(cf) + b, through the phase planes pn when there are any."""
    if pn.shape[0]:
        col2im_phases(cf, pn, H, W, yn.shape[1], yn.shape[2], geo)
        merge_phases(pn, yn, b)
        return
    col2im(cf, yn, H, W, geo)
    if b.size:
        yf = yn.reshape(yn.shape[0], yn.shape[1] * yn.shape[2])
        for k in range(yf.shape[0]):
            bk = b[k]
            for i in range(yf.shape[1]):
                yf[k, i] += bk


@cpu_serial
def _to_columns(gyn, pn, cf, H, W, geo):
    """cf = im2col(gyn), through the phase planes pn when there are any."""
    if pn.shape[0]:
        split_phases(gyn, pn)
        im2col_phases(pn, cf, H, W, gyn.shape[1], gyn.shape[2], geo)
    else:
        im2col(gyn, cf, H, W, geo)


@cpu_kernel
def _forward_chunks(x4, w3, b, col4, phase, y, H, W, geo):
    # x4 (N, G, Cg, L), w3 (G, Cg, J), col4 (T, G, J, L): per group, col = w^T @ x.
    N, G, Cg, L = x4.shape
    J = w3.shape[2]
    T = col4.shape[0]
    for t in prange(T):
        for n in range(t * N // T, (t + 1) * N // T):
            for g in range(G):
                gemm(True, False, J, L, Cg, w3[g].reshape(Cg * J), J, x4[n, g].reshape(Cg * L), L, 0,
                     col4[t, g].reshape(J * L), L)
            _from_columns(col4[t].reshape(col4[t].size), phase[t], y[n], b, H, W, geo)


@cpu_kernel
def _backward_chunks(x4, w3, gy, col4, phase, part4, gx4, H, W, geo, want_gx, micro):
    # part4 (T, G, J, Cg): chunk t's weight gradient, transposed; gx4 (N, G, Cg, L) when ``want_gx``,
    # its product through the register tile when ``micro`` (numbacnn._micro.micro_fits).
    N, G, Cg, L = x4.shape
    J = w3.shape[2]
    T = col4.shape[0]
    for t in prange(T):
        n0 = t * N // T
        for n in range(n0, (t + 1) * N // T):
            _to_columns(gy[n], phase[t], col4[t].reshape(col4[t].size), H, W, geo)
            for g in range(G):
                gemm(False, True, J, Cg, L, col4[t, g].reshape(J * L), L, x4[n, g].reshape(Cg * L), L,
                     0 if n == n0 else 1, part4[t, g].reshape(J * Cg), Cg)
                if want_gx and micro:
                    micro_gemm(Cg, L, J, w3[g].reshape(Cg * J), J, col4[t, g].reshape(J * L), L,
                               gx4[n, g].reshape(Cg * L), L)
                elif want_gx:
                    gemm(False, False, Cg, L, J, w3[g].reshape(Cg * J), J, col4[t, g].reshape(J * L), L, 0,
                         gx4[n, g].reshape(Cg * L), L)


@cpu_kernel(fastmath=REASSOC)  # the sums run in vector lanes; NaN and Inf still propagate
def _reduce(part, gw2, gy3, gb):
    """gw2 += the chunks' partials (T, G, J, Cg) summed and transposed; gb += gy3 summed over
    samples and pixels (if any). Index i owns weight row i and bias i: no element has two writers."""
    T, G, J, Cg = part.shape
    C = G * Cg
    K = gy3.shape[1]
    rows = max(C, K) if gb.size else C
    for i in prange(rows):
        if i < C:
            g, c = i // Cg, i % Cg
            for j in range(J):
                s = part[0, g, j, c]
                for t in range(1, T):
                    s += part[t, g, j, c]
                gw2[i, j] += s
        if gb.size and i < K:
            gb[i] += bias_sum(gy3, i)


def _groups(a: np.ndarray, G: int) -> np.ndarray:
    # (rows, G, per-group rows, pixels) view of an (N, C, H, W) array or a column matrix.
    return a.reshape(a.shape[0], G, a.shape[1] // G, -1)


# Whether float32 forwards take shifted taps (where they fit): with AVX-512's tile (8 rows by 48
# columns), N16 64x16x16 -> 32, kernel 4, stride 2, 2 threads, one process: 1130 against 1313 us
# for the columns; with AVX2's (4 by 16, 16 vector registers) the columns won, 2.41-2.49 against
# 3.30-3.37 ms (AMD EPYC, /work/probe/s14/ct.py).
SHIFT_FORWARD = VECTOR_BYTES == 64


def conv_transpose2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, col: np.ndarray,
                             phase: np.ndarray, geo: Geometry, wide: Any = None) -> None:
    """y = conv_transpose2d(x, w) + b (b empty: no bias); ``col`` and ``phase`` are scratch of
    the shapes conv_transpose2d_scratch gives, ``wide`` (its "wide" plan, that plan's forward
    scratch arrays, the wide output) where it gave one. Those run as one 3x3 convolution
    (conv_transpose2d_wide_cpu) unless x or w is not finite; float32 at groups 1 without
    dilation takes shifted taps (conv_transpose2d_shift_cpu) where SHIFT_FORWARD and w is
    finite, float64 (exact checks) and the rest the columns."""
    if wide is not None and wide_forward(x, w, b, y, wide, geo):
        return
    G = geo[0]
    C, H, W = x.shape[1:]
    # The shifted taps multiply the padding's zeros too: a weight of NaN or Inf would make NaN
    # where a tap has no input pixel, and PyTorch (as the columns) makes no such product.
    if (SHIFT_FORWARD and x.dtype == np.float32 and fits(x.shape, y.shape, geo, col.shape)
            and winograd_nonfinite(w.reshape(-1)) == 0):
        shift_transposed(x, w, b, y, col, geo)
        return
    with single_thread_blas:
        _forward_chunks(_groups(x, G), w.reshape(G, C // G, -1), b, _groups(col, G), phase, y, H, W, geo)


def conv_transpose2d_backward(x: np.ndarray, w: np.ndarray, gy: np.ndarray, gw: np.ndarray, gb: np.ndarray,
                              gx: np.ndarray | None, col: np.ndarray, phase: np.ndarray, part: np.ndarray,
                              geo: Geometry) -> None:
    """gw += the weight gradient, gb += the bias gradient (gb empty: no bias), gx = the input
    gradient (None: not wanted). ``col``, ``phase`` and ``part`` are scratch
    (conv_transpose2d_scratch)."""
    G = geo[0]
    N, C, H, W = x.shape
    want_gx = gx is not None
    with single_thread_blas:
        _backward_chunks(_groups(x, G), w.reshape(G, C // G, -1), gy, _groups(col, G), phase, part,
                         _groups(gx if want_gx else x, G), H, W, geo, want_gx,
                         micro_fits(x.dtype, C // G, H * W, w[0].size))
        _reduce(part, gw.reshape(C, -1), gy.reshape(N, gy.shape[1], -1), gb)
