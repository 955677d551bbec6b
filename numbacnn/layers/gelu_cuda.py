"""gelu CUDA kernels (flat arrays), each launcher right under its kernel; k, formulas and
constants as in gelu_cpu.py, typed so float32 stays float32."""

import math

from numba import cuda

from .._jit import cuda_kernel
from .gelu import ALPHA, BETA_EXACT, BETA_TANH, KAPPA

__all__ = ["gelu_forward", "gelu_backward"]

THREADS = 256


@cuda_kernel
def _gelu_forward_kernel(x, k, y):
    i = cuda.grid(1)
    if i < x.size:
        (approx,) = k
        t = x.dtype.type
        half, one = t(0.5), t(1)
        v = x[i]
        if approx:
            inner = t(BETA_TANH) * (v + t(KAPPA) * (v * v * v))
            y[i] = half * v * (one + math.tanh(inner))
        else:
            y[i] = v * half * (one + math.erf(v * t(ALPHA)))


def gelu_forward(x, k, y):
    _gelu_forward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, k, y)


@cuda_kernel
def _gelu_backward_kernel(x, gy, k, gx):
    i = cuda.grid(1)
    if i < x.size:
        (approx,) = k
        t = x.dtype.type
        half, one = t(0.5), t(1)
        v = x[i]
        if approx:
            beta, v2 = t(BETA_TANH), v * v
            tanh_inner = math.tanh(beta * (v + t(KAPPA) * (v2 * v)))
            left = half * v
            right = one + tanh_inner
            right_derivative = left * (one - tanh_inner * tanh_inner) * (beta * (one + t(3) * t(KAPPA) * v2))
            gx[i] = gy[i] * (half * right + right_derivative)
        else:
            cdf = half * (one + math.erf(v * t(ALPHA)))
            pdf = math.exp(-half * v * v) * t(BETA_EXACT)
            gx[i] = gy[i] * (cdf + v * pdf)


def gelu_backward(x, gy, k, gx):
    _gelu_backward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, gy, k, gx)
