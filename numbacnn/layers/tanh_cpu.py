"""tanh CPU kernels (flat arrays). Arrays under ``PARALLEL_MIN`` elements are done in the
calling thread (see ``_threads``)."""

import math

from .._jit import cpu_inline, cpu_kernel, prange
from .._threads import PARALLEL_MIN

__all__ = ["tanh_forward", "tanh_backward"]


@cpu_inline
def _backward_at(y, gy, gx, i):
    one = y.dtype.type(1)
    gx[i] = gy[i] * (one - y[i] * y[i])


@cpu_kernel
def tanh_forward(x, y):
    if x.size < PARALLEL_MIN:
        for i in range(x.size):
            y[i] = math.tanh(x[i])
    else:
        for i in prange(x.size):
            y[i] = math.tanh(x[i])


@cpu_kernel
def tanh_backward(y, gy, gx):
    if y.size < PARALLEL_MIN:
        for i in range(y.size):
            _backward_at(y, gy, gx, i)
    else:
        for i in prange(y.size):
            _backward_at(y, gy, gx, i)
