"""dropout CPU kernels (flat arrays); dropout_cuda.py computes the very same mask.

The interface, the same in dropout_cuda.py: ``dropout_forward(x, s0, s1, threshold, scale, y)``
writes y = x * mask * scale for the mask of seeds (s0, s1) (uint64) and the keep threshold
(uint64, of 2**32); ``dropout_backward_input(gy, s0, s1, threshold, scale, gx)`` is the same map.
Arrays under ``PARALLEL_MIN`` elements are done in the calling thread (see ``_threads``).
"""

import numpy as np

from .._jit import cpu_inline, cpu_kernel, prange
from .._threads import PARALLEL_MIN

__all__ = ["dropout_forward", "dropout_backward_input"]


@cpu_inline
def _mix32(h):
    # Wellons' lowbias32, a bijection of 32-bit words. Kept in uint64 with the top half
    # cleared, so no product overflows (the CUDA simulator runs this as NumPy scalars, which
    # warn on overflow) and both devices get the same bits.
    m = np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x7FEB352D)) & m
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x846CA68B)) & m
    h ^= h >> np.uint64(16)
    return h


@cpu_inline
def _dropout_at(x, s0, s1, threshold, scale, y, i):
    zero = x.dtype.type(0)
    m = np.uint64(0xFFFFFFFF)
    # Two rounds over (index + s0) then s1; indices repeat their mask only every 2**32.
    h = _mix32(_mix32((np.uint64(i) + s0) & m) ^ s1)
    # x * 0, not 0: a dropped NaN or Inf stays NaN, as torch's x * mask * scale leaves it.
    y[i] = x[i] * (scale if h < threshold else zero)


@cpu_kernel
def dropout_forward(x, s0, s1, threshold, scale, y):
    if x.size < PARALLEL_MIN:
        for i in range(x.size):
            _dropout_at(x, s0, s1, threshold, scale, y, i)
    else:
        for i in prange(x.size):
            _dropout_at(x, s0, s1, threshold, scale, y, i)


# y = x * mask * scale is linear in x: its backward is the same map applied to gy.
dropout_backward_input = dropout_forward
