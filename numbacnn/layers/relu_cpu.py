"""relu CPU kernels (flat arrays).

NaN behaves as in PyTorch: forward passes it through (``not (x <= 0)`` holds for NaN, where
``x > 0`` does not), and backward lets the gradient through where the output is NaN, as
torch's ``threshold_backward`` does. Both stay single selects that LLVM vectorises.
Arrays under ``PARALLEL_MIN`` elements are done in the calling thread (see ``_threads``).
"""

from .._jit import cpu_inline, cpu_kernel, prange
from .._threads import PARALLEL_MIN

__all__ = ["relu_forward", "relu_backward"]


@cpu_inline
def _forward_at(x, y, i):
    zero = x.dtype.type(0)
    v = x[i]
    y[i] = zero if v <= zero else v


@cpu_inline
def _backward_at(y, gy, gx, i):
    zero = y.dtype.type(0)
    gx[i] = zero if y[i] <= zero else gy[i]


@cpu_kernel
def relu_forward(x, y):
    if x.size < PARALLEL_MIN:
        for i in range(x.size):
            _forward_at(x, y, i)
    else:
        for i in prange(x.size):
            _forward_at(x, y, i)


@cpu_kernel
def relu_backward(y, gy, gx):
    if y.size < PARALLEL_MIN:
        for i in range(y.size):
            _backward_at(y, gy, gx, i)
    else:
        for i in prange(y.size):
            _backward_at(y, gy, gx, i)
