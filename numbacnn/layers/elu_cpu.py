"""elu CPU kernels (flat arrays; k = (alpha,) in the data's dtype).

Backward reads the input: x <= 0 gives gy * alpha * exp(x), in PyTorch's order of operations;
anything else (x > 0, or NaN) gives gy.
"""

import math

from .._jit import cpu_kernel, prange

__all__ = ["elu_forward", "elu_backward"]


@cpu_kernel
def elu_forward(x, k, y):
    (alpha,) = k
    zero = x.dtype.type(0)
    for i in prange(x.size):
        v = x[i]
        y[i] = math.expm1(v) * alpha if v <= zero else v


@cpu_kernel
def elu_backward(x, gy, k, gx):
    (alpha,) = k
    zero = x.dtype.type(0)
    for i in prange(x.size):
        v = x[i]
        gx[i] = gy[i] * alpha * math.exp(v) if v <= zero else gy[i]
