"""dropout CUDA kernels (flat arrays); the mask is bit for bit the one of dropout_cpu.py."""

import numpy as np
from numba import cuda

from .._jit import cuda_device, cuda_kernel

__all__ = ["dropout_forward", "dropout_backward_input"]

THREADS = 256


@cuda_device
def _mix32(h):
    # Wellons' lowbias32 in uint64 with the top half cleared: see dropout_cpu.py.
    m = np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x7FEB352D)) & m
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x846CA68B)) & m
    h ^= h >> np.uint64(16)
    return h


@cuda_kernel
def _dropout_forward_kernel(x, s0, s1, threshold, scale, y):
    i = cuda.grid(1)
    if i < x.size:
        m = np.uint64(0xFFFFFFFF)
        h = _mix32(_mix32((np.uint64(i) + s0) & m) ^ s1)
        # x * 0, not 0: a dropped NaN or Inf stays NaN (see dropout_cpu.py).
        y[i] = x[i] * (scale if h < threshold else x.dtype.type(0))


def dropout_forward(x, s0, s1, threshold, scale, y):
    _dropout_forward_kernel[(x.size + THREADS - 1) // THREADS, THREADS](x, s0, s1, threshold, scale, y)


# y = x * mask * scale is linear in x: its backward is the same map applied to gy.
dropout_backward_input = dropout_forward
