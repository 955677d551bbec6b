"""The one place that configures Numba decorators, for CPU and CUDA kernels.

Every kernel module imports its decorator from here, so the flags below are the whole story:
caching is on (``NUMBACNN_CACHE=0`` turns it off), fastmath is off unless a kernel opts in,
and nothing here touches the thread count. A kernel that opts in names LLVM's flags, e.g.
``REASSOC`` (reassociation only: a float64 sum may be vectorised, NaN and Inf still behave).
``numba.cuda`` is imported only when the first CUDA kernel is defined, so CPU-only use never
loads a GPU stack. Every function decorated here is marked for ``_kernel_cache``, whose cache
stamp covers the files the kernel imports from as well as its own (a helper edited in another
file invalidates the kernels that inline it), and a parallel kernel's ``prange`` bodies are
optimized once, inside the kernel, not again in each library Numba links them through
(``_parfor_link``; ``NUMBACNN_LINK_ONCE=0`` turns that off). numbacnn's own CPU functions compile
without Numba's C-callable wrapper (``no_cfunc_wrapper``): none may be chosen between in jitted
code (``f = a if c else b``), which makes a first-class function value (the test suite turns
Numba's warning for one into an error).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

import numba
from numba import prange
from numba.core import caching

from . import _parfor_link
from ._kernel_cache import install, mark_kernel

__all__ = ["cpu_kernel", "cpu_serial", "cpu_inline", "cpu_call", "cpu_cfunc", "cpu_intrinsic", "cuda_kernel",
           "cuda_device", "jitable", "prange", "CACHE", "REASSOC", "CONTRACT", "LINKED_HELPER"]

CACHE: bool = os.environ.get("NUMBACNN_CACHE", "1") not in ("0", "false", "no")

# fastmath for reductions: lets LLVM reorder a sum into vector lanes; no nnan/ninf assumptions.
REASSOC = frozenset({"reassoc"})
# fastmath for products: a * b + c may become one fused multiply-add (as BLAS computes it).
CONTRACT = frozenset({"contract"})
FastMath = bool | frozenset


install(caching.CacheImpl)
_parfor_link.install()


def _own(f: Callable) -> bool:
    # numbacnn's own functions, not a plugin's (numbacnn_swish is a package of its own).
    return getattr(f, "__module__", "").split(".")[0] == "numbacnn"


def _decorate(factory: Callable[..., Any], fn: Callable | None, **flags: Any) -> Any:
    # Marked before Numba sees the function: its cache locator is chosen at decoration.
    def decorate(f: Callable) -> Any:
        options = flags
        if factory is numba.njit and _own(f):
            # No C-callable wrapper: Numba lowers one for every function, for its use as a
            # first-class function value (jitted code choosing between two functions), which
            # no numbacnn function is; a plugin's keep theirs, as an abort is what a missing
            # one gives. About 4% of an empty-cache numbacnn train (README, Development notes).
            options = {**flags, "no_cfunc_wrapper": True}
        return factory(**options)(mark_kernel(f))

    return decorate if fn is None else decorate(fn)


def _flags(fastmath: FastMath) -> bool | set:
    return set(fastmath) if isinstance(fastmath, frozenset) else fastmath


def cpu_kernel(fn: Callable | None = None, *, fastmath: FastMath = False) -> Any:
    """A parallel CPU kernel: ``njit(parallel=True)``; its outermost loop is a ``prange``."""
    return _decorate(numba.njit, fn, parallel=True, cache=CACHE, fastmath=_flags(fastmath), nogil=True)


def cpu_serial(fn: Callable | None = None, *, fastmath: FastMath = False) -> Any:
    """A serial CPU kernel, for loops too small to be worth a thread pool."""
    return _decorate(numba.njit, fn, parallel=False, cache=CACHE, fastmath=_flags(fastmath), nogil=True)


def cpu_inline(fn: Callable | None = None, *, fastmath: FastMath = False) -> Any:
    """A helper called from other CPU kernels (inlined by LLVM, never called from Python)."""
    return _decorate(numba.njit, fn, cache=CACHE, fastmath=_flags(fastmath), inline="always")


#: Set on a ``cpu_call`` helper's Python function: not a kernel of its own (warm-up counts skip it).
LINKED_HELPER = "_numbacnn_linked_helper"


def cpu_call(fn: Callable | None = None, *, fastmath: FastMath = False) -> Any:
    """A helper called from CPU kernels, compiled once per argument types and linked into each
    kernel that calls it, where LLVM inlines it: typed once, where ``cpu_inline``'s helpers are
    copied into every call site at Numba's IR level and typed there again (and once more in a
    ``prange`` body's own compile). For the tuple-heavy transforms and small wrappers that
    kernels call many times over. It is compiled under its own flags, not its caller's: a
    caller's fastmath does not reach it (an IR-inlined helper took the kernel's). Its library
    is linked only (``_parfor_link``) and nothing of it is cached on its own: its code lives in
    its kernels' cache entries. Never called from Python. Pass it no literals: each literal
    value is a type, and a compile, of its own."""

    def decorate(f: Callable) -> Any:
        setattr(f, LINKED_HELPER, True)
        return _decorate(numba.njit, f, cache=False, fastmath=_flags(fastmath), nogil=True)

    return decorate if fn is None else decorate(fn)


def cpu_cfunc(signature: Any) -> Any:
    """A C-callable CPU function of a fixed signature (its address can stand in for a C
    library's function)."""
    return _decorate(numba.cfunc, None, sig=signature, cache=CACHE, nopython=True)


def cpu_intrinsic(fn: Callable) -> Any:
    """A function written as LLVM IR, for what Python-level Numba code cannot say (stack
    memory). It has no flags to configure: it is inlined into whatever kernel calls it."""
    from numba.extending import intrinsic

    return intrinsic(fn)


def _cuda():
    from numba import cuda  # lazy: only CUDA kernel modules reach this

    if _cuda_cache():
        from numba.cuda.core import caching as cuda_caching

        install(cuda_caching.CacheImpl)
    return cuda


def _cuda_cache() -> bool:
    # The simulator runs kernels as Python; there is nothing to cache.
    return CACHE and os.environ.get("NUMBA_ENABLE_CUDASIM", "0") != "1"


#: ``launch``: while a thread captures a CUDA graph (``_cuda_graph``), where its launches go.
ROUTE = threading.local()


class CudaKernel:
    """A kernel as ``cuda_kernel`` makes it: ``kernel[grid, block](*args)`` launches Numba's
    kernel, unless the calling thread is capturing a CUDA graph (``_cuda_graph.capture``),
    whose stream then takes the launch, so launchers need not pass streams around. Anything
    else (``py_func``, ``overloads``, ``stats``) is the dispatcher's."""

    __slots__ = ("dispatcher",)

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher

    def __getitem__(self, config: Any) -> Any:
        route = getattr(ROUTE, "launch", None)
        return self.dispatcher[config] if route is None else route(self.dispatcher, config)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dispatcher, name)

    def __repr__(self) -> str:
        return f"CudaKernel({self.dispatcher!r})"


