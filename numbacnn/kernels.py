"""The kernel API for layer authors: the decorators ``numbacnn/_jit.py`` configures, and the
helpers kernels call.

A layer's kernels live in two twin modules beside it, ``<stem>_cpu.py`` and ``<stem>_cuda.py``,
which export the same names with the same signatures (listed in each module's ``__all__``);
the layer calls them through ``ctx.kernels`` and never imports either. Kernels are plain loops
writing into arrays they are given: no allocation, raising or Python objects inside.

CPU: ``cpu_kernel`` (a parallel Numba kernel, its outermost loop a ``prange``), ``cpu_serial``
(no thread pool, for small loops), ``cpu_inline`` (a helper inlined into other kernels);
``fastmath=REASSOC`` lets a sum be reordered into vector lanes (NaN and Inf still behave).
``gemm`` is a BLAS matrix product callable from CPU kernels (see ``numbacnn._blas``).

CUDA: ``cuda_kernel`` (one output element per thread, its launcher right under it),
``cuda_device`` (a device function), and ``cuda``, the ``numba.cuda`` module kernels use for
``cuda.grid(1)``, shared arrays and atomics. ``cuda`` and ``gemm`` load on first use, so
``import numbacnn.kernels`` imports no GPU stack and no BLAS, and changes no thread settings.
"""

from __future__ import annotations

from typing import Any

from ._jit import REASSOC, cpu_inline, cpu_kernel, cpu_serial, cuda_device, cuda_kernel, prange

__all__ = ["cpu_kernel", "cpu_serial", "cpu_inline", "cuda_kernel", "cuda_device", "prange", "REASSOC",
           "cuda", "gemm"]


def __getattr__(name: str) -> Any:
    if name == "cuda":
        from ._jit import _cuda

        return _cuda()
    if name == "gemm":
        from ._blas import gemm

        return gemm
    raise AttributeError(f"module 'numbacnn.kernels' has no attribute {name!r}")
