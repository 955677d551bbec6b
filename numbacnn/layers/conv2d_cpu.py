"""conv2d CPU: per-sample im2col and BLAS products inside parallel Numba kernels.

Each sample's column matrix ``col[n]``, rows (c, r, s) and columns (p, q), is built by the thread
that owns sample n and multiplied right there with ``gemm`` (numbacnn._blas; numbacnn._micro's tile
where ``micro_fits``): y[n] = w @ col[n] lands in NCHW order, the column matrix still hot in cache.
A 1x1, stride-1, unpadded convolution skips im2col: x[n] already is its column matrix.

The weight gradient sums gy[n] @ col[n]^T over the batch: each of T chunks of samples adds into its
own partial, and ``reduce_partials`` sums the partials afterwards, so no two threads ever write the
same element. The input gradient is per sample again: col[n] = w^T @ gy[n], then col2im scatters it
into gx[n] (the direct path writes gx[n] itself).

Few input channels, groups, strides, 1x1 and one-row (conv1d) take that channel-major path (one-row
5-tap stride-1 ones with enough channels: F(4, 5), conv1d_winograd_cpu); the others the pixel-major
one (conv2d_pixel_cpu), except stride-1 convolutions with >= 16 input and output channels and 3x3
kernels (or up to 6x6 on larger outputs): Winograd (F(4x4, 3x3), F(4x4, 5x5): conv2d_winograd_cpu);
float64 takes the channel-major path unless forced. A stride-1 inference at batch 1 or off Winograd,
and a training forward at stride 1 that would be channel-major or has few channels, take a direct
convolution (conv2d_shift_cpu; its backward channel-major or pixel-major). ``conv2d_plan`` makes that
choice (conv2d_plan.cpu_path, its thresholds; ``force_path``) once per input shape, with the scratch
shapes; ``conv2d_forward`` and ``conv2d_backward`` dispatch on the plan. Every wrapper runs under
``single_thread_blas`` (BLAS threads would fight Numba's pool). ``geo``: (groups, R, S, stride_h,
stride_w, dilation_h, dilation_w, pad_top, pad_left).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._blas import gemm
from .._jit import cpu_kernel, cpu_serial, prange
from .._micro import blocked_gemm, micro_fits
from .._threads import batch_chunks, single_thread_blas
from ._conv_columns import col2im as _col2im, im2col as _im2col, im2col_flat, im2col_rows as _im2col_rows
from .conv2d_hwc_cpu import reduce_partials
from .conv2d_pixel_cpu import pixel_backward, pixel_block, pixel_forward
from .conv2d_plan import (Conv2dPlan, WINOGRAD_SPLIT_MIN_ROWS, cpu_path, direct, force_path,  # noqa: F401
                          pixel_major, requested)  # (force_path)
from .conv2d_shift_cpu import shift_forward, shift_scratch

Geometry = tuple[int, int, int, int, int, int, int, int, int]

__all__ = ["conv2d_plan", "conv2d_forward", "conv2d_backward"]


@cpu_serial
def _columns(xn, cf, P, Q, geo):
    """xn's column matrix into cf (compiled once, called by the kernels below)."""
    if geo[3] == 1 and geo[4] == 1 and Q == xn.shape[2]:  # stride 1, "same" width: a flat copy a tap
        im2col_flat(xn, cf, P, Q, geo)
    else:
        _im2col(xn, cf, P, Q, geo)


