"""gelu CPU kernels (flat arrays; k = (tanh approximation?,)).

PyTorch's formulas, operation for operation: exact y = x * 0.5 * (1 + erf(x / sqrt(2))) and
gx = gy * (cdf + x * pdf); tanh y = 0.5 * x * (1 + tanh(inner)) and its derivative as
PyTorch's GeluBackward writes it. Constants are cast to the data's dtype.
"""

import math

from .._jit import cpu_kernel, prange
from .gelu import ALPHA, BETA_EXACT, BETA_TANH, KAPPA

__all__ = ["gelu_forward", "gelu_backward"]


@cpu_kernel
def gelu_forward(x, k, y):
    (approx,) = k
    t = x.dtype.type
    half, one, alpha, beta, kappa = t(0.5), t(1), t(ALPHA), t(BETA_TANH), t(KAPPA)
    if approx:
        for i in prange(x.size):
            v = x[i]
            inner = beta * (v + kappa * (v * v * v))
            y[i] = half * v * (one + math.tanh(inner))
    else:
        for i in prange(x.size):
            v = x[i]
            y[i] = v * half * (one + math.erf(v * alpha))


@cpu_kernel
def gelu_backward(x, gy, k, gx):
    (approx,) = k
    t = x.dtype.type
    half, one, three, alpha, kappa = t(0.5), t(1), t(3), t(ALPHA), t(KAPPA)
    if approx:
        beta = t(BETA_TANH)
        for i in prange(x.size):
            v = x[i]
            v2 = v * v
            tanh_inner = math.tanh(beta * (v + kappa * (v2 * v)))
            left = half * v
            right = one + tanh_inner
            right_derivative = left * (one - tanh_inner * tanh_inner) * (beta * (one + three * kappa * v2))
            gx[i] = gy[i] * (half * right + right_derivative)
    else:
        beta = t(BETA_EXACT)
        for i in prange(x.size):
            v = x[i]
            cdf = half * (one + math.erf(v * alpha))
            pdf = math.exp(-half * v * v) * beta
            gx[i] = gy[i] * (cdf + v * pdf)
