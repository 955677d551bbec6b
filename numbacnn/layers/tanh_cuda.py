"""tanh CUDA kernels (flat arrays), each launcher right under its kernel."""

import math

from numba import cuda

from .._jit import cuda_kernel

__all__ = ["tanh_forward", "tanh_backward"]

THREADS = 256


@cuda_kernel
def _tanh_forward_kernel(x, y):
    i = cuda.grid(1)
    if i < x.size:
        y[i] = math.tanh(x[i])


def tanh_forward(x, y):
    _tanh_forward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, y)


@cuda_kernel
def _tanh_backward_kernel(y, gy, gx):
    i = cuda.grid(1)
    if i < y.size:
        gx[i] = gy[i] * (y.dtype.type(1) - y[i] * y[i])


def tanh_backward(y, gy, gx):
    _tanh_backward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](y, gy, gx)
