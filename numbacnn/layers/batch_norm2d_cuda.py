"""batch_norm2d CUDA kernels: x, y, gy, gx as (N, C, H*W); statistics and parameters (C,).

The per-channel reductions run one block per channel: each thread sums a strided share of
the channel in float64, then a shared-memory tree adds the shares; thread 0 writes the
channel's results, so no two blocks touch one element. Elementwise kernels run one element
per thread and compute in the data's dtype (eps comes typed like it), since every thread
repeats its channel's coefficients: float64 there would run at a fraction of the float32
rate. The interface (empty ``w``, ``b``, ``gw``, ``gb`` without affine parameters) is
batch_norm2d_cpu.py's.
"""

import math

from numba import cuda, float64

from .._jit import cuda_device, cuda_kernel
from ..device import is_simulator

__all__ = ["batch_norm2d_stats", "batch_norm2d_update_running", "batch_norm2d_update_cumulative",
           "batch_norm2d_forward", "batch_norm2d_backward_weight", "batch_norm2d_backward_input"]

THREADS = 256
# Threads of one per-channel reduction block: a power of two (the tree halves it). The
# simulator runs every thread as a Python thread, so it gets fewer; a simulator test may set
# REDUCE to the GPU's (read when the kernels run there; a GPU compiles it in as a constant).
GPU_REDUCE = 256
REDUCE = 32 if is_simulator() else GPU_REDUCE


@cuda_device
def _block_sum(part, t):
    """Sum ``part[:REDUCE]`` across the block; every thread gets the total."""
    cuda.syncthreads()
    step = REDUCE // 2
    while step > 0:
        if t < step:
            part[t] += part[t + step]
        cuda.syncthreads()
        step //= 2
    total = part[0]
    cuda.syncthreads()  # part may be reused right after
    return total


@cuda_kernel
def _batch_norm2d_stats_kernel(x, mean, var):
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    N, C, L = x.shape
    if c >= C:
        return
    M = N * L
    part = cuda.shared.array(REDUCE, float64)
    acc = 0.0
    for j in range(t, M, REDUCE):
        acc += x[j // L, c, j % L]
    part[t] = acc
    m = _block_sum(part, t) / M
    acc = 0.0
    for j in range(t, M, REDUCE):
        d = x[j // L, c, j % L] - m
        acc += d * d
    part[t] = acc
    v = _block_sum(part, t) / M
    if t == 0:
        mean[c] = m
        var[c] = v


def batch_norm2d_stats(x, mean, var, scratch):
    # scratch serves the CPU kernels' (N, C) path; a GPU block needs no copy.
    _batch_norm2d_stats_kernel[x.shape[1], REDUCE](x, mean, var)


@cuda_kernel
def _batch_norm2d_update_running_kernel(mean, var, momentum, unbias, running_mean, running_var):
    c = cuda.grid(1)
    if c < mean.size:
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean[c]
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * unbias * var[c]


def batch_norm2d_update_running(mean, var, momentum, unbias, running_mean, running_var):
    _batch_norm2d_update_running_kernel[(mean.size + THREADS - 1) // THREADS, THREADS](
        mean, var, momentum, unbias, running_mean, running_var)


@cuda_kernel
def _batch_norm2d_update_cumulative_kernel(mean, var, unbias, count, running_mean, running_var):
    # One block: every thread reads the count before the barrier, one thread bumps it after.
    t = cuda.threadIdx.x
    one = running_mean.dtype.type(1)
    factor = one / (count[0] + one)
    for c in range(t, mean.size, THREADS):
        running_mean[c] = (one - factor) * running_mean[c] + factor * mean[c]
        running_var[c] = (one - factor) * running_var[c] + factor * unbias * var[c]
    cuda.syncthreads()
    if t == 0:
        count[0] += one


def batch_norm2d_update_cumulative(mean, var, unbias, count, running_mean, running_var):
    _batch_norm2d_update_cumulative_kernel[1, THREADS](mean, var, unbias, count, running_mean, running_var)


@cuda_kernel
def _batch_norm2d_forward_kernel(x, mean, var, w, b, eps, relu, y):
    i = cuda.grid(1)
    if i >= x.size:
        return
    C, L = x.shape[1], x.shape[2]
    l = i % L
    c = (i // L) % C
    n = i // (L * C)
    k = x.dtype.type(1) / math.sqrt(var[c] + eps)
    affine = w.size > 0
    scale = k * w[c] if affine else k
    shift = b[c] if affine else x.dtype.type(0)
    v = (x[n, c, l] - mean[c]) * scale + shift
    y[n, c, l] = x.dtype.type(0) if relu and v <= x.dtype.type(0) else v


def batch_norm2d_forward(x, mean, var, w, b, eps, relu, y):
    _batch_norm2d_forward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, mean, var, w, b, eps, relu, y)


@cuda_kernel
def _batch_norm2d_backward_weight_kernel(x, gy, mean, var, eps, sums, gw, gb):
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    N, C, L = x.shape
    if c >= C:
        return
    M = N * L
    part = cuda.shared.array(REDUCE, float64)
    m = mean[c]
    sg = 0.0
    sgx = 0.0
    for j in range(t, M, REDUCE):
        g = gy[j // L, c, j % L]
        sg += g
        sgx += g * (x[j // L, c, j % L] - m)
    part[t] = sg
    sg = _block_sum(part, t)
    part[t] = sgx
    sgx = _block_sum(part, t) / math.sqrt(var[c] + eps)
    if t == 0:
        sums[0, c] = sg
        sums[1, c] = sgx
        if gw.size > 0:
            gw[c] += sgx
            gb[c] += sg


def batch_norm2d_backward_weight(x, gy, mean, var, eps, sums, gw, gb):
    _batch_norm2d_backward_weight_kernel[x.shape[1], REDUCE](x, gy, mean, var, eps, sums, gw, gb)


@cuda_kernel
def _batch_norm2d_backward_input_kernel(x, gy, mean, var, w, eps, sums, batch_stats, gx):
    i = cuda.grid(1)
    if i >= x.size:
        return
    N, C, L = x.shape
    l = i % L
    c = (i // L) % C
    n = i // (L * C)
    M = x.dtype.type(N * L)
    inv = x.dtype.type(1) / math.sqrt(var[c] + eps)
    k = inv * w[c] if w.size > 0 else inv
    if not batch_stats:  # x unread: see batch_norm2d_cpu.py
        gx[n, c, l] = k * gy[n, c, l]
        return
    shift = -k * sums[0, c] / M
    slope = -k * inv * sums[1, c] / M
    gx[n, c, l] = k * gy[n, c, l] + slope * (x[n, c, l] - mean[c]) + shift


def batch_norm2d_backward_input(x, gy, mean, var, w, eps, sums, batch_stats, gx):
    _batch_norm2d_backward_input_kernel[(x.size + THREADS - 1) // THREADS, THREADS](
        x, gy, mean, var, w, eps, sums, batch_stats, gx)
