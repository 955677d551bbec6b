"""sigmoid CPU kernels (flat arrays). Arrays under ``PARALLEL_MIN`` elements are done in the
calling thread (see ``_threads``)."""

import math

from .._jit import cpu_inline, cpu_kernel, prange
from .._threads import PARALLEL_MIN

__all__ = ["sigmoid_forward", "sigmoid_backward"]


@cpu_inline
def _forward_at(x, y, i):
    one, zero = x.dtype.type(1), x.dtype.type(0)
    # exp of a non-positive number only: never overflows, and 1 - y keeps its precision.
    if x[i] >= zero:
        y[i] = one / (one + math.exp(-x[i]))
    else:
        e = math.exp(x[i])
        y[i] = e / (one + e)


@cpu_inline
def _backward_at(y, gy, gx, i):
    one = y.dtype.type(1)
    gx[i] = gy[i] * y[i] * (one - y[i])


@cpu_kernel
def sigmoid_forward(x, y):
    if x.size < PARALLEL_MIN:
        for i in range(x.size):
            _forward_at(x, y, i)
    else:
        for i in prange(x.size):
            _forward_at(x, y, i)


@cpu_kernel
def sigmoid_backward(y, gy, gx):
    if y.size < PARALLEL_MIN:
        for i in range(y.size):
            _backward_at(y, gy, gx, i)
    else:
        for i in prange(y.size):
            _backward_at(y, gy, gx, i)
