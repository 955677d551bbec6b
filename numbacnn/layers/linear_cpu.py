"""linear CPU kernels: BLAS products (``numbacnn._blas.gemm``, the route conv takes) on chunks
of the batch or of the outputs, one chunk per thread of a parallel Numba loop.

The forward is row-wise, so each chunk writes its own rows (a short chunk through a transposed
product, see ``_TURNED_ROWS``); with fewer samples than threads it cuts the outputs instead
(``_linear_forward_outputs``: vgg_small's fc1, 2048 -> 256, at batch 1 on 2 threads, 82 -> 42
us). The backward, up to ``_SPLIT_MAX_BATCH`` samples, cuts the outputs instead of the batch:
chunk t adds its rows of gw (and sums gy for its part of gb) and writes its columns of gx, each
product over the whole batch, with no partials. A batch cut in two hands each thread a product
over half the samples, too short a reduction for BLAS, plus a pass adding the partials:
vgg_small's fc1 (32 x 2048 -> 256), 2 threads, the weight gradient 248 -> 130 us and the input
gradient 192 -> 137 us. Past that batch the chunks are the batch's again: chunk 0 adds its
product straight into gw (gemm's beta 1), every other chunk t writes its own partial
``part[t - 1]``, and ``_linear_reduce`` adds those (and the bias gradient) into gw and gb
afterwards (at 1024 x 784 -> 100: 481 us against 587 us cut by rows); at batch 1 there is no
partial and, without bias, no second pass. One chunk runs in the calling thread, and so does a
reduce of fewer than ``PARALLEL_MIN`` values: Numba's pool costs more to wake than that work. A
product of the whole batch in one BLAS call would leave one core idle, and BLAS threads of its
own would fight Numba's pool for the cores (a 784-100-100-10 MLP training step took 24 ms
instead of 0.4 ms on 2 cores): every wrapper runs under ``single_thread_blas``. Arrays are
C-contiguous (the executor's buffers): the kernels view them flat, which Numba refuses to
compile for any other layout."""

from __future__ import annotations

import numpy as np

from .._blas import gemm
from .._jit import REASSOC, cpu_kernel, cpu_serial, prange
from .._threads import PARALLEL_MIN, batch_chunks, single_thread_blas
from .relu_cpu import _forward_at as _relu_at

__all__ = ["linear_scratch", "linear_forward", "linear_backward"]


@cpu_serial
def _forward_chunk(x, w, b, y, yt, t, relu):
    """Chunk t of yt.shape[0]: its rows of y = x @ w.T (+ b); through yt[t] = w @ x^T
    (transposed, then copied) when yt has room for it; then (``relu``) relu's rule on them,
    NaN kept and -0.0 to 0, while they are in cache (inference's fused linear + relu)."""
    N, K = y.shape
    J = x.shape[1]
    T = yt.shape[0]
    xf, wf, yf = x.reshape(x.size), w.reshape(w.size), y.reshape(y.size)
    n0, n1 = t * N // T, (t + 1) * N // T
    m = n1 - n0
    if yt.shape[1]:
        ytf = yt[t].reshape(yt.shape[1] * yt.shape[2])
        gemm(False, True, K, m, J, wf, J, xf[n0 * J:], J, 0, ytf, m)
        for n in range(m):
            for k in range(K):
                y[n0 + n, k] = ytf[k * m + n] + b[k] if b.size else ytf[k * m + n]
    else:
        gemm(False, True, m, K, J, xf[n0 * J:], J, wf, J, 0, yf[n0 * K:], K)
        if b.size:
            for n in range(n0, n1):
                for k in range(K):
                    y[n, k] += b[k]
    if relu:
        for i in range(n0 * K, n1 * K):
            _relu_at(yf, yf, i)


# The chunk bodies are functions of their own, each compiled once: inlined, a body compiled
# twice (the one-chunk call's copy and the loop's). Their calls pass no literal and not the
# parallel loop's index itself (np.int64(0), np.int64(t)): a literal argument (0, False) makes
# a specialisation of its own, and the index is uint64 inside the parallel region, int64 where
# Numba first types the loop, so passing it compiles the body twice. From an empty cache:
# forward 1.84 -> 0.92 s, backward 1.85 -> 0.84, reduce 0.64 -> 0.37; run times level (batch
# 1 to 256, training and inference, alternating trees).
@cpu_kernel
def _linear_forward_chunks(x, w, b, y, yt, relu):
    # One chunk runs in the calling thread: even a one-thread parallel region costs 1.4 us
    # against 0.3 us inline, and a batch-1 call has one chunk.
    if yt.shape[0] == 1:
        _forward_chunk(x, w, b, y, yt, np.int64(0), relu)
    else:
        for t in prange(yt.shape[0]):
            _forward_chunk(x, w, b, y, yt, np.int64(t), relu)


