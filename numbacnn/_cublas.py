"""cuBLAS's matrix product for the CUDA kernels (on by default on a GPU), called through ctypes.

``gemm(a, b, c, trans_a, trans_b, beta)``: ``c = op(a) @ op(b) + beta * c`` on 2-D C-contiguous
numba device arrays (row slices of one included) or ``Rows`` of any C-contiguous array, float32
(SGEMM) or float64 (DGEMM), with ``op(m)`` the transpose where asked. cuBLAS is column-major:
a row-major (M, N) array is its (N, M) transpose there, so ``c = op(a) op(b)`` is asked as
``c^T = op(b)^T op(a)^T`` (``_column_major``). The product runs on the stream the calling thread's launches go to (a
CUDA graph's while one is captured, ``_jit.ROUTE``; else the default stream).

Why: on an H200 cuBLAS's SGEMM ran a 3x3 convolution's product (32768 x 64 x 576) in 59 us, 41
TFLOP/s, where the implicit-GEMM kernels reach 1.2-2.0 TFLOP/s (README, GPU). The library is
found by ``cuda.pathfinder`` (the ``nvidia-cublas`` wheels or a CUDA toolkit) and called with
ctypes: CuPy's bindings, used first, refuse every call while a stream is being captured
("calling cuBLAS API during stream capture is currently unsupported"), which kept every model
with a convolution out of CUDA graphs on an H200. Each thread has its own handle with its own
workspace (cublasSetWorkspace), so a captured product never allocates. Under Numba's simulator
``gemm`` computes the same column-major call with NumPy on the simulated arrays, so the
argument mapping and every kernel around it are tested without a GPU.
"""

from __future__ import annotations

import ctypes
import functools
import threading
import warnings
from typing import Any, NamedTuple

import numpy as np

from . import _jit

__all__ = ["ENV", "enabled", "unavailable_reason", "usable", "gemm", "Rows"]

ENV = "NUMBACNN_CUBLAS"
_ALPHA = {np.dtype(np.float32): np.ones(1, np.float32), np.dtype(np.float64): np.ones(1, np.float64)}
_BETAS = {(t, b): np.full(1, b, t) for t in (np.float32, np.float64) for b in (0.0, 1.0)}


def enabled() -> bool:
    """Whether CUDA convolutions and linear layers take cuBLAS's product: ``NUMBACNN_CUBLAS=1``
    asks for it, ``=0`` turns it off; unset, a real GPU takes it when the library loads (the
    simulator runs the kernels' own products unless asked, so that they stay tested)."""
    from .device import gpu_switch

    choice = gpu_switch(ENV)
    if choice is not None:
        return choice
    reason = unavailable_reason()
    if reason is not None and not _said:
        _said.append(reason)
        warnings.warn(f"CUDA convolutions and linear layers multiply with numbacnn's own kernels, several times "
                      f"slower: {reason} (NUMBACNN_CUBLAS=0 says this is meant)", RuntimeWarning, stacklevel=2)
    return reason is None


_said: list[str] = []  # the missing library is warned about once


class Rows(NamedTuple):
    """Rows ``start:stop`` of a C-contiguous device array seen as a (rows, cols) matrix, the
    array's memory read in place: an operand of ``gemm`` without a numba view (each view costs
    the host 10-20 us, several per convolution)."""

    base: Any
    start: int
    stop: int
    cols: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.stop - self.start, self.cols


@functools.cache  # asked at every product: the library is looked for once per process
def _library() -> Any:
    """libcublas, its functions typed; raises when it cannot be loaded."""
    from cuda.pathfinder import load_nvidia_dynamic_lib

    lib = ctypes.CDLL(load_nvidia_dynamic_lib("cublas").abs_path)
    p, i = ctypes.c_void_p, ctypes.c_int
    for name, args in (("cublasCreate_v2", [ctypes.POINTER(p)]), ("cublasSetStream_v2", [p, p]),
                       ("cublasSetWorkspace_v2", [p, p, ctypes.c_size_t]),
                       ("cublasSgemm_v2", [p, i, i, i, i, i, p, p, i, p, i, p, p, i]),
                       ("cublasDgemm_v2", [p, i, i, i, i, i, p, p, i, p, i, p, p, i])):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ctypes.c_int
    return lib


