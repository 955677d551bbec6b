"""swish CUDA kernels (flat arrays), each launcher right under its kernel; the interface is
swish_cpu.py's."""

import math

from numbacnn.kernels import cuda, cuda_kernel

__all__ = ["swish_forward", "swish_backward_input", "swish_backward_weight"]

THREADS = 256
MAX_BLOCKS = 64  # of the beta-gradient reduction: enough threads to fill a GPU, few atomics


def _blocks(n):
    return (n + THREADS - 1) // THREADS


@cuda_kernel
def _swish_forward_kernel(x, beta, y):
    i = cuda.grid(1)
    if i < x.size:
        one = x.dtype.type(1)
        y[i] = x[i] / (one + math.exp(-beta[0] * x[i]))


def swish_forward(x, beta, y):
    _swish_forward_kernel[_blocks(x.size), THREADS](x, beta, y)


@cuda_kernel
def _swish_backward_input_kernel(x, beta, gy, gx):
    i = cuda.grid(1)
    if i < x.size:
        one = x.dtype.type(1)
        b = beta[0]
        s = one / (one + math.exp(-b * x[i]))
        gx[i] = gy[i] * s * (one + b * x[i] * (one - s))


def swish_backward_input(x, beta, gy, gx):
    _swish_backward_input_kernel[_blocks(x.size), THREADS](x, beta, gy, gx)


@cuda_kernel
def _swish_backward_weight_kernel(x, beta, gy, gbeta):
    # Each thread sums a strided slice, then adds its partial sum atomically: one atomic per
    # thread instead of one per element.
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    if t < x.size:
        one = x.dtype.type(1)
        b = beta[0]
        acc = x.dtype.type(0)
        for i in range(t, x.size, stride):
            s = one / (one + math.exp(-b * x[i]))
            acc += gy[i] * x[i] * x[i] * s * (one - s)
        cuda.atomic.add(gbeta, 0, acc)


def swish_backward_weight(x, beta, gy, gbeta):
    _swish_backward_weight_kernel[min(_blocks(x.size), MAX_BLOCKS), THREADS](x, beta, gy, gbeta)
