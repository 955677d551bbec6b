"""global_avg_pool2d CPU kernels: x and gx as (N*C, H*W) planes, y and gy as (N*C,).

The interface, the same in global_avg_pool2d_cuda.py: ``global_avg_pool2d_forward(x, y)`` and
``global_avg_pool2d_backward_input(gy, gx)``, each writing all of its output.
"""

from .._jit import REASSOC, cpu_kernel, prange

__all__ = ["global_avg_pool2d_forward", "global_avg_pool2d_backward_input"]


@cpu_kernel(fastmath=REASSOC)  # the plane's sum runs in vector lanes; NaN and Inf still propagate
def global_avg_pool2d_forward(x, y):
    planes, L = x.shape
    size = x.dtype.type(L)
    for i in prange(planes):
        acc = x.dtype.type(0)
        for l in range(L):
            acc += x[i, l]
        y[i] = acc / size


@cpu_kernel
def global_avg_pool2d_backward_input(gy, gx):
    planes, L = gx.shape
    size = gx.dtype.type(L)
    for i in prange(planes):
        g = gy[i] / size
        for l in range(L):
            gx[i, l] = g
