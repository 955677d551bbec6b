"""leaky_relu CUDA kernels (flat arrays), each launcher right under its kernel."""

from numba import cuda

from .._jit import cuda_kernel

__all__ = ["leaky_relu_forward", "leaky_relu_backward"]

THREADS = 256


@cuda_kernel
def _leaky_relu_forward_kernel(x, slope, y):
    i = cuda.grid(1)
    if i < x.size:
        y[i] = x[i] if x[i] > x.dtype.type(0) else x[i] * slope  # a typed 0: no float64 compare


def leaky_relu_forward(x, slope, y):
    _leaky_relu_forward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, slope, y)


@cuda_kernel
def _leaky_relu_backward_kernel(s, gy, slope, gx):
    # s is the output (slope >= 0) or the input: either is > 0 exactly where x > 0.
    i = cuda.grid(1)
    if i < s.size:
        gx[i] = gy[i] if s[i] > s.dtype.type(0) else gy[i] * slope


def leaky_relu_backward(s, gy, slope, gx):
    _leaky_relu_backward_kernel[(s.size + THREADS - 1) // THREADS, THREADS](s, gy, slope, gx)
