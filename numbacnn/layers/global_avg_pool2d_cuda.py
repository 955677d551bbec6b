"""global_avg_pool2d CUDA kernels: x and gx as (N*C, H*W) planes, y and gy as (N*C,);
one output element per thread; the interface is global_avg_pool2d_cpu.py's."""

from numba import cuda

from .._jit import cuda_kernel

__all__ = ["global_avg_pool2d_forward", "global_avg_pool2d_backward_input"]

THREADS = 256


@cuda_kernel
def _global_avg_pool2d_forward_kernel(x, y):
    i = cuda.grid(1)
    if i >= y.size:
        return
    L = x.shape[1]
    acc = x.dtype.type(0)
    for l in range(L):
        acc += x[i, l]
    y[i] = acc / x.dtype.type(L)


def global_avg_pool2d_forward(x, y):
    _global_avg_pool2d_forward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](x, y)


@cuda_kernel
def _global_avg_pool2d_backward_input_kernel(gy, gx):
    i = cuda.grid(1)
    if i >= gx.size:
        return
    L = gx.shape[1]
    plane = i // L
    gx[plane, i % L] = gy[plane] / gx.dtype.type(L)


def global_avg_pool2d_backward_input(gy, gx):
    _global_avg_pool2d_backward_input_kernel[(gx.size + THREADS - 1) // THREADS, THREADS](gy, gx)