@cpu_serial
def _forward_chunk(x, x4, w3, b, sc, col, y4, r4, n0, n1, l0, l1, k0, k1, P, Q, geo, direct, relu, micro, build):
    """Output columns l0..l1 of channels k0..k1 (each group's) of samples n0..n1, one thread's
    share of _forward_batch or _forward_split, through its own column matrix col (built here
    for each sample when ``build``, else by the caller); ``sc`` (empty: none) a scale per channel
    before the bias (a folded batch norm); ``r4`` (no samples: none) a residual added after the
    bias, as an add node would; ``relu``: y = max(y, 0) as relu computes it (NaN kept), last; all
    while y is in cache. An empty residual rather than None: one specialisation serves both (the
    residual's own took 1.2 s of compiling for _forward_batch, 0.9 for _forward_split, each time a
    model with residual joins first ran, and in every warm-up)."""
    (_, G, Kg, L), J = y4.shape, w3.shape[2]
    res = r4.shape[0] != 0
    for n in range(n0, n1):
        if build and not direct:
            _columns(x[n], col.reshape(col.size), P, Q, geo)
        src = x4[n] if direct else col
        for g in range(G):  # y4[n, g][k0:k1, l0:l1] = w3[g][k0:k1] @ src[g][:, l0:l1]
            blocked_gemm(k1 - k0, l1 - l0, J, w3[g].reshape(Kg * J)[k0 * J:], J, src[g].reshape(J * L)[l0:], L,
                         y4[n, g].reshape(Kg * L)[k0 * L + l0:], L, micro)
        # The choices outside the inner loops: each stays one plain pass for LLVM to vectorise.
        # A residual (y + b) + r and its relu take one pass (two passes, the relu's apart, ran
        # a batch-1 1x1 16->64 at 32x32 with add and relu in 72-101 us against 59-61), with
        # b = -0.0 where there is no bias (the exact identity: x + -0.0 is x, -0.0 included),
        # and a scale of 1 where there is none (y * 1 is y, NaN and -0.0 included).
        if not res and not relu and not b.size and not sc.size:
            continue
        zero, one = y4.dtype.type(0), y4.dtype.type(1)
        for g in range(G):
            for k in range(k0, k1):
                bk, sk = b[g * Kg + k] if b.size else -zero, sc[g * Kg + k] if sc.size else one
                if res and relu:
                    for j in range(l0, l1):
                        i = np.uint64(j)
                        v = (y4[n, g, k, i] * sk + bk) + r4[n, g, k, i]
                        y4[n, g, k, i] = zero if v <= zero else v
                elif res:
                    for j in range(l0, l1):
                        i = np.uint64(j)
                        y4[n, g, k, i] = (y4[n, g, k, i] * sk + bk) + r4[n, g, k, i]
                elif relu:  # relu takes -0.0 to 0
                    for j in range(l0, l1):
                        i = np.uint64(j)
                        v = y4[n, g, k, i] * sk + bk
                        y4[n, g, k, i] = zero if v <= zero else v
                else:
                    for j in range(l0, l1):
                        i = np.uint64(j)
                        y4[n, g, k, i] = y4[n, g, k, i] * sk + bk


@cpu_kernel
def _forward_batch(x, x4, w3, b, sc, col, y4, r4, T, P, Q, geo, direct, relu, micro):
    """y4[n, g] = w3[g] @ xcol[n, g] (+ b), xcol[n] being x[n]'s column matrix, which chunk t of T
    builds in col[t] (x4[n] when ``direct``). Each chunk's body is compiled apart (inlined into
    the loop, it compiled 2x slower); no literal (np.int64(0), not 0): each makes a specialisation."""
    (N, _, _, L), z = y4.shape, np.int64(0)
    for t in prange(T):
        _forward_chunk(x, x4, w3, b, sc, col[t], y4, r4, t * N // T, (t + 1) * N // T, z, L, z, y4.shape[2], P, Q, geo,
                       direct, relu, micro, np.bool_(True))


@cpu_serial
def _window(xn, cf, P, Q, geo, pa, pb):
    """The columns of output rows pa..pb of xn's column matrix into cf."""
    _im2col_rows(xn, cf, P, Q, geo, pa, pb)


@cpu_kernel
def _forward_split(x, x4, w3, b, sc, col, y4, r4, T, P, Q, geo, direct, relu, micro):
    """_forward_batch for fewer samples than chunks (batch-1 inference, conv2d_plan): the samples
    one at a time, each one's output rows split T ways, chunk t building their columns in col[t]
    and multiplying them; a 1x1 (direct: no columns) splits its output channels (by columns,
    resnet_bottleneck at batch 1 ran 925-960 us against 870-887). A kernel of its own: only
    batch-1 inference compiles it (one loop for both ran the batch's 1.5x slower)."""
    N, _, Kg, L = y4.shape
    z = np.int64(0)  # not a literal: as _forward_batch's
    for n in range(N):
        for t in prange(T):
            if direct:  # 1x1: chunk t takes output channels; col is x4 itself (unused, N < T samples)
                _forward_chunk(x, x4, w3, b, sc, col[0], y4, r4, n, n + 1, z, L, t * Kg // T, (t + 1) * Kg // T, P, Q,
                               geo, direct, relu, micro, np.bool_(False))
            else:
                pa, pb = t * P // T, (t + 1) * P // T
                _window(x[n], col[t].reshape(col[t].size), P, Q, geo, pa, pb)
                _forward_chunk(x, x4, w3, b, sc, col[t], y4, r4, n, n + 1, pa * Q, pb * Q, z, Kg, P, Q, geo, direct,
                               relu, micro, np.bool_(False))


