"""relu CPU kernels (flat arrays)."""

from .._jit import cpu_kernel, prange


@cpu_kernel
def relu_forward(x, y):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        y[i] = x[i] if x[i] > zero else zero


@cpu_kernel
def relu_backward(y, gy, gx):
    zero = y.dtype.type(0)
    for i in prange(y.size):
        gx[i] = gy[i] if y[i] > zero else zero
