"""conv_transpose2d CPU forward as one 3x3 convolution to sh * sw times the output channels.

Output row i = u * sh + a (row phase a) sums the kernel rows r0 + m * sh over the input rows
u + e - m (conv_transpose2d_shift_cpu). Where every phase's rows lie within the three input
rows u - 1 .. u + 1, and columns alike, each phase is a 3x3 convolution of x padded by one,
with zeros at the taps the phase does not have. So one conv2d of x to sh * sw * K channels,
channel (a * sw + b) * K + k being phase (a, b) of output channel k, computes every phase at
once, and a shuffle puts that channel's (u, v) at y[k, u * sh + a, v * sw + b], with the bias.
This is the usual 2x upsampling (kernel 4, stride 2, padding 1) and a stride-1 3x3 with padding 1.

Direct, the zeros cost 9/4 of the transposed convolution's own multiply-adds; conv2d's
Winograd F(4x4, 3x3) takes four times fewer than direct, so where conv2d's planner gives the
3x3 convolution Winograd (conv2d_plan.cpu_path: float32, enough channels and pixels) the
forward runs it (in float32, inference and training alike), and the shifted taps or columns
(conv_transpose2d_cpu) otherwise. N16 64x16x16 -> 32, kernel 4, stride 2, padding 1, 2
threads, AMD EPYC (Zen 4), the layer's forward, alternating trees (/work/probe/s24/ctsplit2.py):
inference 1.60 -> 1.41-1.43 ms, training 1.60 -> 1.40; measured on that machine only. A training
step transforms the changed weights again on each forward (conv2d_winograd_cpu.WeightCache).
The backward keeps the columns: the 3x3 convolution's weight gradient would compute 9 taps a
phase to keep 4 (a 64 -> 128 3x3 conv2d's step measured 4.98 ms against the columns' 4.85),
and its input gradient on Winograd, 128 -> 64 channels, 1.40 ms against the column product's 1.44.

NaN and Inf: a zero tap times Inf is NaN, where the transposed convolution has no such
product, so where conv2d's Winograd finds x or w not finite the forward says so (before any
exact recomputation of the wide convolution) and the caller runs the shifted taps or columns.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .._jit import cpu_kernel, cpu_serial, prange
from .conv2d_cpu import conv2d_plan
from .conv2d_winograd_cpu import winograd_step
from .conv2d_plan import force_path
from .conv_transpose2d_shift_cpu import _axis

__all__ = ["MIN_TAPS", "wide_plan", "wide_forward"]

# Fewest taps of the kernel in each phase: the wide convolution does the work of all nine taps
# a phase, which Winograd's F(4x4, 3x3) cuts to the multiplications of 2.25 direct ones (36 per
# 4x4 outputs) plus its transforms. With 4 (kernel 4, stride 2) the forward ran 1.13x faster
# (1.60 -> 1.41 ms, above); a kernel 2, stride 2 (one tap a phase) would do more than the
# direct product.
MIN_TAPS = 4


@functools.lru_cache(maxsize=256)
def _taps(x_shape: tuple, y_shape: tuple, geo: tuple) -> np.ndarray | None:
    """(phase, i, j, r, t) rows: phase (a * sw + b)'s tap at (i, j) of the 3x3 window is the
    kernel's (r, t); None unless every phase has at least MIN_TAPS taps, all within one 3x3
    window, padding one on each side gives each phase's outputs, and the phases divide the
    output evenly."""
    G, R, S, sh, sw, dh, dw, pt, pl = geo
    (H, W), (P, Q) = x_shape[2:], y_shape[2:]
    if G != 1 or (dh, dw) != (1, 1) or P % sh or Q % sw or (P // sh, Q // sw) != (H, W):
        return None
    rows, cols = _axis(H, P, R, sh, pt)[0], _axis(W, Q, S, sw, pl)[0]
    if min(M for _, M, _, _ in rows) * min(N for _, N, _, _ in cols) < MIN_TAPS:
        return None
    # Phase a reads input rows u + e - m, m < M: within u - 1 .. u + 1 when e <= 1 and e - M >= -2.
    if any(e > 1 or e - M < -2 for _, M, e, _ in rows + cols):
        return None
    table = [(a * sw + b, 1 + e - m, 1 + f - n, r0 + m * sh, s0 + n * sw)
             for a, (r0, M, e, _) in enumerate(rows) for b, (s0, N, f, _) in enumerate(cols)
             for m in range(M) for n in range(N)]
    out = np.array(table, np.int64)
    out.flags.writeable = False  # shared by every call at these shapes
    return out


def wide_plan(x_shape: tuple, y_shape: tuple, geo: tuple, dtype: Any) -> tuple | None:
    """(conv2d's inference plan for the wide 3x3 convolution, its output's shape) where this
    path applies, ``dtype`` is float32 and conv2d's planner gives that convolution Winograd
    (by its own measurements: a conv2d path forced by NUMBACNN_CONV2D_PATH or force_path is for
    conv2d layers, not this), else None. The plan keeps the transformed weights between calls
    (conv2d_winograd_cpu.WeightCache): one a layer plan, never shared."""
    if np.dtype(dtype) != np.float32 or _taps(tuple(x_shape), tuple(y_shape), tuple(geo)) is None:
        return None
    N, C, H, W = x_shape
    sh, sw = geo[3], geo[4]
    wide = (N, sh * sw * y_shape[1], H, W)
    with force_path("auto"):
        plan = conv2d_plan("conv_transpose2d", tuple(x_shape), wide, (1, 3, 3, 1, 1, 1, 1, 1, 1), False, dtype)
    return (plan, wide) if plan.path == "winograd" else None


@cpu_serial
def _embed(w, table, w3):
    """w3 = the wide convolution's (sh * sw * K, C, 3, 3) weights: zero but at ``table``'s taps."""
    C, K = w.shape[0], w.shape[1]
    w3[:] = 0
    for row in range(table.shape[0]):
        ph, i, j, r, t = table[row, 0], table[row, 1], table[row, 2], table[row, 3], table[row, 4]
        for k in range(K):
            for c in range(C):
                w3[ph * K + k, c, i, j] = w[c, k, r, t]


@cpu_kernel
def _shuffle(y3, b, y, sh, sw):
    """y[n, k, u * sh + a, v * sw + bb] = y3[n, (a * sw + bb) * K + k, u, v] + b[k] (b empty: none);
    index n * K + k owns output plane (n, k)."""
    N, K, P, Q = y.shape
    U, V = y3.shape[2], y3.shape[3]
    zero = y.dtype.type(0)
    for nk in prange(N * K):
        n, k = nk // K, nk % K
        bk = b[k] if b.size else -zero  # -0.0: the exact identity
        for u in range(U):
            for a in range(sh):
                row = y[n, k, u * sh + a]
                for bb in range(sw):
                    src = y3[n, (a * sw + bb) * K + k, u]
                    for v in range(V):
                        row[v * sw + bb] = src[v] + bk


def wide_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, wide: tuple, geo: tuple) -> bool:
    """y = conv_transpose2d(x, w) + b through the wide 3x3 convolution; ``wide`` is (the
    ``wide_plan`` plan, that plan's forward scratch arrays, the wide output). False, y
    unwritten, where x or w is not finite (see above)."""
    plan, scratch, y3 = wide
    table = _taps(x.shape, y.shape, tuple(geo))
    w3 = np.empty((y3.shape[1], x.shape[1], 3, 3), w.dtype)
    _embed(w, table, w3)
    if not winograd_step(x, w3, np.empty(0, w.dtype), y3, plan, scratch, False):  # x or w not finite
        return False
    _shuffle(y3, b, y, geo[3], geo[4])
    return True