@cpu_serial
def _backward_chunk(x, x4, w3, gy4, col, part, gx, gx4, n0, n1, P, Q, geo, direct):
    """_backward_chunks' samples n0..n1, one thread's share; part: its partial. gx, gx4 None: no
    input gradient, none of its code compiled (a first layer: cold train 12.6-12.8 -> 11.9 s)."""
    _, G, Kg, L = gy4.shape
    J = part.shape[2]
    for n in range(n0, n1):
        if not direct:
            _columns(x[n], col.reshape(col.size), P, Q, geo)
        src = x4[n] if direct else col
        for g in range(G):  # part[g] (+)= gy4[n, g] @ src[g]^T
            gemm(False, True, Kg, J, L, gy4[n, g].reshape(Kg * L), L, src[g].reshape(J * L), L,
                 0 if n == n0 else 1, part[g].reshape(Kg * J), J)
        if gx is not None:  # an argument's None type: Numba prunes the branch at compile time
            dst = gx4[n] if direct else col
            for g in range(G):  # dst[g] = w3[g]^T @ gy4[n, g]
                gemm(True, False, J, L, Kg, w3[g].reshape(Kg * J), J, gy4[n, g].reshape(Kg * L), L, 0,
                     dst[g].reshape(J * L), L)
            if not direct:
                _col2im(col.reshape(col.size), gx[n], P, Q, geo)


@cpu_kernel
def _backward_chunks(x, x4, w3, gy4, col, part, gx, gx4, P, Q, geo, direct):
    """part[t, g] = the sum over chunk t of the samples of gy4[n, g] @ xcol[n, g]^T, and (gx not
    None) gx[n] = col2im(w3^T @ gy4[n]); col[t] holds one sample's column matrix at a time,
    rebuilt from x here rather than kept from the forward (``direct``: x4 and gx4)."""
    N = gy4.shape[0]
    T = part.shape[0]
    for t in prange(T):
        _backward_chunk(x, x4, w3, gy4, col[t], part[t], gx, gx4, t * N // T, (t + 1) * N // T, P, Q, geo,
                        direct)


def _per_group(a: np.ndarray, G: int, L: int) -> np.ndarray:
    # (rows, G, per-group rows, L) view of column matrices, or of x itself on the direct path.
    return a.reshape(a.shape[0], G, -1, L)


