"""add CPU kernel (flat arrays). Arrays under ``PARALLEL_MIN`` elements are done in the calling
thread (see ``_threads``): the executor also sums branch gradients with it."""

from .._jit import cpu_kernel, prange
from .._threads import PARALLEL_MIN

__all__ = ["add_forward", "add_relu_forward"]


@cpu_kernel
def add_forward(a, b, y):
    # y may be a itself (summing a third input into the running total): elementwise, so safe.
    if y.size < PARALLEL_MIN:
        for i in range(y.size):
            y[i] = a[i] + b[i]
    else:
        for i in prange(y.size):
            y[i] = a[i] + b[i]


@cpu_kernel
def add_relu_forward(a, b, y):
    """y = relu(a + b), relu's rule (NaN kept, -0.0 to 0): inference's add + relu, fused
    (numbacnn._fold). y may be a."""
    zero = y.dtype.type(0)
    if y.size < PARALLEL_MIN:
        for i in range(y.size):
            v = a[i] + b[i]
            y[i] = zero if v <= zero else v
    else:
        for i in prange(y.size):
            v = a[i] + b[i]
            y[i] = zero if v <= zero else v
