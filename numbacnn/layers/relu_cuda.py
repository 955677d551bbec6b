"""relu CUDA kernels (flat arrays), each launcher right under its kernel; NaN as in
relu_cpu.py, and typed zeros so float32 stays float32."""

from numba import cuda

from .._jit import cuda_kernel

__all__ = ["relu_forward", "relu_backward"]

THREADS = 256


@cuda_kernel
def _relu_forward_kernel(x, y):
    i = cuda.grid(1)
    if i < x.size:
        zero = x.dtype.type(0)
        v = x[i]
        y[i] = zero if v <= zero else v


def relu_forward(x, y):
    _relu_forward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, y)


@cuda_kernel
def _relu_backward_kernel(y, gy, gx):
    i = cuda.grid(1)
    if i < y.size:
        zero = y.dtype.type(0)
        gx[i] = zero if y[i] <= zero else gy[i]


def relu_backward(y, gy, gx):
    _relu_backward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](y, gy, gx)