def _im2col_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, col: np.ndarray | None,
                   geo: Geometry, chunks: int, relu: bool = False, residual: np.ndarray | None = None,
                   last: list | None = None, scale: np.ndarray | None = None) -> None:
    """y = conv2d(x, w) * ``scale`` + b (scale None, b empty: none) (+ ``residual``) in ``chunks`` chunks of the
    batch, relu'd when ``relu``; scratch ``col`` (chunks, C*R*S, P*Q), None on the direct (1x1) path. ``last``
    (the plan's): the last call's arrays and kernel arguments, reused for the same objects."""
    if last and last[0] is x and last[1] is w and last[2] is b and last[3] is y and last[4] is col \
            and last[5] is residual and last[6] == relu and last[7] is scale:  # the last call's arrays: its arguments
        kernel, args = last[8:]
    else:
        G = geo[0]
        N, K, P, Q = y.shape
        x4 = _per_group(x, G, x.shape[2] * x.shape[3])
        kernel = _forward_split if N < chunks else _forward_batch
        sc = np.empty(0, y.dtype) if scale is None else scale
        r4 = np.empty((0, G, K // G, P * Q), y.dtype) if residual is None else _per_group(residual, G, P * Q)
        args = (x, x4, w.reshape(G, K // G, -1), b, sc, x4 if col is None else _per_group(col, G, P * Q),
                _per_group(y, G, P * Q), r4, chunks, P, Q, geo, col is None, relu,
                N >= chunks and micro_fits(y.dtype, K // G, P * Q, w[0].size))  # the tile: whole samples
        if chunks == 1:  # one chunk: its body called directly, no parallel region (1x1 16->16 at 4x4: -1.2 us)
            kernel, args = _forward_chunk, (*args[:5], args[5][0], *args[6:8], 0, N, 0, P * Q, 0, K // G, *args[9:],
                                            True)
        if last is not None:
            last[:] = [x, w, b, y, col, residual, relu, scale, kernel, args]
    with single_thread_blas:
        kernel(*args)


def _im2col_backward(x: np.ndarray, w: np.ndarray, gy: np.ndarray, gw: np.ndarray, gb: np.ndarray,
                    gx: np.ndarray | None, col: np.ndarray | None, part: np.ndarray, geo: Geometry) -> None:
    """gw += the weight gradient, gb += the bias gradient (gb empty: no bias), gx = the input gradient
    (None: not wanted). Scratch, T chunks: ``part`` (T, K, C/G*R*S), ``col`` (T, C*R*S, P*Q) or None."""
    G = geo[0]
    N, K, P, Q = gy.shape
    T, J = part.shape[0], part.shape[2]
    x4 = _per_group(x, G, x.shape[2] * x.shape[3])
    gx4 = None if gx is None else _per_group(gx, G, x.shape[2] * x.shape[3])
    with single_thread_blas:
        _backward_chunks(x, x4, w.reshape(G, K // G, J), _per_group(gy, G, P * Q),
                               x4 if col is None else _per_group(col, G, P * Q), part.reshape(T, G, K // G, J),
                               gx, gx4, P, Q, geo, col is None)
        reduce_partials(part, gw.reshape(K, J), gy.reshape(N, K, P * Q), gb, 0)


# Fewest multiply-adds for which an inference im2col convolution at a batch below the thread count
# splits each sample's output rows over the threads (else chunks hold whole samples). Batch 1, 2
# threads, medians (us, split against whole): 1x1 16->4 at 64x64 (262k) 22 / 22; 1x1 16->16 at 64x64
# (1M) 52 / 89; 1x1 64->64 at 32x32 (4.2M) 109 / 158; 3x3 4->8 at 128x128 (4.7M) 268 / 419; 3x3
# 32->32 at 32x32 (9.4M) 212 / 394; vgg_small at batch 1 with its 3->32 3x3 at 32x32 (885k) split,
# one process alternating: 672-703 against 699-722 us. Shifted taps split their tiles from it too.
# (numbacnn._passes.one_thread may run a batch-1 model on one thread.)
SPLIT_MIN_MACS = 1 << 19


def conv2d_plan(name: str, x_shape: tuple[int, ...], y_shape: tuple[int, ...], geo: Geometry,
                backward: bool, dtype: Any) -> Conv2dPlan:
    """The path (conv2d_plan.cpu_path) and scratch for an (N, C, H, W) ``dtype`` input giving
    ``y_shape``; ``backward``: a backward is to come (the forward keeps what it needs; else
    scratch is per chunk and Winograd keeps its transformed weights). ``name`` names the node in errors."""
    (N, C, H, W), (K, P, Q), (G, R, S) = x_shape, y_shape[1:], geo[:3]
    T, threads = batch_chunks(N), batch_chunks(1 << 30)
    split = not backward and N < threads and K * (C // G) * R * S * P * Q >= SPLIT_MIN_MACS
    path = cpu_path(name, x_shape, y_shape, geo, dtype, backward, split)
    if path == "im2col" and split:
        T = threads  # inference at a batch below the thread count: each sample split (the kernels)
    if path == "winograd" and not backward and N == 1 and (R, S) != (5, 5):
        T = max(1, min(threads, (P + 3) // 4 // WINOGRAD_SPLIT_MIN_ROWS))  # batch 1: tile rows split (the kernel)
    if path == "winograd1d":
        from .conv1d_winograd_cpu import scratch1d

        sc, tiles = scratch1d(N, T, C, K, Q)
        forward, back = (tuple((sc[k], "int64" if k == "nonfinite" else None) for k in names)
                         for names in (("U", "V", "M", "R", "nonfinite"), ("U", "V", "M", "R", "part", "nonfinite")))
        return Conv2dPlan(path, geo, y_shape, T, forward, back, tiles)  # nothing kept: x is transformed again
    if path == "winograd":
        from .conv2d_winograd_cpu import WeightCache, scratch

        # Nothing kept for the backward: it pads x and transforms w again (U and one padded
        # image per sample would hold more memory than x itself, for a copy and a small product)
        sc, tr = scratch(N, T, C, K, P, Q, (R, S))
        ints = {"nonfinite": "int64"}
        forward = [(sc["U"], None)] if backward else []  # inference: the plan's WeightCache
        forward += [(sc[k], ints.get(k)) for k in ("xp", "V", "M", "pix", "R", "nonfinite")]
        back = [(sc[k], ints.get(k)) for k in ("V", "M", "pix", "R", "part", "nonfinite", "xp", "U", "xp")]
        return Conv2dPlan(path, geo, y_shape, T, tuple(forward), tuple(back), tr,
                          None if backward else WeightCache())  # back: ..., gxp, U, xp
    col = () if direct(geo, x_shape[2:], y_shape[2:]) else (((T, C * R * S, P * Q), None),)
    back = (((T, K, C // G * R * S), None), *col)  # im2col's backward
    J = C * R * S
    B = pixel_block(P * Q, J, 1 if backward else -(-N // T))  # inference: small planes stack samples
    image = (_padded(H, P, R, geo[3], geo[5], geo[7]), _padded(W, Q, S, geo[4], geo[6], geo[8]), C)
    pixel_back = (((K, R, S, C), None), ((T, *image), None), ((T, B, J), None), ((T, K, J), None))  # wp gxp colt part
    if path == "shift":  # nothing kept: a training step's backward is im2col's or (few channels) pixel-major's
        sT = threads if split else T
        pixel = backward and requested() == "auto" and pixel_major(x_shape, y_shape, geo)  # its images made: xp
        return Conv2dPlan(path, geo, y_shape, sT, shift_scratch(sT, x_shape, y_shape, geo),
                          (*pixel_back, ((T, *image), None)) if pixel else back, last=None if backward else [],
                          backward_path="pixel" if pixel else "im2col")
    if path == "pixel":
        forward = [((N if backward else T, *image), None), ((R, S, C, K), None), ((T, B, J), None), ((T, B, K), None)]
        return Conv2dPlan(path, geo, y_shape, T, tuple(forward), pixel_back, kept=1 if backward else 0)  # xp
    return Conv2dPlan(path, geo, y_shape, T, col, back, last=None if backward else [])


def _padded(size: int, out: int, k: int, stride: int, dilation: int, lead: int) -> int:
    # The size with the leading padding and the trailing one the output implies (the last window's reach).
    return size + lead + max(0, (out - 1) * stride + dilation * (k - 1) + 1 - size - lead)


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, plan: Conv2dPlan, scratch: tuple,
                   relu: bool = False, residual: np.ndarray | None = None, scale: np.ndarray | None = None) -> tuple:
    """y = conv2d(x, w) * scale + b (scale None, b empty: none; a scale per output channel is a
    batch norm folded in, numbacnn._fold: im2col, shifted taps and pixel-major apply it as they
    write y, Winograd multiplies a copy of w) on ``plan``'s path, with the arrays its ``forward_scratch``
    describes, plus ``residual`` (y's shape) when given, then relu'd in place when ``relu``:
    inference's fused conv (+ add) (+ relu), in the order the nodes compute them; the im2col,
    pixel-major and Winograd paths apply the relu alone as they write y, the residual in one
    pass after (im2col: as it writes y). Returns what the backward needs besides x: the path
    that ran (Winograd gives way to im2col when x or w holds NaN or Inf) and its kept arrays."""
    if scale is not None and (scale.shape != y.shape[1:2] or scale.dtype != y.dtype or not scale.flags.c_contiguous):
        raise ValueError(f"conv2d_forward: the scale must be a contiguous {y.dtype} array of {y.shape[1]} values "
                         f"(one per output channel); found {scale.dtype} {scale.shape}")
    if scale is not None and plan.path not in ("im2col", "shift", "pixel"):
        w, scale = w * scale.reshape(-1, 1, 1, 1), None
    kept = _forward_path(x, w, b, y, plan, scratch, relu, residual, scale)
    if kept[0] in ("im2col", "shift") or (kept[0] in ("pixel", "winograd") and residual is None):
        return kept  # applied as y was written
    yf = y.reshape(-1)
    if residual is not None:
        from .add_cpu import add_forward, add_relu_forward

        (add_relu_forward if relu else add_forward)(yf, residual.reshape(-1), yf)
    elif relu:
        from .relu_cpu import relu_forward

        relu_forward(yf, yf)
    return kept


def _forward_path(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, plan: Conv2dPlan, scratch: tuple,
                  relu: bool, residual: np.ndarray | None, scale: np.ndarray | None) -> tuple:
    geo = plan.geo
    if plan.path == "winograd":
        from .conv2d_winograd_cpu import winograd_step

        if winograd_step(x, w, b, y, plan, scratch, relu and residual is None):
            return ("winograd",)
        return _im2col_again(x, w, b, y, plan, relu, residual)
    if plan.path == "winograd1d":
        from .conv1d_winograd_cpu import conv1d_forward_wino

        if conv1d_forward_wino(x, w, b, y, *scratch, geo[8], plan.tiles):
            return ("winograd1d",)
        return _im2col_again(x, w, b, y, plan, relu, residual)
    if plan.path == "shift":
        shift_forward(x, w, b, y, scratch, geo, plan.chunks, relu, residual, plan.last, scale)
        return ("shift",)
    if plan.path == "pixel":
        xp, wt, colt, yt = scratch
        pixel_forward(x, w, b, y, xp, wt, colt, yt, geo, relu and residual is None, scale)
        return "pixel", xp
    _im2col_forward(x, w, b, y, scratch[0] if scratch else None, geo, plan.chunks, relu, residual, plan.last, scale)
    return ("im2col",)


def _im2col_again(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, plan: Conv2dPlan,
                  relu: bool, residual: np.ndarray | None) -> tuple:
    # NaN or Inf in x or w on a Winograd path: its transforms spread them over whole tiles;
    # recompute where PyTorch puts them (conv2d_winograd_cpu), with scratch of its own (a rare case).
    geo = plan.geo
    col = None if direct(geo, x.shape[2:], y.shape[2:]) else np.empty(_im2col_scratch(plan, x.shape[1])[1], x.dtype)
    _im2col_forward(x, w, b, y, col, geo, plan.chunks, relu, residual)
    return ("im2col",)


def _im2col_scratch(plan: Conv2dPlan, C: int) -> tuple[tuple[int, ...], ...]:
    # The im2col path's backward scratch shapes (part, col), for C input channels.
    T, (K, P, Q), (G, R, S) = plan.chunks, plan.out[1:], plan.geo[:3]
    return (T, K, C // G * R * S), (T, C * R * S, P * Q)


def conv2d_backward(x: np.ndarray, w: np.ndarray, gy: np.ndarray, gw: np.ndarray, gb: np.ndarray,
                    gx: np.ndarray | None, plan: Conv2dPlan, kept: tuple, scratch: tuple) -> None:
    """gw += the weight gradient, gb += the bias gradient (gb empty: no bias), gx = the input
    gradient (None: not wanted); ``kept``: what conv2d_forward returned, ``scratch``: the arrays
    ``plan.backward_scratch`` describes."""
    geo = plan.geo
    if kept[0] == "winograd":
        from .conv2d_winograd_cpu import conv2d_backward_wino

        V, M, pix, lanes, part, nonfinite, gxp, U, xp = scratch
        if conv2d_backward_wino(x, w, gy, gw, gb, gx, U, xp, gxp, V, M, pix, lanes, part, nonfinite,
                                (geo[7], geo[8]), plan.tiles):
            return
        # NaN or Inf in gy (as in the forward): im2col needs only x
    elif kept[0] == "winograd1d":
        from .conv1d_winograd_cpu import conv1d_backward_wino

        if conv1d_backward_wino(x, w, gy, gw, gb, gx, *scratch, geo[8], plan.tiles):
            return
    elif kept[0] == "pixel" or plan.backward_path == "pixel":  # the forward's images, or its own (shift)
        wp, gxp, colt, part, *xp = scratch
        pixel_backward(x, w, gy, gw, gb, gx, xp[0] if xp else kept[1], wp, gxp, colt, part, geo, bool(xp))
        return
    if plan.path in ("im2col", "shift"):  # shift: its forward only, nothing kept
        part, *col = scratch
        _im2col_backward(x, w, gy, gw, gb, gx, col[0] if col else None, part, geo)
        return
    part_shape, col_shape = _im2col_scratch(plan, x.shape[1])  # after a Winograd fallback: scratch of its own
    col = None if direct(geo, x.shape[2:], gy.shape[2:]) else np.empty(col_shape, x.dtype)
    _im2col_backward(x, w, gy, gw, gb, gx, col, np.empty(part_shape, x.dtype), geo)
