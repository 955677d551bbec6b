"""sigmoid CPU kernels (flat arrays)."""

import math

from .._jit import cpu_kernel, prange

__all__ = ["sigmoid_forward", "sigmoid_backward"]


@cpu_kernel
def sigmoid_forward(x, y):
    one, zero = x.dtype.type(1), x.dtype.type(0)
    for i in prange(x.size):
        # exp of a non-positive number only: never overflows, and 1 - y keeps its precision.
        if x[i] >= zero:
            y[i] = one / (one + math.exp(-x[i]))
        else:
            e = math.exp(x[i])
            y[i] = e / (one + e)


@cpu_kernel
def sigmoid_backward(y, gy, gx):
    one = y.dtype.type(1)
    for i in prange(y.size):
        gx[i] = gy[i] * y[i] * (one - y[i])
