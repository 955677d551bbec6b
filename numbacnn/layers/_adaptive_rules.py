"""The bin rule of both adaptive poolings, shared by their CPU kernels and CUDA twins.

``jitable`` helpers (see numbacnn/_jit.py): written once and compiled for both targets, so
adaptive_avg_pool2d and adaptive_max_pool2d bin alike on either device.
"""

from .._jit import jitable

__all__ = ["bin_span", "bins_over"]


@jitable
def bin_span(i, size, out):
    """Output i's inputs [lo, hi) along an axis: floor(i * size / out) .. ceil((i + 1) * size / out)."""
    return (i * size) // out, ((i + 1) * size + out - 1) // out


@jitable
def bins_over(h, size, out):
    """The outputs [lo, hi] whose bins hold input h (the inverse of bin_span)."""
    return (h * out) // size, ((h + 1) * out - 1) // size
