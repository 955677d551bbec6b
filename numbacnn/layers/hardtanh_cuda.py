"""hardtanh CUDA kernels (flat arrays), each launcher right under its kernel; k and NaN as in
hardtanh_cpu.py, and a typed zero so float32 stays float32."""

from numba import cuda

from .._jit import cuda_kernel

__all__ = ["hardtanh_forward", "hardtanh_backward"]

THREADS = 256


@cuda_kernel
def _hardtanh_forward_kernel(x, k, y):
    i = cuda.grid(1)
    if i < x.size:
        lo, hi = k
        v = x[i]
        y[i] = lo if v < lo else (hi if v > hi else v)


def hardtanh_forward(x, k, y):
    _hardtanh_forward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, k, y)


@cuda_kernel
def _hardtanh_backward_kernel(y, gy, k, gx):
    i = cuda.grid(1)
    if i < y.size:
        lo, hi = k
        v = y[i]
        gx[i] = y.dtype.type(0) if (v <= lo or v >= hi) else gy[i]


def hardtanh_backward(y, gy, k, gx):
    _hardtanh_backward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](y, gy, k, gx)
