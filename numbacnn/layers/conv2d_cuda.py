"""conv2d CUDA kernels: implicit GEMM with shared-memory tiles, each launcher under its kernel.

Each convolution is a matrix product whose column matrix (im2col) is never stored: a block
computes a TILE x TILE tile of the output, one element per thread, and walks the reduction
TILE at a time, each thread fetching one element of each operand tile (the column-matrix
element is gathered from x or gy on the fly, with zero padding) for ``_gemm_cuda.gemm_tile``,
the tiled product linear's kernels share. Groups map to
blocks: a block's output rows never straddle two groups. The weight gradient has few outputs
and a long reduction (over the batch and the pixels), so its reduction is also cut into slices
whose partial products a second kernel adds up: no atomics, and the same sum every run.
"""

import numpy as np
from numba import cuda

from .. import _cublas
from .._jit import cuda_kernel
from . import _conv_columns_cuda
from ..device import is_simulator
from ._gemm_cuda import TILE as GPU_TILE
from ._gemm_cuda import gemm_tile
from .conv2d_plan import Conv2dPlan

__all__ = ["conv2d_plan", "conv2d_forward", "conv2d_backward"]

# A GPU's tile and bias-sum block. The simulator runs every thread as a Python thread: smaller
# blocks keep its tests quick and make tiny test shapes span several tiles, so the tile edges
# get exercised too. A simulator test may set TILE and BIAS_THREADS to the GPU's (the kernels
# read them when they run there, as the launchers do; a GPU compiles them in as constants).
GPU_BIAS_THREADS = 256
TILE = 8 if is_simulator() else GPU_TILE
BIAS_THREADS = 32 if is_simulator() else GPU_BIAS_THREADS


def _blocks(n: int, size: int | None = None) -> int:
    size = TILE if size is None else size  # TILE read now, not when this was defined
    return (n + size - 1) // size


