"""add CUDA kernel (flat arrays), its launcher right under it."""

from numba import cuda

from .._jit import cuda_kernel

__all__ = ["add_forward", "add_relu_forward"]

THREADS = 256


@cuda_kernel
def _add_forward_kernel(a, b, y):
    # y may be a itself (summing a third input into the running total): elementwise, so safe.
    i = cuda.grid(1)
    if i < y.size:
        y[i] = a[i] + b[i]


def add_forward(a, b, y):
    if y.size:  # a grid of no blocks is a launch error; the executor sums empty gradients too
        _add_forward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](a, b, y)


@cuda_kernel
def _add_relu_forward_kernel(a, b, y):
    i = cuda.grid(1)
    if i < y.size:
        v = a[i] + b[i]
        y[i] = y.dtype.type(0) if v <= y.dtype.type(0) else v


def add_relu_forward(a, b, y):
    """y = relu(a + b), relu's rule (NaN kept): inference's fused add + relu (CPU only in the
    executor; the twin for the kernel interface)."""
    if y.size:
        _add_relu_forward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](a, b, y)
