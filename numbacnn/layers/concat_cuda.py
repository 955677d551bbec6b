"""concat CUDA kernels: x is one input flat (N*M,), y the output as rows (N, L), M <= L."""

from numba import cuda

from .._jit import cuda_kernel

__all__ = ["concat_all", "concat_backward_input"]

THREADS = 256


@cuda_kernel
def _concat_forward_kernel(x, offset, y):
    i = cuda.grid(1)
    if i < x.size:
        M = x.size // y.shape[0]
        n = i // M
        y[n, offset + i - n * M] = x[i]


def _concat_forward(x, offset, y):
    _concat_forward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, offset, y)


def concat_all(xs, y):
    """y = the inputs xs joined along dimension 1: each input through _concat_forward."""
    N = y.shape[0]
    rows = y.reshape(N, y.size // N)
    offset = 0
    for x in xs:
        _concat_forward(x.reshape(x.size), offset, rows)
        offset += x.size // N


@cuda_kernel
def _concat_backward_input_kernel(gy, offset, gx):
    i = cuda.grid(1)
    if i < gx.size:
        M = gx.size // gy.shape[0]
        n = i // M
        gx[i] = gy[n, offset + i - n * M]


def concat_backward_input(gy, offset, gx):
    _concat_backward_input_kernel[(gx.size + THREADS - 1) // THREADS, THREADS](gy, offset, gx)
