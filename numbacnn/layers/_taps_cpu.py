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
tile's ``lanes`` columns, so a tile reads nothing past ``x[xo + max(offs) + lanes - 1]`` (for
``taps_out``, whose vector v starts v * xstep on: ``(lanes - 1) // width * (xstep - width)``
further), and the weight rows past ``rows`` repeat the last (their sums are computed and
dropped).
The caller checks those extents under NUMBA_BOUNDSCHECK (raw pointers escape its checks).
"""

from __future__ import annotations

from typing import Any

import llvmlite.binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils

from .._jit import cpu_inline, cpu_intrinsic

__all__ = ["HOST_CPU", "ROWS", "VECTORS", "columns", "lanes_of", "taps", "taps_out", "tile_columns", "tile_shape"]


def _vector_bytes() -> int:
    try:
        features = ll.get_host_cpu_features()
    except RuntimeError:  # a platform LLVM cannot ask: the narrowest SIMD every x86-64 and ARM has
        return 16
    return 64 if features.get("avx512f", False) else 32 if features.get("avx", False) else 16


#: Bytes in one vector register (AVX-512: 64), output rows and vectors of columns per tile:
#: ROWS * VECTORS accumulators plus VECTORS loads fit the register file (32 on AVX-512, 16 else).
VECTOR_BYTES = _vector_bytes()
#: LLVM's name for this CPU ("znver4", "skylake-avx512", ...): a plan choice measured on one
#: microarchitecture only (conv2d_plan.BATCH1_WINOGRAD) names it.
HOST_CPU = ll.get_host_cpu_name()
# The masked load's name carries its pointer type: "p0" where LLVM's pointers are opaque (LLVM
# 17 on, this Numba's), "p0v16f32" and the like where they are typed (older llvmlites).
_TYPED_POINTERS = ll.llvm_version_info[0] < 17


def tile_shape(vector_bytes: int) -> tuple[int, int]:
    """(ROWS, VECTORS) for vectors of ``vector_bytes``: 8 x 3 with AVX-512's 32 registers;
    4 x 2 with 16 (AVX2, SSE). 4 x 3 there needed 12 accumulators, 3 loads of x and a
    broadcast weight, all 16 registers: LLVM spilled two accumulators to the stack every tap.
    One AMD EPYC core pair (AVX2), 2 threads, 32->32 3x3 at 32x32, batch 1: 4 x 3 290 us
    (65 GFLOP/s), 4 x 2 167 (113), 5 x 2 167, 6 x 2 323, 3 x 4 388; vgg_small at batch 1,
    two runs: 1.57-1.74 ms against 0.99-1.13 (/work/probe/s14/asm.py, mtime.py)."""
    return (8, 3) if vector_bytes == 64 else (4, 2)


ROWS, VECTORS = tile_shape(VECTOR_BYTES)


@cpu_inline
def columns(a):
    """A tile's columns for arrays of ``a``'s dtype (48 float32 or 24 float64 on AVX-512)."""
    return VECTORS * (VECTOR_BYTES // a.itemsize)


@cpu_inline
def lanes_of(a):
    """Values of ``a``'s dtype in one vector register (16 float32 on AVX-512, 8 on AVX2)."""
    return VECTOR_BYTES // a.itemsize


def tile_columns(itemsize: int) -> int:
    """``columns`` from Python, for values of ``itemsize`` bytes: what the plans expect of the
    kernels compiled here (a kernel compiled elsewhere counts its own)."""
    return VECTORS * (VECTOR_BYTES // itemsize)


def _splat(builder: ir.IRBuilder, value: ir.Value, vt: ir.VectorType) -> ir.Value:
    i32 = ir.IntType(32)
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), value, i32(0))
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(i32, vt.count),
                                                                                   [0] * vt.count))