def cuda_kernel(fn: Callable | None = None, *, fastmath: bool = False) -> Any:
    """A CUDA kernel: one output element per thread, launched by the function below it."""
    flags: dict[str, Any] = {"cache": _cuda_cache()}
    if fastmath:
        flags["fastmath"] = True
    decorate = _decorate(_cuda().jit, None, **flags)
    return CudaKernel(decorate(fn)) if fn is not None else lambda f: CudaKernel(decorate(f))


def cuda_device(fn: Callable | None = None) -> Any:
    """A CUDA device function, callable from CUDA kernels only."""
    return _decorate(_cuda().jit, fn, device=True, cache=_cuda_cache())


def jitable(fn: Callable) -> Any:
    """A plain helper that both targets compile: callable from CPU kernels and from CUDA
    kernels and device functions alike (``numba.extending.register_jitable``), so a rule that
    a CPU kernel and its CUDA twin share is written once. A CUDA kernel cannot call an ``njit``
    dispatcher (``cpu_inline``), and a ``cuda_device`` function is not callable on the CPU.
    It has no flags and no cache of its own: it is compiled into each kernel that calls it,
    under that kernel's flags (and the kernel's cache stamp covers the helper's file). Under
    the CUDA simulator it runs as the plain Python function it is."""
    from numba.extending import register_jitable

    return register_jitable(fn)
