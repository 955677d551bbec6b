"""A register tile of shifted taps, for direct convolutions on the CPU (conv2d_shift_cpu).

``taps(x, xo, offs, J, w, wo, ldw, rows, acc, lanes)`` computes, for the tile's ROWS output
rows m and columns(dtype) columns n::

    acc[m * columns + n] = sum over j < J of w[wo + min(m, rows - 1) * ldw + j] * x[xo + offs[j] + n]

for n < lanes (0 beyond). On a padded image laid out flat, with the outputs on its
padded-width grid, tap j of every output is the same offset ``offs[j]`` away, so a convolution
is this sum with one weight row per output channel: a matrix product whose right-hand rows
start anywhere in one array, read in place (no column matrix).

Why LLVM IR: the product's speed is in its accumulators. Written as Numba loops (a local
array, unrolled by hand) LLVM neither kept them in registers nor vectorised them; here each of
the ROWS x VECTORS accumulators is a vector of the machine's width, and every tap is VECTORS
loads of x, ROWS broadcast weights and ROWS * VECTORS multiply-adds. One thread, float32,
2-core AVX-512 Xeon, the product alone (probe, 3x3 pad 1 unless said): 16->16 at 32x32 27 us,
24->32 at 16x16 21 us, 48->96 at 8x8 42 us, 1x1 64->16 at 32x32 15 us: 130-180 GFLOP/s of
useful work, 190 counted with the grid's dropped columns, where OpenBLAS reached 70-105 GFLOP/s
on the same products as matrices (NumPy's np.dot, one thread). Tiles of 8 rows by 3 vectors
ran fastest of 8x3, 12x2, 24x1, 6x4 and 4x6 (12x2 won only where 12 divides the channels).

The multiply-adds are ``llvm.fmuladd``: the kernel opts in to contraction (a fused multiply-add
where the machine has one, as BLAS does); nothing else of fastmath. Loads are masked to the
tile's ``lanes`` columns, so a tile reads nothing past ``x[xo + offs[J - 1] + lanes - 1]``,
and the weight rows past ``rows`` repeat the last (their sums are computed and dropped).
The caller checks those extents under NUMBA_BOUNDSCHECK (raw pointers escape its checks).
"""

from __future__ import annotations

import llvmlite.binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils

from .._jit import cpu_inline, cpu_intrinsic

__all__ = ["ROWS", "VECTORS", "columns", "taps"]


def _vector_bytes() -> int:
    try:
        features = ll.get_host_cpu_features()
    except RuntimeError:  # a platform LLVM cannot ask: the narrowest SIMD every x86-64 and ARM has
        return 16
    return 64 if features.get("avx512f", False) else 32 if features.get("avx", False) else 16


#: Bytes in one vector register (AVX-512: 64), output rows and vectors of columns per tile:
#: ROWS * VECTORS accumulators plus VECTORS loads fit the register file (32 on AVX-512, 16 else).
VECTOR_BYTES = _vector_bytes()
# The masked load's name carries its pointer type: "p0" where LLVM's pointers are opaque (LLVM
# 17 on, this Numba's), "p0v16f32" and the like where they are typed (older llvmlites).
_TYPED_POINTERS = ll.llvm_version_info[0] < 17
ROWS = 8 if VECTOR_BYTES == 64 else 4
VECTORS = 3


@cpu_inline
def columns(a):
    """A tile's columns for arrays of ``a``'s dtype (48 float32 or 24 float64 on AVX-512)."""
    return VECTORS * (VECTOR_BYTES // a.itemsize)


def _splat(builder: ir.IRBuilder, value: ir.Value, vt: ir.VectorType) -> ir.Value:
    i32 = ir.IntType(32)
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), value, i32(0))
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(i32, vt.count),
                                                                                   [0] * vt.count))


@cpu_intrinsic
def taps(typingctx, x, xo, offs, J, w, wo, ldw, rows, acc, lanes):
    """See the module docstring. x, w, acc: 1-D contiguous arrays of one float dtype; offs: 1-D
    contiguous int64; the rest int64 (rows >= 1)."""
    arrays = (x, w, acc)
    if (not all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in (*arrays, offs))
            or x.dtype not in (types.float32, types.float64) or any(a.dtype != x.dtype for a in arrays)
            or offs.dtype != types.int64):
        return None
    sig = types.void(x, xo, offs, J, w, wo, ldw, rows, acc, lanes)
    size = 4 if x.dtype == types.float32 else 8
    real = ir.FloatType() if size == 4 else ir.DoubleType()
    width = VECTOR_BYTES // size
    vt, i32, i64 = ir.VectorType(real, width), ir.IntType(32), ir.IntType(64)
    name = f"v{width}f{8 * size}"

    def codegen(context, builder, signature, args):
        x_, xo_, offs_, J_, w_, wo_, ldw_, rows_, acc_, lanes_ = args
        ty = signature.args
        data = lambda t, v: context.make_array(t)(context, builder, v).data  # noqa: E731
        i64s = [context.cast(builder, v, t, types.int64) for v, t in
                ((xo_, ty[1]), (J_, ty[3]), (wo_, ty[5]), (ldw_, ty[6]), (rows_, ty[7]), (lanes_, ty[9]))]
        xo_, J_, wo_, ldw_, rows_, lanes_ = i64s
        px, po, pw, pa = builder.gep(data(ty[0], x_), [xo_]), data(ty[2], offs_), data(ty[4], w_), data(ty[8], acc_)
        mask_t = ir.VectorType(ir.IntType(1), width)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fmuladd.{name}")
        load = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt.as_pointer(), i32, mask_t, vt]),
                                              f"llvm.masked.load.{name}.p0{name if _TYPED_POINTERS else ''}")
        zero = ir.Constant(vt, [0.0] * width)
        masks = []  # vector v's lanes below ``lanes``, made once from an integer (kept in mask registers)
        for v in range(VECTORS):
            n = builder.sub(lanes_, i64(v * width))
            n = builder.select(builder.icmp_signed("<", n, i64(0)), i64(0), n)
            bits = builder.sub(builder.shl(i64(1), builder.select(builder.icmp_signed("<", n, i64(width)), n,
                                                                  i64(width))), i64(1))
            masks.append(builder.bitcast(builder.trunc(bits, ir.IntType(width)), mask_t))
        last = builder.sub(rows_, i64(1))
        wrows = []
        for m in range(ROWS):  # row m's weights, the last valid row's past ``rows``
            r = builder.select(builder.icmp_signed("<", i64(m), rows_), i64(m), last)
            wrows.append(builder.gep(pw, [builder.add(wo_, builder.mul(r, ldw_))]))
        accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(VECTORS)] for _ in range(ROWS)]
        with cgutils.for_range(builder, J_) as loop:
            j = loop.index
            base = builder.gep(px, [builder.load(builder.gep(po, [j]))])
            xs = [builder.call(load, [builder.bitcast(builder.gep(base, [i64(v * width)]), vt.as_pointer()),
                                      i32(size), masks[v], zero])
                  for v in range(VECTORS)]
            for m in range(ROWS):
                wv = _splat(builder, builder.load(builder.gep(wrows[m], [j])), vt)
                for v in range(VECTORS):
                    builder.store(builder.call(fma, [wv, xs[v], builder.load(accs[m][v])]), accs[m][v])
        for m in range(ROWS):
            for v in range(VECTORS):
                at = builder.gep(pa, [i64((m * VECTORS + v) * width)])
                builder.store(builder.load(accs[m][v]), builder.bitcast(at, vt.as_pointer()), align=size)
        return context.get_dummy_value()

    return sig, codegen

