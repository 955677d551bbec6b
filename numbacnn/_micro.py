"""A matrix product held in registers, for the products convolutions make at small channel counts.

``micro_gemm`` computes row-major ``c[:m, :n] = a[:m, :k] @ b[:k, :n]`` (flat arrays, row strides
``lda`` etc., as ``_blas.gemm`` takes them, beta 0) in tiles of 8 rows by 16 columns: 128 sums
that stay in registers for the whole of k (8 vectors of 16 float32 on AVX-512), each step one
row of b's tile loaded and 8 weights broadcast onto it. OpenBLAS packs both operands first and
its kernel is tuned for long products; at the shapes of a small network's convolutions (16 to
256 channels, 4x4 to 16x16 planes) that costs it a sixth to a quarter of its time. One thread,
the product alone, m x k x n (GFLOP/s, OpenBLAS's SkylakeX kernel through np.matmul against this
tile, AMD EPYC Zen 4, the best of 30; /work/probe/s28/mcheck.py): 64x512x256 (conv_transpose2d's
input gradient) 99 -> 117, 32x128x256 83 -> 110, 256x64x64 92 -> 111; the first version (tup.py,
whole tiles only) also 128x32x256 88 -> 112, 64x576x64 93 -> 117. On 32x32 planes (n = 1024)
it beat np.matmul (64x16x1024 46 -> 84) but lost to the column blocks conv2d hands OpenBLAS,
which ``micro_fits`` leaves them.

Why tuples: the tile's sums are written as tuples of 16 scalars, each step ``r = _fma16(r, w,
v)``. LLVM's SLP vectoriser joins each tuple's 16 lanes into one vector register; Numba leaves
that pass off, so a kernel whose code links this module is optimised with it on
(``_parfor_link.SLP_MODULES`` names this module). Without it the same code runs scalar
(about 7 GFLOP/s), so callers take this product only where ``ready()`` says the pass is on.

The tuple helpers are ``cpu_call`` functions, typed once (inlined at Numba's IR level into each
call site, the tile's tuples took micro_gemm 2.0 s to compile instead of 0.6); ``_fma16`` carries
its own ``CONTRACT`` (a helper compiles under its own flags, and without it the tile ran a multiply
and an add for each multiply-add). A kernel that links the tile compiles longer: from an empty
cache, conv2d's im2col batch forward 2.9-3.1 -> 4.5-5.0 s, conv_transpose2d's backward 3.2-3.4 ->
3.9-4.4 s (/work/probe/s28/kcomp.py, alternating trees); a cold ``numbacnn train`` compiles none of
them (12.4 / 13.0 / 14.0 s before, 11.6 / 12.8 / 12.6 s after, alternating).

Rows past the last whole tile go one at a time (a tile of 1 x 16), columns past the last whole
16 scalar; each sum runs over k in order, multiply-adds contracted (``CONTRACT``: the fused
multiply-add BLAS uses too) and nothing else of fastmath: NaN and Inf propagate as in BLAS.
"""

from __future__ import annotations

import numpy as np

from ._blas import gemm, small_cols
from ._jit import CONTRACT, cpu_call, cpu_serial

__all__ = ["micro_gemm", "blocked_gemm", "micro_fits", "ready", "ROWS", "COLUMNS"]

ROWS, COLUMNS = 8, 16  # the tile: 8 rows of 16 columns (16 accumulators of 8 lanes where vectors are 256-bit)

_U = np.uint64


@cpu_call
def _load16(f, i):
    return (f[i], f[i + _U(1)], f[i + _U(2)], f[i + _U(3)], f[i + _U(4)], f[i + _U(5)], f[i + _U(6)], f[i + _U(7)],
            f[i + _U(8)], f[i + _U(9)], f[i + _U(10)], f[i + _U(11)], f[i + _U(12)], f[i + _U(13)], f[i + _U(14)],
            f[i + _U(15)])


@cpu_call(fastmath=CONTRACT)  # its own flags, not its caller's: the multiply-adds fused here
def _fma16(r, w, v):
    return (r[0] + w * v[0], r[1] + w * v[1], r[2] + w * v[2], r[3] + w * v[3], r[4] + w * v[4], r[5] + w * v[5],
            r[6] + w * v[6], r[7] + w * v[7], r[8] + w * v[8], r[9] + w * v[9], r[10] + w * v[10],
            r[11] + w * v[11], r[12] + w * v[12], r[13] + w * v[13], r[14] + w * v[14], r[15] + w * v[15])


@cpu_call
def _store16(f, i, r):
    f[i], f[i + _U(1)], f[i + _U(2)], f[i + _U(3)], f[i + _U(4)], f[i + _U(5)], f[i + _U(6)], f[i + _U(7)] = \
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
    f[i + _U(8)], f[i + _U(9)], f[i + _U(10)], f[i + _U(11)], f[i + _U(12)], f[i + _U(13)], f[i + _U(14)], \
        f[i + _U(15)] = r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]


