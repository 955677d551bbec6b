"""Loss CUDA kernels: per-row loss terms, then one gradient element per thread; the interface
is losses_cpu.py's."""

import math

from numba import cuda

from ._jit import cuda_kernel

__all__ = ["cross_entropy_forward_backward", "mse_forward_backward"]

THREADS = 256


def _blocks(n):
    return (n + THREADS - 1) // THREADS


@cuda_kernel
def _cross_entropy_rows_kernel(x, labels, rows, lse):
    n = cuda.grid(1)
    if n < x.shape[0]:
        m = x[n, 0]
        top = 0
        for k in range(1, x.shape[1]):
            if x[n, k] > m:
                m = x[n, k]
                top = k
        s = math.exp(x[n, 0] - m)
        for k in range(1, x.shape[1]):
            s += math.exp(x[n, k] - m)
        lse[n] = math.log(s) + m
        rows[0, n] = lse[n] - x[n, labels[n]]
        rows[1, n] = 1 if top == labels[n] else 0


@cuda_kernel
def _cross_entropy_backward_kernel(x, labels, lse, inv_n, gx):
    i = cuda.grid(1)
    if i < x.size:
        K = x.shape[1]
        n, k = i // K, i % K
        g = math.exp(x[n, k] - lse[n]) * inv_n
        if k == labels[n]:
            g -= inv_n
        gx[n, k] = g


def cross_entropy_forward_backward(x, labels, rows, lse, gx):
    # Two launches: the rows' log-sum-exp first, which every gradient element of a row reads.
    _cross_entropy_rows_kernel[_blocks(x.shape[0]), THREADS](x, labels, rows, lse)
    inv_n = x.dtype.type(1.0 / x.shape[0])  # typed like x, so float32 math stays float32
    _cross_entropy_backward_kernel[_blocks(x.size), THREADS](x, labels, lse, inv_n, gx)


@cuda_kernel
def _mse_rows_kernel(x, t, rows):
    n = cuda.grid(1)
    if n < x.shape[0]:
        e = x[n, 0] - t[n, 0]
        s = e * e
        for d in range(1, x.shape[1]):
            e = x[n, d] - t[n, d]
            s += e * e
        rows[n] = s


@cuda_kernel
def _mse_backward_kernel(x, t, scale, gx):
    i = cuda.grid(1)
    if i < x.size:
        D = x.shape[1]
        n, d = i // D, i % D
        gx[n, d] = (x[n, d] - t[n, d]) * scale


def mse_forward_backward(x, t, rows, gx):
    _mse_rows_kernel[_blocks(x.shape[0]), THREADS](x, t, rows)
    scale = x.dtype.type(2.0 / x.size)
    _mse_backward_kernel[_blocks(x.size), THREADS](x, t, scale, gx)