class _Tile:
    """The IR common to both tiles: vector types, masks of the first ``lanes`` columns, and the
    accumulation of J taps into ROWS x VECTORS accumulators (allocas that LLVM keeps in
    registers)."""

    def __init__(self, dtype: types.Float) -> None:
        self.size = 4 if dtype == types.float32 else 8
        self.real = ir.FloatType() if self.size == 4 else ir.DoubleType()
        self.width = VECTOR_BYTES // self.size
        self.vt = ir.VectorType(self.real, self.width)
        self.name = f"v{self.width}f{8 * self.size}"
        self.mask_t = ir.VectorType(ir.IntType(1), self.width)

    def intrinsic(self, builder: ir.IRBuilder, what: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        p0 = f".p0{self.name if _TYPED_POINTERS else ''}" if what.startswith("masked") else ""
        name = f"llvm.{what}.{self.name}{p0}"
        return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)

    def masks(self, builder: ir.IRBuilder, lanes: ir.Value) -> list[ir.Value]:
        # vector v's lanes below ``lanes``, made once from an integer (kept in mask registers)
        i64, out = ir.IntType(64), []
        for v in range(VECTORS):
            n = builder.sub(lanes, i64(v * self.width))
            n = builder.select(builder.icmp_signed("<", n, i64(0)), i64(0), n)
            n = builder.select(builder.icmp_signed("<", n, i64(self.width)), n, i64(self.width))
            bits = builder.sub(builder.shl(i64(1), n), i64(1))
            out.append(builder.bitcast(builder.trunc(bits, ir.IntType(self.width)), self.mask_t))
        return out

    def load(self, builder: ir.IRBuilder, at: ir.Value, mask: ir.Value, passthru: ir.Value) -> ir.Value:
        vt = self.vt
        fn = self.intrinsic(builder, "masked.load", vt, [vt.as_pointer(), ir.IntType(32), self.mask_t, vt])
        return builder.call(fn, [builder.bitcast(at, vt.as_pointer()), ir.IntType(32)(self.size), mask, passthru])

    def store(self, builder: ir.IRBuilder, value: ir.Value, at: ir.Value, mask: ir.Value) -> None:
        vt = self.vt
        fn = self.intrinsic(builder, "masked.store", ir.VoidType(), [vt, vt.as_pointer(), ir.IntType(32), self.mask_t])
        builder.call(fn, [value, builder.bitcast(at, vt.as_pointer()), ir.IntType(32)(self.size), mask])

    def accumulate(self, builder: ir.IRBuilder, px: ir.Value, po: ir.Value, J: ir.Value, pw: ir.Value, wo: ir.Value,
                   ldw: ir.Value, rows: ir.Value, lanes: ir.Value,
                   xstep: ir.Value | None = None) -> list[list[ir.Value]]:
        # vector v of a tap reads x v * xstep values on (None: v * width, the vectors side by side)
        vt, i64 = self.vt, ir.IntType(64)
        steps = [i64(v * self.width) if xstep is None else builder.mul(xstep, i64(v)) for v in range(VECTORS)]
        zero = ir.Constant(vt, [0.0] * self.width)
        last = builder.sub(rows, i64(1))
        wrows = []
        for m in range(ROWS):  # row m's weights, the last valid row's past ``rows``
            r = builder.select(builder.icmp_signed("<", i64(m), rows), i64(m), last)
            wrows.append(builder.gep(pw, [builder.add(wo, builder.mul(r, ldw))]))
        accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(VECTORS)] for _ in range(ROWS)]
        # A whole tile's loop loads x plainly; only a tile cut short masks its loads. AVX2 has no
        # mask registers: its masks held 3 of the 16 vector registers through the loop, which
        # then spilled accumulators (vgg_small's 3x3 convolutions at batch 1 ran at ~50 GFLOP/s).
        whole = builder.icmp_signed(">=", lanes, i64(VECTORS * self.width))
        with builder.if_else(whole) as (plain, masked):
            with plain:
                self._taps(builder, px, po, J, wrows, accs, steps, lambda at, v: builder.load(
                    builder.bitcast(at, vt.as_pointer()), align=self.size))
            with masked:
                masks = self.masks(builder, lanes)  # made here, so the whole tiles' loop keeps no register for them
                self._taps(builder, px, po, J, wrows, accs, steps, lambda at, v: self.load(builder, at, masks[v], zero))
        return accs

    def _taps(self, builder: ir.IRBuilder, px: ir.Value, po: ir.Value, J: ir.Value, wrows: list[ir.Value],
              accs: list[list[ir.Value]], steps: list[ir.Value], load: Any) -> None:
        # accs[m][v] += w[m, j] * x[offs[j] + steps[v] ...] over the J taps, x's vectors read by ``load``
        vt = self.vt
        fma = self.intrinsic(builder, "fmuladd", vt, [vt, vt, vt])
        with cgutils.for_range(builder, J) as loop:
            j = loop.index
            base = builder.gep(px, [builder.load(builder.gep(po, [j]))])
            xs = [load(builder.gep(base, [steps[v]]), v) for v in range(VECTORS)]
            for m in range(ROWS):
                wv = _splat(builder, builder.load(builder.gep(wrows[m], [j])), vt)
                for v in range(VECTORS):
                    builder.store(builder.call(fma, [wv, xs[v], builder.load(accs[m][v])]), accs[m][v])


