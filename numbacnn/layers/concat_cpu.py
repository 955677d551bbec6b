"""concat CPU kernels: x is one input flat (N*M,), y the output as rows (N, L), M <= L."""

from .._jit import cpu_kernel, prange

__all__ = ["concat_forward", "concat_backward_input"]


@cpu_kernel
def concat_forward(x, offset, y):
    M = x.size // y.shape[0]
    for i in prange(x.size):
        n = i // M
        y[n, offset + i - n * M] = x[i]


@cpu_kernel
def concat_backward_input(gy, offset, gx):
    M = gx.size // gy.shape[0]
    for i in prange(gx.size):
        n = i // M
        gx[i] = gy[n, offset + i - n * M]
