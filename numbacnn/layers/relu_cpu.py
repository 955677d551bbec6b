"""relu CPU kernels (flat arrays).

NaN behaves as in PyTorch: forward passes it through (``not (x <= 0)`` holds for NaN, where
``x > 0`` does not), and backward lets the gradient through where the output is NaN, as
torch's ``threshold_backward`` does. Both stay single selects that LLVM vectorises.
"""

from .._jit import cpu_kernel, prange

__all__ = ["relu_forward", "relu_backward"]


@cpu_kernel
def relu_forward(x, y):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        v = x[i]
        y[i] = zero if v <= zero else v


@cpu_kernel
def relu_backward(y, gy, gx):
    zero = y.dtype.type(0)
    for i in prange(y.size):
        gx[i] = zero if y[i] <= zero else gy[i]