def _epilogue(builder: ir.IRBuilder, acc: ir.Value, sv: ir.Value, bv: ir.Value, r: ir.Value, relus: ir.Value,
              zero: ir.Value) -> ir.Value:
    # relu?((acc * scale + bias) + r), relu's rule: v <= 0 gives 0, NaN kept
    value = builder.fadd(builder.fadd(builder.fmul(builder.load(acc), sv), bv), r)
    cut = builder.and_(builder.fcmp_ordered("<=", value, zero), relus)
    return builder.select(cut, zero, value)


def _typed(offs: types.Type, *arrays: types.Type) -> bool:
    # the tiles' argument types: offsets 1-D contiguous int64, the arrays 1-D contiguous of one float dtype
    return (all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in (offs, *arrays))
            and offs.dtype == types.int64 and arrays[0].dtype in (types.float32, types.float64)
            and all(a.dtype == arrays[0].dtype for a in arrays))


def _int64s(context: Any, builder: ir.IRBuilder, pairs: list[tuple[ir.Value, types.Type]]) -> list[ir.Value]:
    return [context.cast(builder, v, t, types.int64) for v, t in pairs]


@cpu_intrinsic
def taps(typingctx, x, xo, offs, J, w, wo, ldw, rows, acc, lanes):
    """See the module docstring. x, w, acc: 1-D contiguous arrays of one float dtype; offs: 1-D
    contiguous int64; the rest int64 (rows >= 1)."""
    if not _typed(offs, x, w, acc):
        return None
    sig = types.void(x, xo, offs, J, w, wo, ldw, rows, acc, lanes)
    tile = _Tile(x.dtype)

    def codegen(context, builder, signature, args):
        x_, xo_, offs_, J_, w_, wo_, ldw_, rows_, acc_, lanes_ = args
        ty = signature.args
        data = lambda t, v: context.make_array(t)(context, builder, v).data  # noqa: E731
        xo_, J_, wo_, ldw_, rows_, lanes_ = _int64s(context, builder, [
            (xo_, ty[1]), (J_, ty[3]), (wo_, ty[5]), (ldw_, ty[6]), (rows_, ty[7]), (lanes_, ty[9])])
        px, pa = builder.gep(data(ty[0], x_), [xo_]), data(ty[8], acc_)
        accs = tile.accumulate(builder, px, data(ty[2], offs_), J_, data(ty[4], w_), wo_, ldw_, rows_, lanes_)
        i64, vt = ir.IntType(64), tile.vt
        for m in range(ROWS):
            for v in range(VECTORS):
                at = builder.gep(pa, [i64((m * VECTORS + v) * tile.width)])
                builder.store(builder.load(accs[m][v]), builder.bitcast(at, vt.as_pointer()), align=tile.size)
        return context.get_dummy_value()

    return sig, codegen


