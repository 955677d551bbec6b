"""What the CUDA backend needs of kernels itself; the twin of ``_device_cpu.py``.

``fill(a, value)``: every element of the contiguous device array ``a`` (any shape) set to
``value``, cast to ``a``'s dtype; no host copy.
"""

from __future__ import annotations

from typing import Any

from numba import cuda

from ._jit import cuda_kernel

__all__ = ["fill"]

THREADS = 256


@cuda_kernel
def _fill_kernel(a, value):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = value


def fill(a: Any, value: float) -> None:
    flat = a.reshape(a.size)
    if flat.size:
        _fill_kernel[(flat.size + THREADS - 1) // THREADS, THREADS](flat, flat.dtype.type(value))
