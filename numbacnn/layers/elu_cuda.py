"""elu CUDA kernels (flat arrays), each launcher right under its kernel; k and the order of
operations as in elu_cpu.py, typed zeros so float32 stays float32."""

import math

from numba import cuda

from .._jit import cuda_kernel

__all__ = ["elu_forward", "elu_backward"]

THREADS = 256


@cuda_kernel
def _elu_forward_kernel(x, k, y):
    i = cuda.grid(1)
    if i < x.size:
        (alpha,) = k
        v = x[i]
        y[i] = math.expm1(v) * alpha if v <= x.dtype.type(0) else v


def elu_forward(x, k, y):
    _elu_forward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, k, y)


@cuda_kernel
def _elu_backward_kernel(x, gy, k, gx):
    i = cuda.grid(1)
    if i < x.size:
        (alpha,) = k
        v = x[i]
        gx[i] = gy[i] * alpha * math.exp(v) if v <= x.dtype.type(0) else gy[i]


def elu_backward(x, gy, k, gx):
    _elu_backward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, gy, k, gx)
