"""A general BLAS matrix product callable from Numba kernels: strides, transposes, accumulate.

``np.dot`` inside ``njit`` takes whole contiguous matrices and overwrites its output. The
convolution kernels need more: a block of columns of ``gy[n]`` (leading dimension larger than
the block), a transposed operand without copying it, and ``c += a @ b`` straight into a
per-thread partial. ``gemm`` calls the row-major CBLAS ``sgemm``/``dgemm`` through two symbols
that this module registers with LLVM at import, ``numbacnn_cblas_sgemm`` and
``numbacnn_cblas_dgemm``: kernels name them, so they stay cacheable (a ctypes function
pointer would be baked into the machine code, which Numba then refuses to cache).

The symbols point at NumPy's own OpenBLAS (the 64-bit-integer build its wheels bundle):
at the shapes convolutions make (32-128 output channels) it ran their gradient products
5-25% faster than SciPy's copy, which Numba's ``np.dot`` uses, and the forward ones as fast.
Where NumPy has no such library (an MKL or system BLAS build), or with ``NUMBACNN_BLAS=scipy``,
they point at C-callable fallbacks that call SciPy's BLAS as ``np.dot`` does (no allocation
per call: alpha and beta, which Fortran BLAS takes by address, live on the stack). ``BLAS``
names the library this process uses and ``BLAS_FALLBACK_REASON`` why it is not NumPy's (None
when it is); a bundled library that is present but unusable also warns once, at import.
"""

from __future__ import annotations

import ctypes
import glob
import os
import warnings

import llvmlite.binding as ll
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core import config as numba_config

from ._jit import cpu_call, cpu_cfunc, cpu_inline, cpu_intrinsic

__all__ = ["gemm", "small_cols", "BLAS", "BLAS_FALLBACK_REASON"]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS enums
_I, _V = types.int64, types.voidptr


def _signature(real: types.Type) -> types.Type:
    # cblas_?gemm(order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), ILP64
    return types.void(types.int32, types.int32, types.int32, _I, _I, _I, real, _V, _I, _V, _I, real, _V, _I)


_SGEMM, _DGEMM = _signature(types.float32), _signature(types.float64)

# BLAS sees raw pointers, which NUMBA_BOUNDSCHECK=1 cannot follow: in that mode gemm checks
# each operand's extent itself (a compile-time constant, so other builds carry no check; a
# cache compiled either way must not serve the other, hence CI's own NUMBA_CACHE_DIR).
_CHECK_EXTENTS = bool(numba_config.BOUNDSCHECK)


@cpu_inline
def _fits(size, rows, cols, ld):
    """A row-major (rows, cols) block with row stride ld lies within ``size`` elements."""
    return rows == 0 or cols == 0 or (ld >= cols and (rows - 1) * ld + cols <= size)


_sgemm = types.ExternalFunction("numbacnn_cblas_sgemm", _SGEMM)
_dgemm = types.ExternalFunction("numbacnn_cblas_dgemm", _DGEMM)


@cpu_inline
def gemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """Row-major ``c[:m, :n] = op(a) @ op(b) + beta * c`` on flat arrays that start at the
    matrices' first elements; op(a) is (m, k), transposed when ``ta``; ``lda`` etc. are row
    strides. float32 and float64 only; beta 0 ignores what c held (NaN included). Callers'
    literals (``False``, ``0``) become plain values here, so ``_gemm`` compiles once per
    operand types, not once per literal combination."""
    _gemm(np.bool_(ta), np.bool_(tb), np.int64(m), np.int64(n), np.int64(k), a, np.int64(lda), b, np.int64(ldb),
          c.dtype.type(beta), c, np.int64(ldc))


@cpu_call
def _gemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    if _CHECK_EXTENTS and m > 0 and n > 0:
        a_fits = k == 0 or (_fits(a.size, k, m, lda) if ta else _fits(a.size, m, k, lda))
        b_fits = k == 0 or (_fits(b.size, n, k, ldb) if tb else _fits(b.size, k, n, ldb))
        if not (a_fits and b_fits and _fits(c.size, m, n, ldc)):
            raise IndexError("gemm: an operand's rows run past its array (or overlap: stride below its width)")
    if c.itemsize == 4:
        _sgemm(_ROW_MAJOR, _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS, m, n, k, np.float32(1),
               a.ctypes, lda, b.ctypes, ldb, np.float32(beta), c.ctypes, ldc)
    else:
        _dgemm(_ROW_MAJOR, _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS, m, n, k, np.float64(1),
               a.ctypes, lda, b.ctypes, ldb, np.float64(beta), c.ctypes, ldc)


