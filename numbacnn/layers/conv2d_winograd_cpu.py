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

A 5x5 kernel takes F(4x4, 5x5) instead (conv2d_winograd5_cpu: 8x8 tiles, 4 products per
output instead of the 9 of four sub-kernels); this module's public functions hand it there.
Any other kernel larger than 3x3 (up to 6x6) is cut into 3x3 sub-kernels, zero past its edge:
a 4x4 one is four, each seeing the tiles shifted by 0 or 3 pixels. Their transformed tiles sit side by side
in V's rows (nsub*C columns) and their transformed weights stacked in U, so the same 36
products sum over every sub-kernel at once: 9 multiplications per output and channel pair
instead of 25.

The tile transforms live in conv2d_winograd_tiles, the weight transform and the reduction in
conv2d_winograd_weights; this module holds the parallel kernels and the scratch shapes. The
layout follows the pixel-major path (conv2d_cpu): each sample becomes a zero-padded HWC
image (padded up to whole tiles), and its tiles are processed a block of tile rows at a time,
sized to keep V and M in L2. A small image has fewer tiles than a block holds: then a block
holds several consecutive samples of the chunk, their tiles one after the other in V and M,
so that each of the 36 products runs over all of them (at 8x8, one sample's 4 tiles made
products of 4 rows, every one streaming the whole U[e] or partial). The transforms run over
contiguous channels; the products run with one BLAS thread inside a parallel loop over chunks
of the batch (inference at batch 1: over chunks of the sample's tile rows,
``conv2d_forward_winograd_rows``). The weight gradient
accumulates per chunk (no two threads write the same partial) and is summed and transformed
back by ``winograd_reduce``.

NaN and Inf: the transforms mix a whole 6x6 tile, so one NaN or Inf pixel of x (or of the
output gradient) would turn every output (or input gradient) of the tiles around it into NaN,
where the direct convolution, and PyTorch, keep all but its window's neighbours finite (Inf -
Inf inside the transforms). The kernels count the non-finite values they write (forward) or
read (gy, backward) as they go, at the cost of a compare in loops that move the data anyway,
and the wrappers report NaN or Inf in the operands: the layer then recomputes on an im2col
path, whose NaN and Inf land exactly where PyTorch's do. The forward scans x and w only when
y is not finite, and a non-finite y from finite operands (an overflow, or a bug reading
unwritten memory) is left as it is, for the tests to see.

Rounding: the transforms' constants (the points 0, +-1, +-2) make float32 results about ten
times further from the exact ones than the direct sum's (measured 3e-6 against 3e-7 of the
largest output, 64 channels); float64 stays at 1e-15. F(2x2, 3x3) would round like the
direct sum, but its four-times-larger transformed tiles made it 1.5x slower here.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .._blas import gemm
from .._jit import cpu_call, cpu_kernel, cpu_serial, prange
from .._threads import single_thread_blas
from .conv2d_hwc_cpu import from_hwc_any, to_hwc_any, to_hwc_rows_any, to_pixels
from .conv2d_winograd5_cpu import (conv2d_backward_winograd5, conv2d_forward_winograd5, scratch5, winograd_reduce5,
                                   winograd_weights5)
from .conv2d_winograd5_tiles import consts5
from .conv2d_winograd_tiles import (LANES_SCRATCH, group_rows, input_tiles, input_tiles_grad, output_tiles,
                                    output_tiles_grad, plane_size)
from .conv2d_winograd_weights import winograd_reduce, winograd_weights

# Tile block: the transformed input and output of a block (36 * tiles * (C + K) values) stay
# under this many float32 elements (1 MiB), next to BLAS's packing buffers in a 2 MiB L2.
_BLOCK_ELEMENTS = 256 * 1024


