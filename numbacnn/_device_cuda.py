"""CUDA kernels the backend needs itself: filling a device array without a host copy."""

from __future__ import annotations

from typing import Any

from numba import cuda

from ._jit import cuda_kernel

THREADS = 256


@cuda_kernel
def fill_kernel(a, value):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = value


def fill(a: Any, value: float) -> None:
    """Set every element of a contiguous device array to ``value``."""
    flat = a.reshape(a.size)
    if flat.size:
        fill_kernel[(flat.size + THREADS - 1) // THREADS, THREADS](flat, flat.dtype.type(value))
