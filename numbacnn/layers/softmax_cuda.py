"""softmax and log_softmax CUDA kernels: one thread per position (o, i) of the (outer, K, inner)
view, walking its K values (neighbouring threads read neighbouring addresses when inner > 1);
each launcher right under its kernel. The interface and NaN rules are softmax_cpu.py's, and
every constant is typed so float32 stays float32.
"""

import math

from numba import cuda

from .._jit import cuda_device, cuda_kernel

__all__ = ["softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward"]

THREADS = 256


def _blocks(x):
    """Blocks of THREADS covering the outer * inner positions of x (outer, K, inner)."""
    return (x.shape[0] * x.shape[2] + THREADS - 1) // THREADS


@cuda_device
def _max(x, o, i):
    m = x[o, 0, i]
    for k in range(1, x.shape[1]):
        v = x[o, k, i]
        if v > m or v != v:
            m = v
    return m


@cuda_kernel
def _softmax_forward_kernel(x, stats, y):
    p = cuda.grid(1)
    outer, K, inner = x.shape
    if p >= outer * inner:
        return
    o, i = p // inner, p % inner
    m = _max(x, o, i)
    s = x.dtype.type(0)
    for k in range(K):
        e = math.exp(x[o, k, i] - m)
        y[o, k, i] = e
        s += e
    r = x.dtype.type(1) / s
    for k in range(K):
        y[o, k, i] *= r
    stats[0, o, i] = m
    stats[1, o, i] = r


def softmax_forward(x, stats, y):
    _softmax_forward_kernel[_blocks(x), THREADS](x, stats, y)


@cuda_kernel
def _softmax_backward_kernel(y, gy, sums, gx):
    p = cuda.grid(1)
    outer, K, inner = y.shape
    if p >= outer * inner:
        return
    o, i = p // inner, p % inner
    d = y.dtype.type(0)
    for k in range(K):
        d += gy[o, k, i] * y[o, k, i]
    for k in range(K):
        gx[o, k, i] = y[o, k, i] * (gy[o, k, i] - d)
    sums[o, i] = d


def softmax_backward(y, gy, sums, gx):
    _softmax_backward_kernel[_blocks(y), THREADS](y, gy, sums, gx)


@cuda_kernel
def _log_softmax_forward_kernel(x, stats, y):
    p = cuda.grid(1)
    outer, K, inner = x.shape
    if p >= outer * inner:
        return
    o, i = p // inner, p % inner
    m = _max(x, o, i)
    s = x.dtype.type(0)
    for k in range(K):
        s += math.exp(x[o, k, i] - m)
    lse = m + math.log(s)
    for k in range(K):
        y[o, k, i] = x[o, k, i] - lse
    stats[0, o, i] = m
    stats[1, o, i] = lse


def log_softmax_forward(x, stats, y):
    _log_softmax_forward_kernel[_blocks(x), THREADS](x, stats, y)


@cuda_kernel
def _log_softmax_backward_kernel(y, gy, sums, gx):
    p = cuda.grid(1)
    outer, K, inner = y.shape
    if p >= outer * inner:
        return
    o, i = p // inner, p % inner
    s = y.dtype.type(0)
    for k in range(K):
        s += gy[o, k, i]
    for k in range(K):
        gx[o, k, i] = gy[o, k, i] - math.exp(y[o, k, i]) * s
    sums[o, i] = s


def log_softmax_backward(y, gy, sums, gx):
    _log_softmax_backward_kernel[_blocks(y), THREADS](y, gy, sums, gx)