def tile_rows(tw: int, C: int, K: int) -> int:
    """Tile rows per block (tw tiles each) for C input and K output channels."""
    return max(1, _BLOCK_ELEMENTS // (36 * tw * (C + K)))


@functools.lru_cache(maxsize=None)  # built once per dtype: 2.5 us a call, at batch 1 a tenth of a kernel
def _consts(dtype: np.dtype) -> tuple[tuple, tuple]:
    f = np.dtype(dtype).type
    return (f(2), f(4), f(5), f(8)), (f(1) / f(4), f(1) / f(6), f(1) / f(12), f(1) / f(24))


@cpu_kernel
def conv2d_forward_winograd(x, U, b, xp, V, M, pix, R, y, pt, pl, tr, ns, c, nonfinite, relu):
    """y[n] = conv2d(x[n]) + b, stride 1, as the sum of the 3x3 sub-kernels' convolutions of
    shifted tiles (``ns`` of them per row). Scratch per chunk t of the batch: V[t], M[t], pix[t]
    and R[t] (``scratch``); xp[t]: chunk t's padded HWC image, each sample's in turn. tr: tile rows per block; past a sample's th, a block holds tr // th samples
    (``scratch``). nonfinite[t] = how many of chunk t's outputs are NaN or +-Inf (before ``relu``:
    y = relu(y) as it is stored, relu's rule)."""
    N, K, P, Q = y.shape
    T = V.shape[0]
    J = U.shape[2] // K
    nsub = J // x.shape[1]
    th, tw = (P + 3) // 4, (Q + 3) // 4
    L = P * Q
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
                        to_hwc_any(x[n], xp[t], pt, pl)
                    for sub in range(nsub):
                        input_tiles(xp[t], V[t], R[t], i0, i1, (n - nb) * th, tw, sub, ns, nsub, c)
                for e in range(36):
                    gemm(False, False, nt, K, J, V[t, e], J, U[0, e], K, 0, M[t, e], K)
                la, lb = 4 * i0 * Q, min(P, 4 * i1) * Q
                for n in range(nb, ne):
                    r0 = (n - nb) * th
                    output_tiles(M[t], pix[t], R[t], i0, i1, r0, P, Q, c)
                    bad += _store(pix[t], 4 * r0 * Q - la, y[n].reshape(K, L), b, la, lb, relu)
        nonfinite[t] = bad


@cpu_kernel
def conv2d_forward_winograd_rows(x, U, b, xp, V, M, pix, R, y, pt, pl, tr, ns, c, nonfinite, relu):
    """conv2d_forward_winograd for a batch of one (inference), its tile rows cut into the T
    chunks instead of its samples: the rows of x[0]'s one padded image xp[0] are made in a
    parallel loop of their own (a chunk's last tiles read the next chunk's first rows), then
    chunk t runs tile rows [t*th//T, (t+1)*th//T), a block of tr at a time, on V[t], M[t],
    pix[t] and R[t] (``scratch`` with T above N)."""
    K, P, Q = y.shape[1:]
    T = V.shape[0]
    J = U.shape[2] // K
    nsub = J // x.shape[1]
    th, tw = (P + 3) // 4, (Q + 3) // 4
    yn = y[0].reshape(K, P * Q)
    z = np.int64(0)  # not a literal 0, which would compile the tile functions once more
    for i in prange(xp.shape[1]):  # not T iterations: Numba would fuse the two loops
        to_hwc_rows_any(x[0], xp[0], pt, pl, np.int64(i), np.int64(i + 1))
    for t in prange(T):
        bad = 0
        for i0 in range(t * th // T, (t + 1) * th // T, tr):
            i1 = min((t + 1) * th // T, i0 + tr)
            for sub in range(nsub):
                input_tiles(xp[0], V[t], R[t], i0, i1, z, tw, sub, ns, nsub, c)
            for e in range(36):
                gemm(False, False, (i1 - i0) * tw, K, J, V[t, e], J, U[0, e], K, 0, M[t, e], K)
            output_tiles(M[t], pix[t], R[t], i0, i1, z, P, Q, c)
            bad += _store(pix[t], -4 * i0 * Q, yn, b, 4 * i0 * Q, min(P, 4 * i1) * Q, relu)
        nonfinite[t] = bad


@cpu_call
def _store(pixt, o, yn, b, la, lb, relu):
    """yn[k, l] = pixt[o + l, k] + b[k] for the output pixels l in [la, lb), through relu's
    rule when ``relu`` (NaN kept, -0.0 to 0: a fused relu, written while the value is in a
    register); returns how many of the sums are NaN or +-Inf (v - v is 0 for the rest),
    counted before the relu, which would hide a -Inf."""
    bad = 0
    zero = yn.dtype.type(0)
    for k in range(yn.shape[0]):
        bk = b[k] if b.size else zero
        # unsigned indices: la is not known to LLVM as >= 0, and a signed index's negative
        # wrap kept the loop scalar (vgg_small at batch 256, alternating trees: 53.5-56.0 ->
        # 48.1-51.9 ms)
        if relu:  # apart from the plain loop, which then stays free of the choice
            for j in range(la, lb):
                l = np.uint64(j)
                v = pixt[np.uint64(o + j), k] + bk
                yn[k, l] = zero if v <= zero else v
                bad += np.int64(v - v != 0)
        else:
            for j in range(la, lb):
                l = np.uint64(j)
                v = pixt[np.uint64(o + j), k] + bk
                yn[k, l] = v
                bad += np.int64(v - v != 0)
    return bad


@cpu_kernel
def conv2d_backward_winograd(x, U, gy, xp, gxp, V, M, pix, R, part, gx, pt, pl, tr, ns, want_gx, c, nonfinite):
    """part[t] (36, nsub*C, K) = chunk t's weight gradient in the transformed domain; gx[n] (when
    ``want_gx``) = the input gradient, gathered in the padded HWC scratch gxp[t]. xp: one padded
    HWC image per chunk, x[n]'s made again here (not kept from the forward); tr as the forward's. nonfinite[t] = how many
    of chunk t's values of gy are NaN or +-Inf."""
    N, K, P, Q = gy.shape
    T = V.shape[0]
    J = U.shape[2] // K
    nsub = J // x.shape[1]
    th, tw = (P + 3) // 4, (Q + 3) // 4
    L = P * Q
    g = max(1, tr // th)
    for t in prange(T):
        bad = 0
        n0 = t * N // T
        for nb in range(n0, (t + 1) * N // T, g):
            ne = min((t + 1) * N // T, nb + g)
            for i0 in range(0, th, tr):
                i1 = min(th, i0 + tr)
                nt = (ne - nb) * (i1 - i0) * tw
                la, lb = 4 * i0 * Q, min(P, 4 * i1) * Q
                for n in range(nb, ne):
                    r0 = (n - nb) * th
                    bad += to_pixels(gy[n].reshape(K, L), pix[t], 4 * r0 * Q - la, la, lb)
                    output_tiles_grad(pix[t], M[t], R[t], i0, i1, r0, P, Q, c)
                    if i0 == 0:  # x[n] padded again: keeping every sample's from the forward cost memory
                        to_hwc_any(x[n], xp[t], pt, pl)
                    for sub in range(nsub):
                        input_tiles(xp[t], V[t], R[t], i0, i1, r0, tw, sub, ns, nsub, c)
                beta = 0 if nb == n0 and i0 == 0 else 1
                for e in range(36):
                    ve, me = V[t, e], M[t, e]
                    # part[t, e] (+)= V[e]^T @ Z[e]; then V[e] = Z[e] @ U[e]^T, the tiles' gradient
                    gemm(True, False, J, K, nt, ve, J, me, K, beta, part[t, e].reshape(J * K), K)
                    if want_gx:
                        gemm(False, False, nt, J, K, me, K, U[0, e], J, 0, ve, J)
                if want_gx:
                    for n in range(nb, ne):
                        if i0 == 0:
                            gxp[t].reshape(gxp[t].size)[:] = 0
                        for sub in range(nsub):
                            input_tiles_grad(V[t], gxp[t], R[t], i0, i1, (n - nb) * th, tw, sub, ns, nsub, c)
                        if i1 == th:
                            from_hwc_any(gxp[t], gx[n], pt, pl)
        nonfinite[t] = bad


@cpu_kernel
def winograd_nonfinite(a):
    """How many elements of the flat array ``a`` are NaN or +-Inf."""
    bad = 0
    for i in prange(a.size):
        v = a[i]
        bad += np.int64(v - v != 0)
    return bad


@cpu_serial
def _same_words(a, b):
    """Whether the flat uint32 arrays a and b are equal, word for word. A block at a time, so
    the compare runs in vector lanes and still stops early at a change."""
    n = a.size
    whole = n - n % 1024
    for i0 in range(0, whole, 1024):
        diff = np.uint32(0)
        for i in range(1024):  # a constant count: LLVM vectorised it, a min() bound not (10x slower)
            diff |= a[i0 + i] ^ b[i0 + i]
        if diff:
            return False
    diff = np.uint32(0)
    for i in range(whole, n):
        diff |= a[i] ^ b[i]
    return diff == 0


class WeightCache:
    """The transformed weights of an inference forward, kept between calls, with a copy of the
    weight they came from: ``transformed(w)`` transforms again only when w differs from that copy
    bit for bit, so an edit in place, a training step or a loaded checkpoint is seen on the next
    call, and NaN in w is seen as NaN (the forward's fallback still runs). A plan owns one (one
    per inference thread and input signature, never shared): the arena's buffers are handed to
    other nodes between calls, so the cache cannot live there. Costs 36/(R*S) times w's size
    per sub-kernel (4x for 3x3; 64/25 for 5x5) plus w's own, per signature and thread."""

    __slots__ = ("U", "source")

    def __init__(self) -> None:
        self.U: np.ndarray | None = None
        self.source: np.ndarray | None = None

    def transformed(self, w: np.ndarray) -> np.ndarray:
        """U[0] of ``winograd_weights`` (5x5: ``winograd_weights5``) for w, as a (1, points,
        columns) array."""
        src = self.source
        if (src is None or src.shape != w.shape or src.dtype != w.dtype
                or not _same_words(_words(src), _words(np.ascontiguousarray(w)))):
            shape = _weights_shape(w.shape)
            if self.U is None or self.U.shape != (1, *shape) or self.U.dtype != w.dtype:
                self.U = np.empty((1, *shape), w.dtype)
            self.source = None  # no stale pair if the transform fails half-way
            source = np.array(w, order="C")  # copied first: the transform reads exactly the copy
            with single_thread_blas:
                _weights(source, self.U)
            self.source = source
        return self.U


def _five(shape: tuple[int, ...]) -> bool:
    # A 5x5 kernel (w's or gw's shape): F(4x4, 5x5), conv2d_winograd5_cpu.
    return tuple(shape[2:]) == (5, 5)


def _weights_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    # (transform points, columns) of one U matrix set for a weight of this shape.
    K, C, R, S = shape
    return (64, C * K) if _five(shape) else (36, ((R + 2) // 3) * ((S + 2) // 3) * C * K)


def _weights(w: np.ndarray, U: np.ndarray, transposed: bool = False) -> None:
    # U[0] = the transformed weights of w (either transform; transposed: the input gradient's
    # layout), under single_thread_blas.
    if _five(w.shape):
        winograd_weights5(w, U, consts5(w.dtype), transposed)
    else:
        winograd_weights(w, U, _consts(w.dtype)[1], transposed)


def _words(a: np.ndarray) -> np.ndarray:
    # A contiguous float32 or float64 array's bits as flat uint32 words.
    return a.reshape(-1).view(np.uint32)


def scratch(N: int, T: int, C: int, K: int, P: int, Q: int, kernel: tuple[int, int]
            ) -> tuple[dict[str, tuple[int, ...]], int]:
    """Shapes of the scratch arrays for a batch of N cut into T chunks (a P x Q output), and
    the tile rows per block (more than a sample's when a block holds several samples): ``xp``
    holds one padded HWC image per chunk (forward and backward alike: nothing is kept from one
    to the other), or the one sample's where T is above N (its tile rows split, inference
    alone), ``part`` the weight gradient partials. A kernel larger
    than 3x3 is cut into 3x3 sub-kernels (``U`` holds each one's transform), except 5x5
    (conv2d_winograd5_cpu.scratch5: 64 transform points)."""
    if tuple(kernel) == (5, 5):
        return scratch5(N, T, C, K, P, Q, _BLOCK_ELEMENTS)
    th, tw = (P + 3) // 4, (Q + 3) // 4
    nr, ns = (kernel[0] + 2) // 3, (kernel[1] + 2) // 3
    J = nr * ns * C  # columns of the transformed input: every sub-kernel's channels
    # T above N: one sample's tile rows in T chunks (conv2d_forward_winograd_rows), one image.
    tr = group_rows(tile_rows(tw, J, K), th, N, T) if T <= N else group_rows(tile_rows(tw, J, K), -(-th // T), 1, 1)
    return {"U": (1, 36, J * K), "xp": (min(T, N), 4 * th + 3 * nr - 1, 4 * tw + 3 * ns - 1, C),
            "V": (T, 36, plane_size(tr * tw, J)), "M": (T, 36, plane_size(tr * tw, K)), "pix": (T, 4 * tr * Q, K),
            "R": (T, LANES_SCRATCH), "part": (T, 36, J, K), "nonfinite": (T,)}, tr


def conv2d_forward_wino(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, U: np.ndarray,
                        xp: np.ndarray, V: np.ndarray, M: np.ndarray, pix: np.ndarray, R: np.ndarray,
                        nonfinite: np.ndarray, pads: tuple[int, int], tr: int, cache: WeightCache | None = None,
                        relu: bool = False) -> bool:
    """y = conv2d(x, w) + b (stride 1, groups 1; pads: top and left). ``U`` receives the
    transformed weights; ``xp`` (min(T, N) images), ``V``, ``M``, ``pix``, ``R`` and
    ``nonfinite`` are scratch as ``scratch`` shapes them. With a
    ``cache`` (no backward to come), the weights come from it and U is not used (may be None).
    ``relu``: y = relu(y) as each output is stored (a fused relu; NaN kept, -0.0 to 0).
    False when x or w holds NaN or Inf: then y is not PyTorch's, and an im2col path must
    recompute it."""
    c = _consts(x.dtype)[0]
    if cache is not None:
        U = cache.transformed(w)
    with single_thread_blas:
        if cache is None:
            _weights(w, U)
        if _five(w.shape):
            conv2d_forward_winograd5(x, U, b, xp, V, M, pix, R, y, pads[0], pads[1], tr, consts5(x.dtype), nonfinite,
                                     relu)
        else:
            forward = conv2d_forward_winograd_rows if V.shape[0] > x.shape[0] else conv2d_forward_winograd
            forward(x, U, b, xp, V, M, pix, R, y, pads[0], pads[1], tr, (w.shape[3] + 2) // 3, c, nonfinite, relu)
    if not nonfinite.any():
        return True
    return winograd_nonfinite(x.reshape(-1)) == 0 and winograd_nonfinite(w.reshape(-1)) == 0


def winograd_step(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, plan: Any, scratch: tuple,
                  relu: bool) -> bool:
    """conv2d_forward_wino for a "winograd" conv2d_cpu.Conv2dPlan and its ``forward_scratch``
    arrays; False when x or w holds NaN or Inf (its callers then recompute on exact paths)."""
    U = None if plan.weights is not None else scratch[0]
    return conv2d_forward_wino(x, w, b, y, U, *scratch[-6:], (plan.geo[7], plan.geo[8]), plan.tiles, plan.weights, relu)


def conv2d_backward_wino(x: np.ndarray, w: np.ndarray, gy: np.ndarray, gw: np.ndarray, gb: np.ndarray,
                         gx: np.ndarray | None, U: np.ndarray, xp: np.ndarray, gxp: np.ndarray | None, V: np.ndarray,
                         M: np.ndarray, pix: np.ndarray, R: np.ndarray, part: np.ndarray, nonfinite: np.ndarray,
                         pads: tuple[int, int], tr: int) -> bool:
    """gw += the weight gradient, gb += the bias gradient, gx = the input gradient (None: not
    wanted; then ``gxp`` may be None). Scratch as ``scratch`` shapes it: ``U`` (the
    weights are transformed again here, transposed: the input gradient's products read them), ``xp`` and ``gxp`` (T padded images each), ``part``
    and the forward's others. Nothing is kept from the forward: a training step's memory then
    holds x alone per convolution, not x's padded copy and the transformed weights too. False
    when gy holds NaN or Inf: then gw and gb are left alone, gx is not PyTorch's, and an im2col
    path must compute all three."""
    N, K = gy.shape[:2]
    c, cg = _consts(x.dtype)
    five = _five(gw.shape)
    with single_thread_blas:
        _weights(w, U, transposed=True)
        if five:
            conv2d_backward_winograd5(x, U, gy, xp, xp if gxp is None else gxp, V, M, pix, R, part,
                                      x if gx is None else gx, pads[0], pads[1], tr, gx is not None, consts5(x.dtype),
                                      nonfinite)
        else:
            conv2d_backward_winograd(x, U, gy, xp, xp if gxp is None else gxp, V, M, pix, R, part,
                                     x if gx is None else gx, pads[0], pads[1], tr, (gw.shape[3] + 2) // 3,
                                     gx is not None, c, nonfinite)
        if nonfinite.any():
            return False
        if five:
            winograd_reduce5(part, gw, gy.reshape(N, K, -1), gb, consts5(x.dtype))
        else:
            winograd_reduce(part, gw, gy.reshape(N, K, -1), gb, cg)
    return True