@cpu_serial(fastmath=REASSOC)  # the sums run in vector lanes; NaN and Inf still propagate
def _rows_dot(wf, xf, yf, k0, k1, J):
    """yf[k] = w[k] . x for rows k0..k1 of w (flat, J values a row): a batch of one's product,
    four rows at a time (each vector of x loaded once for four rows). OpenBLAS's gemm packs the
    whole block of w before a product with one column (its gemv does not, but has no strided,
    accumulating entry point here): vgg_small's fc1, 2048 -> 256 on 2 threads (AMD EPYC), 84 us
    against 19 (/work/probe/s15/gemv.py); in the model at batch 1, 96 against 41."""
    zero = yf.dtype.type(0)
    k = k0
    while k + 4 <= k1:
        a, b, c, d = np.uint64(k * J), np.uint64((k + 1) * J), np.uint64((k + 2) * J), np.uint64((k + 3) * J)
        s0, s1, s2, s3 = zero, zero, zero, zero
        for j in range(J):
            u = np.uint64(j)
            v = xf[u]
            s0 += wf[a + u] * v
            s1 += wf[b + u] * v
            s2 += wf[c + u] * v
            s3 += wf[d + u] * v
        yf[k], yf[k + 1], yf[k + 2], yf[k + 3] = s0, s1, s2, s3
        k += 4
    for r in range(k, k1):
        a, s = np.uint64(r * J), zero
        for j in range(J):
            s += wf[a + np.uint64(j)] * xf[np.uint64(j)]
        yf[r] = s


@cpu_kernel
def _linear_forward_outputs(x, w, b, y, S, relu):
    """y = x @ w.T (+ b), relu'd when ``relu``, its outputs cut into S chunks, each a product of
    the whole batch by its rows of w (batch-1 inference: one chunk of the batch would leave a
    core idle while one thread streams all of w). A batch of one takes ``_rows_dot``, w's rows
    times x, which is y's row."""
    N, K = y.shape
    J = x.shape[1]
    xf, wf, yf = x.reshape(x.size), w.reshape(w.size), y.reshape(y.size)
    for t in prange(S):
        k0, k1 = t * K // S, (t + 1) * K // S
        if N == 1:
            _rows_dot(wf, xf, yf, np.int64(k0), np.int64(k1), J)
        else:
            gemm(False, True, N, k1 - k0, J, xf, J, wf[k0 * J:], J, 0, yf[k0:], K)
        for n in range(N):
            if b.size:
                for k in range(k0, k1):
                    y[n, k] += b[k]
            if relu:
                for k in range(k0, k1):
                    _relu_at(yf, yf, n * K + k)


@cpu_serial
def _backward_chunk(x, w, gy, gw, gb, part, gx, want_gx, t, T, outputs):
    """Chunk t of T. Cut by the batch: its samples' share of gy^T x (chunk 0 into gw, chunk t
    into part[t - 1]) and, when ``want_gx``, its rows of gx = gy w. Cut by ``outputs``: rows
    [k0, k1) of gw += gy^T x and of gb += gy summed over the batch (in order, as _reduce_row
    sums it), and (``want_gx``) columns [j0, j1) of gx, every product over the whole batch.
    One call site per product either way: each gemm call is code to compile."""
    N, J = x.shape
    K = gy.shape[1]
    xf, wf, gyf, gxf = x.reshape(x.size), w.reshape(w.size), gy.reshape(gy.size), gx.reshape(gx.size)
    gwf = gw.reshape(gw.size)
    if outputs:
        k0, k1, n0, n1 = t * K // T, (t + 1) * K // T, 0, N
        j0, j1 = t * J // T, (t + 1) * J // T
        dst, beta = gwf[k0 * J:], 1
    else:
        k0, k1, n0, n1 = 0, K, t * N // T, (t + 1) * N // T
        j0, j1 = 0, J
        dst, beta = (gwf[0:], 1) if t == 0 else (part[t - 1].reshape(K * J)[0:], 0)
    gemm(True, False, k1 - k0, J, n1 - n0, gyf[n0 * K + k0:], K, xf[n0 * J:], J, beta, dst, J)
    if outputs and gb.size:
        for k in range(k0, k1):
            acc = gy.dtype.type(0)
            for n in range(N):
                acc += gy[n, k]
            gb[k] += acc
    if want_gx:
        gemm(False, False, n1 - n0, j1 - j0, K, gyf[n0 * K:], K, wf[j0:], J, 0, gxf[n0 * J + j0:], J)


@cpu_kernel
def _linear_backward_chunks(x, w, gy, gw, gb, part, gx, want_gx):
    # One chunk (no partials) runs in the calling thread, as in the forward; part (T - 1, 0, 0)
    # cuts the outputs into T chunks (gb's sums included), (T - 1, K, J) the batch.
    T = part.shape[0] + 1
    outputs = T > 1 and part.shape[1] == 0
    if T == 1:  # np.int64(0), not 0: a literal argument would compile the chunk once more
        _backward_chunk(x, w, gy, gw, gb, part, gx, want_gx, np.int64(0), T, outputs)
    else:
        for t in prange(T):
            _backward_chunk(x, w, gy, gw, gb, part, gx, want_gx, np.int64(t), T, outputs)