@functools.cache
def unavailable_reason() -> str | None:
    """Why cuBLAS cannot be used here (None: it can; the simulator emulates it)."""
    from .device import is_simulator

    if is_simulator():
        return None
    try:
        lib = _library()
    except Exception as e:
        return (f"the cuBLAS library could not be loaded ({type(e).__name__}: {e}); install the nvidia-cublas "
                f"wheel matching the driver's CUDA (nvidia-cublas for CUDA 13, nvidia-cublas-cu12 for 12) or a "
                f"CUDA toolkit")
    try:  # a library newer than the driver loads, then fails here: fall back instead of at every product
        _handle(lib, 0)
    except Exception as e:
        return f"cuBLAS loaded but could not start ({type(e).__name__}: {e}); is it newer than the driver's CUDA?"
    return None


WORKSPACE = 32 << 20  # bytes per thread's handle: NVIDIA's advice for Hopper
_local = threading.local()
_WORKSPACES: list[Any] = []  # never freed: a graph captured on a thread that has ended still uses its one


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"cuBLAS {what} failed with status {status} (cublasStatus_t)")


def _handle(lib: Any, stream: int) -> Any:
    """This thread's handle, its stream set to ``stream`` (0: the legacy default stream)."""
    handle = getattr(_local, "handle", None)
    if handle is None:
        from numba import cuda

        handle = ctypes.c_void_p()
        _check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        workspace = cuda.device_array(WORKSPACE, np.uint8)
        _WORKSPACES.append(workspace)
        _local.handle, _local.workspace, _local.stream = handle, _pointer(workspace), None
    if _local.stream != stream:
        _check(lib.cublasSetStream_v2(handle, stream or None), "cublasSetStream")
        # Setting the stream puts the handle back on cuBLAS's own workspace (its documentation;
        # PyTorch sets its workspace again after each cublasSetStream too).
        _check(lib.cublasSetWorkspace_v2(handle, _local.workspace, WORKSPACE), "cublasSetWorkspace")
        _local.stream = stream
    return handle


def _column_major(a: Any, b: Any, c: Any, trans_a: bool, trans_b: bool) -> tuple[int, ...]:
    """cuBLAS's (op1, op2, m, n, k, ld1, ld2, ldc) for row-major ``c = op(a) op(b)``, whose
    first operand is ``b`` and second ``a`` (0: as stored, 1: transposed)."""
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    return int(trans_b), int(trans_a), N, M, K, b.shape[1], a.shape[1], N


def usable(*arrays: Any) -> bool:
    """cuBLAS is asked for and these operands suit it (2-D, C-contiguous): else the caller's
    own kernels run."""
    return enabled() and all(len(a.shape) == 2 and a.is_c_contiguous() for a in arrays)


def _operand(name: str, m: Any, dtype: Any) -> tuple[Any, int]:
    """(the array whose memory holds ``m``, the element offset where ``m`` starts)."""
    if isinstance(m, Rows):
        base = m.base
        if not base.is_c_contiguous() or base.dtype != dtype or not 0 <= m.start <= m.stop \
                or m.stop * m.cols > base.size:
            raise ValueError(f"_cublas.gemm: {name} = rows {m.start}:{m.stop} of {m.cols} columns must lie in a "
                             f"C-contiguous {dtype} array, found {base.dtype} {tuple(base.shape)}")
        return base, m.start * m.cols
    if len(m.shape) != 2 or not m.is_c_contiguous() or m.dtype != dtype:
        raise ValueError(f"_cublas.gemm: {name} must be a C-contiguous 2-D {dtype} array, found "
                         f"{m.dtype} {tuple(m.shape)} with strides {tuple(m.strides)}")
    return m, 0


