"""sigmoid CUDA kernels (flat arrays), each launcher right under its kernel."""

import math

from numba import cuda

from .._jit import cuda_kernel

__all__ = ["sigmoid_forward", "sigmoid_backward"]

THREADS = 256


@cuda_kernel
def _sigmoid_forward_kernel(x, y):
    i = cuda.grid(1)
    if i < x.size:
        one = x.dtype.type(1)
        # exp of a non-positive number only: never overflows, and 1 - y keeps its precision.
        if x[i] >= x.dtype.type(0):
            y[i] = one / (one + math.exp(-x[i]))
        else:
            e = math.exp(x[i])
            y[i] = e / (one + e)


def sigmoid_forward(x, y):
    _sigmoid_forward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, y)


@cuda_kernel
def _sigmoid_backward_kernel(y, gy, gx):
    i = cuda.grid(1)
    if i < y.size:
        gx[i] = gy[i] * y[i] * (y.dtype.type(1) - y[i])


def sigmoid_backward(y, gy, gx):
    _sigmoid_backward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](y, gy, gx)
