"""upsample's source-index rule, shared by the CPU kernels and their CUDA twins.

A ``jitable`` helper (see numbacnn/_jit.py): written once and compiled for both targets, so
the two devices read the same source pixels with the same weights, typed alike.
"""

import math

from numba import float32

from .._jit import jitable

__all__ = ["source"]


@jitable
def source(a, o, size, out, scale, mode):
    """Output index o's source indices i0 <= i1 <= i0 + 1 along one axis and their weights,
    typed like ``a`` (PyTorch's rule; see upsample.py). i0 never decreases as o grows."""
    T = a.dtype.type
    one, zero = T(1), T(0)
    if out == size:  # copied: no neighbour is read, so an Inf there cannot leak in as 0 * Inf
        return o, o, one, zero
    if mode == 0:
        if out == 2 * size:
            return o >> 1, o >> 1, one, zero
        i = min(int(math.floor(float32(o) * float32(scale))), size - 1)
        return i, i, one, zero
    # Each product passes through max(., 0) (a no-op: scale >= 0) before anything is added to
    # it, so that ptxas cannot fuse the two into one FMA: rounded once instead of twice, the
    # GPU's source index came out one lower than the CPU's where the exact value is an integer
    # (size 2 to 14, bilinear: 10.5 / 7 - 0.5; seen on an H200).
    if mode == 2:
        src = max(scale * T(o), zero)
    else:
        src = max(max(scale * (T(o) + T(0.5)), zero) - T(0.5), zero)
    i0 = min(int(math.floor(src)), size - 1)
    lam = min(max(src - T(i0), zero), one)
    return i0, min(i0 + 1, size - 1), one - lam, lam