@cuda_kernel
def _conv2d_forward_kernel(x, w, b, y, R, S, sh, sw, dh, dw, pt, pl):
    # Product per group: y[k, (n, p, q)] = w[k, (c, r, s)] @ col[(c, r, s), (n, p, q)].
    ws = cuda.shared.array((TILE, TILE), dtype=x.dtype)
    cs = cuda.shared.array((TILE, TILE), dtype=x.dtype)
    N, C, H, W = x.shape
    K, J = w.shape
    P, Q = y.shape[2], y.shape[3]
    Cg = J // (R * S)
    Kg = K // (C // Cg)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row_tiles = (Kg + TILE - 1) // TILE
    g = cuda.blockIdx.y // row_tiles
    k = g * Kg + (cuda.blockIdx.y % row_tiles) * TILE + ty
    i = cuda.blockIdx.x * TILE + tx
    n, p, q = i // (P * Q), i // Q % P, i % Q
    zero = x.dtype.type(0)
    acc = zero
    for j0 in range(0, J, TILE):
        j = j0 + tx
        a = w[k, j] if k < (g + 1) * Kg and j < J else zero
        j = j0 + ty
        v = zero
        if j < J and n < N:
            h = p * sh + j // S % R * dh - pt
            v_ = q * sw + j % S * dw - pl
            if h >= 0 and h < H and v_ >= 0 and v_ < W:
                v = x[n, g * Cg + j // (R * S), h, v_]
        acc = gemm_tile(ws, cs, ty, tx, a, ty, tx, v, acc)
    if k < (g + 1) * Kg and n < N:
        y[n, k, p, q] = acc + b[k] if b.size else acc


def _forward(x, w, b, y, geo) -> None:
    """y = conv2d(x, w) + b (b empty: no bias); ``geo`` as in conv2d_cpu."""
    G = geo[0]
    N, K, P, Q = y.shape
    grid = (_blocks(N * P * Q), _blocks(K // G) * G)
    _conv2d_forward_kernel[grid, (TILE, TILE)](x, w.reshape(K, w.size // K), b, y, *geo[1:])


@cuda_kernel
def _conv2d_backward_input_kernel(w, gy, gx, sh, sw, dh, dw, pt, pl):
    # Product per group: gx[c, (n, h, w)] = w^T[c, (k, r, s)] @ gy-gathered[(k, r, s), (n, h, w)].
    ws = cuda.shared.array((TILE, TILE), dtype=gy.dtype)
    gs = cuda.shared.array((TILE, TILE), dtype=gy.dtype)
    K, Cg, R, S = w.shape
    N, C, H, W = gx.shape
    P, Q = gy.shape[2], gy.shape[3]
    Kg = K // (C // Cg)
    J = Kg * R * S
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row_tiles = (Cg + TILE - 1) // TILE
    g = cuda.blockIdx.y // row_tiles
    cg = (cuda.blockIdx.y % row_tiles) * TILE + ty
    i = cuda.blockIdx.x * TILE + tx
    n, h, v_ = i // (H * W), i // W % H, i % W
    zero = gy.dtype.type(0)
    acc = zero
    for j0 in range(0, J, TILE):
        j = j0 + tx
        a = w[g * Kg + j // (R * S), cg, j // S % R, j % S] if cg < Cg and j < J else zero
        j = j0 + ty
        v = zero
        if j < J and n < N:
            # The output (p, q) whose tap (r, s) reads x[h, w], if any.
            hp = h + pt - j // S % R * dh
            wq = v_ + pl - j % S * dw
            if hp >= 0 and wq >= 0 and hp % sh == 0 and wq % sw == 0 and hp // sh < P and wq // sw < Q:
                v = gy[n, g * Kg + j // (R * S), hp // sh, wq // sw]
        acc = gemm_tile(ws, gs, ty, tx, a, ty, tx, v, acc)
    if cg < Cg and n < N:
        gx[n, g * Cg + cg, h, v_] = acc


def _backward_input(w, gy, gx, geo) -> None:
    """gx = the transposed convolution of gy with w."""
    G = geo[0]
    N, C, H, W = gx.shape
    grid = (_blocks(N * H * W), _blocks(C // G) * G)
    _conv2d_backward_input_kernel[grid, (TILE, TILE)](w, gy, gx, *geo[3:])


def _weight_splits(gy_shape: tuple, gw_shape: tuple, groups: int) -> int:
    """How many slices the weight gradient's long reduction (over n, p, q) is cut into.

    A layer with few weights has few output tiles; slicing the reduction gives the GPU enough
    blocks (about 256) to fill it. Each slice keeps at least two tiles of work.
    """
    N, K, P, Q = gy_shape
    tiles = _blocks(gw_shape[0] // groups) * groups * _blocks(gw_shape[1] * gw_shape[2] * gw_shape[3])
    return max(1, min(_blocks(256, tiles), _blocks(N * P * Q, 2 * TILE)))


@cuda_kernel
def _conv2d_backward_weight_kernel(x, gy, part, R, S, sh, sw, dh, dw, pt, pl):
    # Per group and slice z of (n, p, q): part[z, k, (c, r, s)] = gy[k, z-slice] @ col^T[z-slice, (c, r, s)].
    gs = cuda.shared.array((TILE, TILE), dtype=x.dtype)
    cs = cuda.shared.array((TILE, TILE), dtype=x.dtype)
    N, C, H, W = x.shape
    Z, K, J = part.shape
    P, Q = gy.shape[2], gy.shape[3]
    Cg = J // (R * S)
    Kg = K // (C // Cg)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row_tiles = (Kg + TILE - 1) // TILE
    g = cuda.blockIdx.y // row_tiles
    k = g * Kg + (cuda.blockIdx.y % row_tiles) * TILE + ty
    j = cuda.blockIdx.x * TILE + tx
    c, r, s = g * Cg + j // (R * S), j // S % R, j % S
    chunk = (N * P * Q + Z - 1) // Z
    begin = cuda.blockIdx.z * chunk
    end = min(begin + chunk, N * P * Q)
    zero = x.dtype.type(0)
    acc = zero
    for i0 in range(begin, end, TILE):
        i = i0 + tx
        a = gy[i // (P * Q), k, i // Q % P, i % Q] if k < (g + 1) * Kg and i < end else zero
        i = i0 + ty
        v = zero
        if i < end and j < J:
            h = i // Q % P * sh + r * dh - pt
            v_ = i % Q * sw + s * dw - pl
            if h >= 0 and h < H and v_ >= 0 and v_ < W:
                v = x[i // (P * Q), c, h, v_]
        acc = gemm_tile(gs, cs, ty, tx, a, ty, tx, v, acc)
    if k < (g + 1) * Kg and j < J:
        part[cuda.blockIdx.z, k, j] = acc


@cuda_kernel
def _conv2d_backward_weight_sum_kernel(part, gw):
    # Adds the slices in a fixed order: the result does not depend on scheduling.
    i = cuda.grid(1)
    Z, K, J = part.shape
    if i < K * J:
        acc = part[0, i // J, i % J]
        for z in range(1, Z):
            acc += part[z, i // J, i % J]
        gw[i // J, i % J] += acc


def _backward_weight(x, gy, gw, part, geo) -> None:
    """gw += the weight gradient; ``part`` (_weight_splits(...), K, C/G*R*S) is scratch."""
    G = geo[0]
    K = gw.shape[0]
    J = gw.size // K
    grid = (_blocks(J), _blocks(K // G) * G, part.shape[0])
    _conv2d_backward_weight_kernel[grid, (TILE, TILE)](x, gy, part, *geo[1:])
    _conv2d_backward_weight_sum_kernel[_blocks(K * J, 256), 256](part, gw.reshape(K, J))


@cuda_kernel
def _conv2d_backward_bias_kernel(gy, gb):
    # One block per output channel: strided partial sums, then a tree in shared memory.
    part = cuda.shared.array(BIAS_THREADS, dtype=gy.dtype)
    N, K, L = gy.shape
    k, t = cuda.blockIdx.x, cuda.threadIdx.x
    acc = gy.dtype.type(0)
    for i in range(t, N * L, BIAS_THREADS):
        acc += gy[i // L, k, i % L]
    part[t] = acc
    cuda.syncthreads()
    step = BIAS_THREADS // 2
    while step > 0:
        if t < step:
            part[t] += part[t + step]
        cuda.syncthreads()
        step //= 2
    if t == 0:
        gb[k] += part[0]


def _backward_bias(gy, gb) -> None:
    """gb += the sum of gy over the batch and the output pixels."""
    N, K, P, Q = gy.shape
    _conv2d_backward_bias_kernel[K, BIAS_THREADS](gy.reshape(N, K, P * Q), gb)


# The cuBLAS path keeps a training forward's column matrix until the backward (C/G*R*S times
# the output's pixels, per layer); past this size a convolution runs implicit GEMM instead.
COLUMNS_MAX_BYTES = 1 << 30


# The one kernel interface (conv2d_cpu has the same): a plan per input shape, then forward and
# backward on it. CUDA has two paths: column matrices multiplied by cuBLAS (_conv_columns_cuda:
# the forward's columns kept for the backward; the default on a GPU, _cublas.enabled) and
# implicit GEMM (NUMBACNN_CUBLAS=0, the simulator's default; its only scratch is the weight
# gradient's slices).
def conv2d_plan(name, x_shape, y_shape, geo, backward, dtype) -> Conv2dPlan:
    """The implicit-GEMM plan (``backward_scratch``: the weight gradient's partials), or the
    cuBLAS one (``forward_scratch``: columns and the product; ``backward_scratch``: gy
    regrouped and the columns' gradient)."""
    G, R, S = geo[:3]
    K, C = y_shape[1], x_shape[1]
    J = C // G * R * S
    columns_bytes = G * J * y_shape[0] * y_shape[2] * y_shape[3] * np.dtype(dtype).itemsize
    if _cublas.enabled() and columns_bytes <= COLUMNS_MAX_BYTES:
        reason = _cublas.unavailable_reason()
        if reason is not None:
            raise ValueError(f"conv2d node '{name}': {_cublas.ENV}=1 asks for cuBLAS, but {reason}")
        columns = ((G, J, y_shape[0] * y_shape[2] * y_shape[3]), None)
        product = ((K, columns[0][2]), None)
        return Conv2dPlan("cublas", tuple(geo), tuple(y_shape), 1, (columns, product), (product, columns),
                          kept=1 if backward else 0)
    part = (_weight_splits(y_shape, (K, C // G, R, S), G), K, J)
    return Conv2dPlan("implicit-gemm", tuple(geo), tuple(y_shape), 1, (), ((part, None),))


@cuda_kernel
def _scale_rows_kernel(w, s, out):
    # out = w * s[k] for the k-th of s.size equal rows of the flat w (float32 stays float32).
    i = cuda.grid(1)
    if i < out.size:
        out[i] = w[i] * s[i // (out.size // s.size)]


def conv2d_forward(x, w, b, y, plan, scratch, relu=False, residual=None, scale=None) -> tuple:
    """y = conv2d(x, w) * scale + b (scale None, b empty: none; the CPU twin's folded batch norm,
    here through a scaled copy of w), plus ``residual`` when given, relu'd in place when ``relu``
    (the executor fuses conv + add + relu on the CPU only; the twin takes them all the same, in
    one pass after); returns what the backward needs besides x: ``(path,)``, and the column
    matrices on the cuBLAS path."""
    if scale is not None:
        if scale.shape != y.shape[1:2] or scale.dtype != y.dtype:
            raise ValueError(f"conv2d_forward: the scale must be a {y.dtype} array of {y.shape[1]} values (one per "
                             f"output channel); found {scale.dtype} {scale.shape}")
        scaled = cuda.device_array_like(w)
        _scale_rows_kernel[_blocks(w.size, 256), 256](w.reshape(w.size), scale, scaled.reshape(w.size))
        w = scaled
    if plan.path == "cublas":
        _conv_columns_cuda.forward(x, w, b, y, plan.geo, *scratch)
        kept = (plan.path, scratch[0]) if plan.kept else (plan.path,)
    else:
        _forward(x, w, b, y, plan.geo)
        kept = (plan.path,)
    yf = y.reshape(y.size)
    if residual is not None:
        from .add_cuda import add_forward, add_relu_forward

        (add_relu_forward if relu else add_forward)(yf, residual.reshape(residual.size), yf)
    elif relu:
        from .relu_cuda import relu_forward

        relu_forward(yf, yf)
    return kept


def conv2d_backward(x, w, gy, gw, gb, gx, plan, kept, scratch) -> None:
    """gw += the weight gradient, gb += the bias gradient (gb empty: no bias), gx = the input
    gradient (None: not wanted); ``scratch`` as the plan shapes it."""
    if kept[0] == "cublas":
        _conv_columns_cuda.backward(w, gy, gw, gx, plan.geo, kept[1], *scratch)
    else:
        _backward_weight(x, gy, gw, scratch[0], plan.geo)
    if gb.size:
        _backward_bias(gy, gb)
    if gx is not None and kept[0] != "cublas":
        _backward_input(w, gy, gx, plan.geo)
