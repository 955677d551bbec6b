"""swish CPU kernels (flat arrays; beta is the (1,) parameter array).

The interface, the same in swish_cuda.py: ``swish_forward(x, beta, y)``,
``swish_backward_input(x, beta, gy, gx)`` (gx written) and
``swish_backward_weight(x, beta, gy, gbeta)`` (the beta gradient added into gbeta).
"""

import numpy as np

from numbacnn.kernels import cpu_kernel, prange

__all__ = ["swish_forward", "swish_backward_input", "swish_backward_weight"]


@cpu_kernel
def swish_forward(x, beta, y):
    one = x.dtype.type(1)
    b = beta[0]
    for i in prange(x.size):
        y[i] = x[i] / (one + np.exp(-b * x[i]))


@cpu_kernel
def swish_backward_input(x, beta, gy, gx):
    one = x.dtype.type(1)
    b = beta[0]
    for i in prange(x.size):
        s = one / (one + np.exp(-b * x[i]))
        gx[i] = gy[i] * s * (one + b * x[i] * (one - s))


@cpu_kernel
def swish_backward_weight(x, beta, gy, gbeta):
    one = x.dtype.type(1)
    b = beta[0]
    # A prange scalar reduction: Numba gives every thread its own partial sum, no race.
    acc = x.dtype.type(0)
    for i in prange(x.size):
        s = one / (one + np.exp(-b * x[i]))
        acc += gy[i] * x[i] * x[i] * s * (one - s)
    gbeta[0] += acc