@cpu_intrinsic
def taps_out(typingctx, x, xo, offs, J, w, wo, ldw, rows, lanes, y, yo, ldy, b, s, bo, r, flags, xstep):
    """The tile written straight to y: for m < rows and lane n < lanes, n = v * width + i in
    vector v, ``y[yo + m * ldy + n] = relu?((sum * s[bo + m] + b[bo + m]) + r[...])``
    (r at y's index), its sum over taps j of ``w[wo + m * ldw + j] * x[xo + offs[j] + v * xstep +
    i]``; the scale when ``flags & 8`` (else 1), the bias when ``flags & 1`` (else -0.0, the exact
    identity), the residual r (an array like y) when ``flags & 2``, relu's rule (v <= 0 gives 0,
    NaN kept) when ``flags & 4``; in that order, as the scalar epilogue. y's vectors lie side by
    side; x's are ``xstep`` apart: the width, as y's, or more where the second vector's outputs
    lie further on in x (conv2d_shift_cpu._dense, a tile across two output rows of a padded
    image). Nothing of y or r is touched past ``rows`` and ``lanes``."""
    if not _typed(offs, x, w, y, b, s, r):
        return None
    sig = types.void(x, xo, offs, J, w, wo, ldw, rows, lanes, y, yo, ldy, b, s, bo, r, flags, xstep)
    tile = _Tile(x.dtype)

    def codegen(context, builder, signature, args):
        x_, xo_, offs_, J_, w_, wo_, ldw_, rows_, lanes_, y_, yo_, ldy_, b_, s_, bo_, r_, flags_, xstep_ = args
        ty = signature.args
        data = lambda t, v: context.make_array(t)(context, builder, v).data  # noqa: E731
        xo_, J_, wo_, ldw_, rows_, lanes_, yo_, ldy_, bo_, flags_, xstep_ = _int64s(context, builder, [
            (xo_, ty[1]), (J_, ty[3]), (wo_, ty[5]), (ldw_, ty[6]), (rows_, ty[7]), (lanes_, ty[8]),
            (yo_, ty[10]), (ldy_, ty[11]), (bo_, ty[14]), (flags_, ty[16]), (xstep_, ty[17])])
        accs = tile.accumulate(builder, builder.gep(data(ty[0], x_), [xo_]), data(ty[2], offs_), J_,
                               data(ty[4], w_), wo_, ldw_, rows_, lanes_, xstep_)
        masks = tile.masks(builder, lanes_)
        i1, i64, vt, real = ir.IntType(1), ir.IntType(64), tile.vt, tile.real
        bit = lambda k: builder.icmp_signed("!=", builder.and_(flags_, i64(k)), i64(0))  # noqa: E731
        has_bias, has_res, relu, has_scale = bit(1), bit(2), bit(4), bit(8)
        minus0, zero = ir.Constant(vt, [-0.0] * tile.width), ir.Constant(vt, [0.0] * tile.width)
        relus = _splat(builder, relu, ir.VectorType(i1, tile.width))
        py, pr, pb, ps = data(ty[9], y_), data(ty[15], r_), data(ty[12], b_), data(ty[13], s_)
        bias, scale = cgutils.alloca_once(builder, real), cgutils.alloca_once(builder, real)
        res = cgutils.alloca_once(builder, vt)
        whole = builder.icmp_signed(">=", lanes_, i64(VECTORS * tile.width))
        ysteps = [i64(v * tile.width) for v in range(VECTORS)]  # y's vectors side by side
        for m in range(ROWS):
            with builder.if_then(builder.icmp_signed("<", i64(m), rows_)):  # rows past ``rows``: nothing
                builder.store(real(-0.0), bias)
                builder.store(real(1.0), scale)
                with builder.if_then(has_bias):
                    builder.store(builder.load(builder.gep(pb, [builder.add(bo_, i64(m))])), bias)
                with builder.if_then(has_scale):
                    builder.store(builder.load(builder.gep(ps, [builder.add(bo_, i64(m))])), scale)
                bv, sv = _splat(builder, builder.load(bias), vt), _splat(builder, builder.load(scale), vt)
                row = builder.add(yo_, builder.mul(i64(m), ldy_))
                # A whole row goes out with plain loads and stores: AVX2's masked store is
                # microcoded (on an AMD EPYC the 1x1 tiles ran 1.5x slower for it); only a row cut
                # short masks them.
                with builder.if_else(whole) as (plain, masked):
                    with plain:
                        for v in range(VECTORS):
                            at = builder.bitcast(builder.gep(py, [builder.add(row, ysteps[v])]), vt.as_pointer())
                            builder.store(minus0, res)
                            with builder.if_then(has_res):
                                rat = builder.gep(pr, [builder.add(row, ysteps[v])])
                                builder.store(builder.load(builder.bitcast(rat, vt.as_pointer()), align=tile.size),
                                              res)
                            value = _epilogue(builder, accs[m][v], sv, bv, builder.load(res), relus, zero)
                            builder.store(value, at, align=tile.size)
                    with masked:
                        none = ir.Constant(tile.mask_t, [0] * tile.width)
                        for v in range(VECTORS):
                            at = builder.add(row, ysteps[v])
                            live = builder.select(has_res, masks[v], none)
                            r = tile.load(builder, builder.gep(pr, [at]), live, minus0)
                            value = _epilogue(builder, accs[m][v], sv, bv, r, relus, zero)
                            tile.store(builder, value, builder.gep(py, [at]), masks[v])
        return context.get_dummy_value()

    return sig, codegen
