"""leaky_relu CPU kernels (flat arrays)."""

from .._jit import cpu_kernel, prange

__all__ = ["leaky_relu_forward", "leaky_relu_backward"]


@cpu_kernel
def leaky_relu_forward(x, slope, y):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        y[i] = x[i] if x[i] > zero else x[i] * slope


@cpu_kernel
def leaky_relu_backward(s, gy, slope, gx):
    # s is the output (slope >= 0) or the input: either is > 0 exactly where x > 0.
    zero = s.dtype.type(0)
    for i in prange(s.size):
        gx[i] = gy[i] if s[i] > zero else gy[i] * slope