@cpu_serial(fastmath=CONTRACT)
def micro_gemm(m, n, k, a, lda, b, ldb, c, ldc):
    """Row-major ``c[:m, :n] = a[:m, :k] @ b[:k, :n]`` on flat arrays that start at the matrices'
    first elements (lda, ldb, ldc: row strides, at least k, n, n); what c held is ignored (NaN
    included), as gemm's beta 0."""
    e = c.dtype.type(0)
    zero = (e, e, e, e, e, e, e, e, e, e, e, e, e, e, e, e)
    n16, m8 = n - n % 16, m - m % 8
    sa, sc = _U(lda), _U(ldc)
    for l0 in range(0, n16, 16):
        for i0 in range(0, m8, 8):
            r0 = r1 = r2 = r3 = r4 = r5 = r6 = r7 = zero
            for j in range(k):
                v = _load16(b, _U(j * ldb + l0))
                p = _U(i0 * lda + j)
                r0, r1 = _fma16(r0, a[p], v), _fma16(r1, a[p + sa], v)
                r2, r3 = _fma16(r2, a[p + _U(2) * sa], v), _fma16(r3, a[p + _U(3) * sa], v)
                r4, r5 = _fma16(r4, a[p + _U(4) * sa], v), _fma16(r5, a[p + _U(5) * sa], v)
                r6, r7 = _fma16(r6, a[p + _U(6) * sa], v), _fma16(r7, a[p + _U(7) * sa], v)
            o = _U(i0 * ldc + l0)
            _store16(c, o, r0)
            _store16(c, o + sc, r1)
            _store16(c, o + _U(2) * sc, r2)
            _store16(c, o + _U(3) * sc, r3)
            _store16(c, o + _U(4) * sc, r4)
            _store16(c, o + _U(5) * sc, r5)
            _store16(c, o + _U(6) * sc, r6)
            _store16(c, o + _U(7) * sc, r7)
        for i in range(m8, m):  # rows past the last whole tile: 1 x 16
            r0 = zero
            for j in range(k):
                r0 = _fma16(r0, a[_U(i * lda + j)], _load16(b, _U(j * ldb + l0)))
            _store16(c, _U(i * ldc + l0), r0)
    for i in range(m):  # columns past the last whole 16
        for q in range(n16, n):
            s = e
            for j in range(k):
                s += a[_U(i * lda + j)] * b[_U(j * ldb + q)]
            c[_U(i * ldc + q)] = s


@cpu_serial
def blocked_gemm(m, n, k, a, lda, b, ldb, c, ldc, micro):
    """``c = a @ b`` as micro_gemm takes them: through the tile when ``micro`` (micro_fits), else
    OpenBLAS in small_cols' column blocks (products it makes unpacked, _blas.SMALL_PRODUCT)."""
    if micro:
        micro_gemm(m, n, k, a, lda, b, ldb, c, ldc)
        return
    cb = small_cols(m, n, k)
    for c0 in range(0, n, cb):
        gemm(False, False, m, min(n, c0 + cb) - c0, k, a, lda, b[c0:], ldb, 0, c[c0:], ldc)


def ready() -> bool:
    """Whether kernels that link ``micro_gemm`` are optimised with the SLP vectoriser (its tile
    is in registers only then): numbacnn's linking of parallel kernels is on (``_parfor_link``),
    and this Numba builds its pass managers per call, reading the SLP flag then (0.68 does; older
    releases built them once). A disk cache compiled with ``NUMBACNN_LINK_ONCE=0`` and read
    without it would run the tile without SLP: correct, at scalar speed."""
    from numba.core import codegen

    from . import _parfor_link

    return _parfor_link.active() and hasattr(getattr(codegen, "CPUCodegen", None), "_pass_builder")


def _measured() -> bool:
    # Measured on one machine only, an AVX-512 Zen 4 ("znver4"; its 32 vector registers hold the
    # tile's accumulators with room, where AVX2's 16 would hold nothing else): on others, OpenBLAS
    # (an AVX-512 Xeon measured other conv paths the other way: conv2d_plan.BATCH1_WINOGRAD).
    from .layers._taps_cpu import HOST_CPU, VECTOR_BYTES

    return VECTOR_BYTES == 64 and HOST_CPU == "znver4" and ready()


#: Whether float32 products may take the tile on this machine (``micro_fits``).
MICRO = _measured()
# Where the tile beat OpenBLAS's products in a model (conv2d's own, in column blocks OpenBLAS
# makes unpacked: a 1x1 conv + relu at inference, 2 threads, alternating, ms, tile / OpenBLAS,
# /work/probe/s28/nodeab.py): batch 256, 256->64 at 8x8 3.55 / 4.58, 128->64 at 16x16 8.0 / 9.8,
# 128->32 at 16x16 4.1-4.6 / 4.8-6.2, 64->256 at 8x8 5.0 / 5.6; batch 32, 256->64 at 8x8 0.38 /
# 0.50, 64->256 at 8x8 0.41-0.43 / 0.48-0.53, 160->124 at 8x8 0.54 / 0.82, 112->72 0.21 / 0.23.
# Lost: planes of 32x32 (1024 columns; OpenBLAS's column blocks ran there at 160 GFLOP/s), 64->16
# 12.1 / 9.6 at batch 256, 0.68 / 0.42-0.53 at 32, 64->32 1.17-1.36 / 1.04-1.14 at 32; short
# products, 32->16 at 16x16 1.6 / 1.1 at 256 (a tile's 128 sums stored after 32 steps each).
# Columns a whole number of tiles wide only: past the last, each sum is a chain of dependent
# scalar multiply-adds (a 7x7 plane's one column more would cost about as much as its 48).
MIN_ROWS, MAX_COLUMNS, MIN_INNER = ROWS, 256, 64


def micro_fits(dtype: object, rows: int, columns: int, inner: int) -> bool:
    """Whether a convolution's float32 product, ``rows`` output channels by ``columns`` output
    pixels over ``inner`` input values each (C*R*S/groups), takes ``micro_gemm`` rather than
    OpenBLAS: at least MIN_ROWS rows, at most MAX_COLUMNS columns and a multiple of a tile's
    width, at least MIN_INNER inputs."""
    return (MICRO and np.dtype(dtype) == np.float32 and rows >= MIN_ROWS and columns <= MAX_COLUMNS
            and columns % COLUMNS == 0 and inner >= MIN_INNER)
