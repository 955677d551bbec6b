"""A general BLAS matrix product callable from Numba kernels: strides, transposes, accumulate.

``np.dot`` inside ``njit`` takes whole contiguous matrices and overwrites its output. The
convolution kernels need more: a block of columns of ``gy[n]`` (leading dimension larger than
the block), a transposed operand without copying it, and ``c += a @ b`` straight into a
per-thread partial. This calls the same BLAS that Numba's ``np.dot`` calls (SciPy's, through
Numba's own ``numba_xxgemm`` helper, resolved by symbol name when the kernel is linked), so
kernels that use it stay cacheable, which a ctypes function pointer would not allow.
"""

from __future__ import annotations

from numba import types

from ._jit import cpu_inline

__all__ = ["gemm"]

_V = types.voidptr
# int numba_xxgemm(char kind, char transa, char transb, intp m, intp n, intp k, void *alpha,
#                  void *a, intp lda, void *b, intp ldb, void *beta, void *c, intp ldc): column-major.
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    _V, _V, types.intp, _V, types.intp, _V, _V, types.intp))

_N, _T = 110, 116  # ord("n"), ord("t")


@cpu_inline
def gemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc, scalars):
    """Row-major ``c[:m, :n] = op(a) @ op(b) + beta * c`` on flat arrays that start at the
    matrices' first elements; op(a) is (m, k), transposed when ``ta``; ``lda`` etc. are row
    strides. ``scalars`` is a 2-element scratch array of c's dtype (BLAS takes alpha and beta
    by address). float32 and float64 only; beta 0 ignores what c held (NaN included)."""
    scalars[0] = 1
    scalars[1] = beta
    kind = 115 if c.itemsize == 4 else 100  # "s" or "d"
    # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
    _xxgemm(kind, _T if tb else _N, _T if ta else _N, n, m, k, scalars.ctypes, b.ctypes, ldb,
            a.ctypes, lda, scalars[1:].ctypes, c.ctypes, ldc)
