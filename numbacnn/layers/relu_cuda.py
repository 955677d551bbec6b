"""relu CUDA kernels (flat arrays), each launcher right under its kernel."""

from numba import cuda

from .._jit import cuda_kernel

THREADS = 256


@cuda_kernel
def relu_forward_kernel(x, y):
    i = cuda.grid(1)
    if i < x.size:
        y[i] = x[i] if x[i] > 0 else 0


def relu_forward(x, y):
    relu_forward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, y)


@cuda_kernel
def relu_backward_kernel(y, gy, gx):
    i = cuda.grid(1)
    if i < y.size:
        gx[i] = gy[i] if y[i] > 0 else 0


def relu_backward(y, gy, gx):
    relu_backward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](y, gy, gx)