# OpenBLAS multiplies a product of at most SMALL_PRODUCT multiply-adds (m*n*k, non-transposed
# operands) with its small-matrix kernels, which read the operands in place; a larger one is
# packed into per-call buffers first (kernel/x86_64/sgemm_small_kernel_permit_skylakex.c: 100^3).
# Two threads each making a 16x64 @ 64x1024 product (1.05M, packed) took 40-41 us, no faster than
# one thread making both; in column blocks of 512 (524k each) 21 us (/work/probe/s12/g1.py).
SMALL_PRODUCT = 1_000_000
# Narrowest column block small_cols hands out: below it the calls cost more than packing.
SMALL_MIN_COLS = 64


@cpu_inline
def small_cols(m, n, k):
    """Columns per call that keep an (m, k) @ (k, n) product within SMALL_PRODUCT: n itself when
    the whole product fits or when blocks would be narrower than SMALL_MIN_COLS, else the fewest
    blocks that fit, of even width (a multiple of 16 but for the last)."""
    if m * n * k <= SMALL_PRODUCT or m * k * SMALL_MIN_COLS > SMALL_PRODUCT:
        return max(n, 1)
    widest = SMALL_PRODUCT // (m * k) // 16 * 16
    blocks = (n + widest - 1) // widest
    return ((n + blocks - 1) // blocks + 15) // 16 * 16


def _numpy_cblas() -> tuple[int, int, str] | str:
    """The addresses of NumPy's bundled OpenBLAS ILP64 cblas_sgemm and cblas_dgemm and the
    library's path, or why they cannot be had (warned once when the library is there but
    unusable: that is a broken install, not an MKL or system-BLAS build of NumPy)."""
    folder = os.path.normpath(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs"))
    libs = sorted(glob.glob(os.path.join(folder, "*openblas64*")))
    if not libs:
        return f"NumPy bundles no 64-bit-integer OpenBLAS (nothing like {folder}/*openblas64*)"
    problems = []
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            problems.append(f"{path}: {e}")
            continue
        for prefix in ("scipy_", ""):
            try:
                s, d = getattr(lib, f"{prefix}cblas_sgemm64_"), getattr(lib, f"{prefix}cblas_dgemm64_")
            except AttributeError:
                continue
            return ctypes.cast(s, ctypes.c_void_p).value, ctypes.cast(d, ctypes.c_void_p).value, path
        problems.append(f"{path}: no cblas_sgemm64_/cblas_dgemm64_ symbols")
    reason = f"NumPy's bundled OpenBLAS could not be used ({'; '.join(problems)})"
    warnings.warn(f"numbacnn: {reason}; matrix products go through SciPy's BLAS instead, which ran "
                  f"convolution gradients 5-25% slower", RuntimeWarning, stacklevel=2)
    return reason


@cpu_intrinsic
def _on_stack(typingctx, value):
    """The address of a copy of ``value`` in the calling function's stack frame (allocated once,
    in its entry block): what an allocation per call would otherwise provide."""

    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, context.get_value_type(value))
        builder.store(args[0], slot)
        return builder.bitcast(slot, cgutils.voidptr_t)

    return types.voidptr(value), codegen


def _fallback(kind: int, signature: types.Type) -> object:
    """A C-callable row-major gemm over SciPy's Fortran BLAS (Numba's own numba_xxgemm);
    ``kind`` is ord("s") or ord("d"). Returns the ``cfunc`` (its ``address`` is the symbol's)."""
    xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
        types.char, types.char, types.char, types.intp, types.intp, types.intp,
        _V, _V, types.intp, _V, types.intp, _V, _V, types.intp))

    def row_major_gemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
        xxgemm(kind, 116 if tb == _TRANS else 110, 116 if ta == _TRANS else 110, n, m, k, _on_stack(alpha), b, ldb,
               a, lda, _on_stack(beta), c, ldc)

    return cpu_cfunc(signature)(row_major_gemm)


def _register() -> tuple[str, str | None]:
    # NUMBACNN_BLAS=scipy skips NumPy's library (a way out should it ever misbehave).
    if os.environ.get("NUMBACNN_BLAS", "").lower() == "scipy":
        found: tuple[int, int, str] | str = "NUMBACNN_BLAS=scipy is set"
    else:
        found = _numpy_cblas()
    if isinstance(found, str):
        s, d = _fallback(ord("s"), _SGEMM).address, _fallback(ord("d"), _DGEMM).address
        where, reason = "SciPy's BLAS (through Numba's numba_xxgemm)", found
    else:
        (s, d, where), reason = found, None
    ll.add_symbol("numbacnn_cblas_sgemm", s)
    ll.add_symbol("numbacnn_cblas_dgemm", d)
    return where, reason


BLAS: str  # where the kernels' matrix products go: NumPy's OpenBLAS (its path) or SciPy's BLAS
BLAS_FALLBACK_REASON: str | None  # why not NumPy's OpenBLAS; None when it is used
BLAS, BLAS_FALLBACK_REASON = _register()