def gemm(a: Any, b: Any, c: Any, trans_a: bool = False, trans_b: bool = False, beta: float = 0.0) -> None:
    """``c = op(a) @ op(b) + beta * c``; each operand a 2-D C-contiguous device array or ``Rows``."""
    dtype = (c.base if isinstance(c, Rows) else c).dtype
    (a_mem, a_at), (b_mem, b_at), (c_mem, c_at) = (_operand(n, m, dtype) for n, m in (("a", a), ("b", b), ("c", c)))
    (ar, ac), (br, bc) = a.shape[::-1] if trans_a else a.shape, b.shape[::-1] if trans_b else b.shape
    if (ar, bc) != tuple(c.shape) or ac != br:
        raise ValueError(f"_cublas.gemm: op(a) {ar}x{ac} times op(b) {br}x{bc} does not give c's {tuple(c.shape)}")
    op1, op2, m, n, k, ld1, ld2, ldc = _column_major(a, b, c, trans_a, trans_b)
    if m == 0 or n == 0:
        return
    if max(m, n, k, ld1, ld2, ldc) >= 1 << 31:  # cuBLAS takes 32-bit ints; ctypes would truncate
        raise ValueError(f"_cublas.gemm: a {m}x{n}x{k} product with leading dimensions {ld1}, {ld2}, {ldc} "
                         f"exceeds cuBLAS's 32-bit sizes; split it")
    from .device import is_simulator

    if is_simulator():
        record = getattr(_jit.ROUTE, "record", None)  # a graph being captured: replayed in order
        args = (op1, op2, m, n, k, b_mem, b_at, ld1, a_mem, a_at, ld2, beta, c_mem, c_at, ldc)
        if record is None:
            _emulate(*args)
        else:
            record(_emulate, *args)
        return
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"{ENV}=1 asks for cuBLAS, but {reason}")
    lib = _library()
    dtype = np.dtype(dtype)
    handle = _handle(lib, int(getattr(_jit.ROUTE, "stream", 0) or 0))
    keep = getattr(_jit.ROUTE, "record", None)
    if keep is not None:
        keep(lambda *arrays: None, a_mem, b_mem, c_mem)  # a graph being captured points into them
    product = lib.cublasSgemm_v2 if dtype == np.float32 else lib.cublasDgemm_v2
    size = dtype.itemsize
    _check(product(handle, op1, op2, m, n, k, _ALPHA[dtype].ctypes.data, _pointer(b_mem) + b_at * size, ld1,
                   _pointer(a_mem) + a_at * size, ld2, _BETAS[dtype.type, float(beta)].ctypes.data,
                   _pointer(c_mem) + c_at * size, ldc), "gemm")


def _pointer(a: Any) -> int:
    return a.device_ctypes_pointer.value or 0


def _emulate(op1: int, op2: int, m: int, n: int, k: int, first: Any, first_at: int, ld1: int, second: Any,
             second_at: int, ld2: int, beta: float, c: Any, c_at: int, ldc: int) -> None:
    """The column-major call, done with NumPy on the simulated arrays (the simulator's cuBLAS)."""
    from numpy.lib.stride_tricks import as_strided

    def matrix(buf: np.ndarray, op: int, rows: int, cols: int, ld: int) -> np.ndarray:
        s = buf.itemsize  # column-major: element (i, j) of the stored matrix at i + j * ld
        return as_strided(buf, (rows, cols), (s, ld * s) if op == 0 else (ld * s, s), writeable=False)

    def flat(a: Any, at: int) -> np.ndarray:  # the simulated array's own memory: no transfer is counted
        return a._ary.reshape(a.size)[at:]

    out = flat(c, c_at)
    view = as_strided(out, (m, n), (out.itemsize, ldc * out.itemsize))
    product = matrix(flat(first, first_at), op1, m, k, ld1) @ matrix(flat(second, second_at), op2, k, n, ld2)
    view[...] = product + beta * view if beta else product
