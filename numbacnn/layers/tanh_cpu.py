"""tanh CPU kernels (flat arrays)."""

import math

from .._jit import cpu_kernel, prange

__all__ = ["tanh_forward", "tanh_backward"]


@cpu_kernel
def tanh_forward(x, y):
    for i in prange(x.size):
        y[i] = math.tanh(x[i])


@cpu_kernel
def tanh_backward(y, gy, gx):
    one = y.dtype.type(1)
    for i in prange(y.size):
        gx[i] = gy[i] * (one - y[i] * y[i])
