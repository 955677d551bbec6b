"""hardtanh CPU kernels (flat arrays; k = (min_val, max_val) in the data's dtype), relu6's too.

Forward clamps with NaN passing through (neither compare holds for NaN) and -0.0 kept, as
torch.clamp does; backward zeroes the gradient where the output sits on an edge, which is
where the input was at or beyond it, and lets it through where the output is NaN.
"""

from .._jit import cpu_kernel, prange

__all__ = ["hardtanh_forward", "hardtanh_backward"]


@cpu_kernel
def hardtanh_forward(x, k, y):
    lo, hi = k
    for i in prange(x.size):
        v = x[i]
        y[i] = lo if v < lo else (hi if v > hi else v)


@cpu_kernel
def hardtanh_backward(y, gy, k, gx):
    lo, hi = k
    zero = y.dtype.type(0)
    for i in prange(y.size):
        v = y[i]
        gx[i] = zero if (v <= lo or v >= hi) else gy[i]