@cpu_serial
def _reduce_row(part, gy, gw, gb, k):
    """gw[k] += the partials' row k summed; gb[k] += gy[:, k] summed (when gb is not empty)."""
    T, K, J = part.shape
    if T:
        for j in range(J):
            s = part[0, k, j]
            for t in range(1, T):
                s += part[t, k, j]
            gw[k, j] += s
    if gb.size:
        acc = gy.dtype.type(0)
        for n in range(gy.shape[0]):
            acc += gy[n, k]
        gb[k] += acc


@cpu_kernel
def _linear_reduce(part, gy, gw, gb):
    """gw += the partials summed; gb += gy summed over the batch (when gb is not empty)."""
    # Small sums (network3's fc layers: 10 or 100 rows, 64,000 values at most) run in the
    # calling thread: waking the pool costs more than the adds.
    if part.size + gy.size < PARALLEL_MIN:
        for k in range(gw.shape[0]):
            _reduce_row(part, gy, gw, gb, k)
    else:
        for k in prange(gw.shape[0]):
            _reduce_row(part, gy, gw, gb, np.int64(k))


# NumPy's OpenBLAS multiplies a few rows by a transposed weight (x @ w.T, 10 x 288 by 288 x
# 256) 1.5-2x slower than the same product turned around (w @ x^T); from about 128 rows on,
# the direct form wins again. Chunks of up to this many rows take the turned-around form.
_TURNED_ROWS = 64

# Fewest multiply-adds for which a forward with fewer samples than threads (batch-1
# inference) cuts its outputs over the threads instead of running on one.
FORWARD_SPLIT_MIN_MACS = 1 << 17

# Up to this batch the backward's chunks cut the outputs (gw's rows, gx's columns), past it the
# batch (see the module's docstring).
_SPLIT_MAX_BATCH = 256


def linear_scratch(N: int, K: int, J: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The scratch shapes of ``linear_forward`` and ``linear_backward`` for a batch of N, K
    outputs and J inputs. The batch is cut into T chunks, one per thread (at most N): the
    forward's (T, K, rows per chunk) holds each chunk's y^T, or is (T, 0, 0) when chunks are
    too long for that to pay. The backward's is (S - 1, 0, 0) when it cuts the outputs into S
    chunks (a batch of up to _SPLIT_MAX_BATCH, at least PARALLEL_MIN multiply-adds per product,
    S = the threads, at most K and J, at least 2), else (T - 1, K, J): the partial weight
    gradients of the batch's chunks after the first (none for one chunk: batch 1, or one
    thread). With fewer samples than S and at least FORWARD_SPLIT_MIN_MACS multiply-adds, the
    forward's is (S, 0, 1) instead: it cuts the outputs into S chunks."""
    T = batch_chunks(N)
    rows = (N + T - 1) // T
    S = batch_chunks(min(K, J))
    outputs = N <= _SPLIT_MAX_BATCH and N * K * J >= PARALLEL_MIN and S >= 2
    back = (S - 1, 0, 0) if outputs else (T - 1, K, J)
    if T < S and N * K * J >= FORWARD_SPLIT_MIN_MACS:
        return (S, 0, 1), back  # the forward cuts the outputs (_linear_forward_outputs)
    return (T, K, rows) if rows <= _TURNED_ROWS else (T, 0, 0), back


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, scratch: np.ndarray,
                   relu: bool = False) -> None:
    """y = x @ w.T + b (b empty: no bias), relu'd when ``relu`` (inference's fused linear +
    relu); ``scratch`` as ``linear_scratch`` shapes it."""
    with single_thread_blas:
        if scratch.shape[1:] == (0, 1):  # the outputs cut (linear_scratch)
            _linear_forward_outputs(x, w, b, y, scratch.shape[0], relu)
        else:
            _linear_forward_chunks(x, w, b, y, scratch, relu)


def linear_backward(x: np.ndarray, w: np.ndarray, gy: np.ndarray, gw: np.ndarray, gb: np.ndarray,
                    part: np.ndarray, gx: np.ndarray | None) -> None:
    """gw += gy^T x, gb += gy summed (b empty: no bias), gx = gy w (None: not wanted);
    ``part`` is scratch as ``linear_scratch`` shapes it."""
    outputs = part.shape[0] > 0 and part.shape[1] == 0  # cut by outputs: gb summed there too
    with single_thread_blas:
        _linear_backward_chunks(x, w, gy, gw, gb, part, x if gx is None else gx, gx is not None)
        if not outputs and (part.shape[0] or gb.size):
            _linear_reduce(part, gy, gw, gb)
