"""The shifted-taps register tile alone (numbacnn.layers._taps_cpu): its sums against float64
NumPy at every row count and lane count, vectors side by side or a row apart, its epilogue
(scale, bias, residual, relu's rule, the sign of zero), nothing touched past its rows and
lanes, and its tap loops' accumulators kept in registers. The convolutions built on it are
tested in test_conv2d_shift."""

import numpy as np
import pytest


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_taps_tile_against_numpy(dtype):
    # The register tile alone: every row count (the rows past it repeat the last), lanes from
    # one to a full tile (masked loads below it, plain ones for a whole tile: every third trial),
    # offsets in any order, against a float64 NumPy sum.
    from numba import njit

    from numbacnn.layers import _taps_cpu

    @njit
    def tile(x, xo, offs, J, w, wo, ldw, rows, acc, lanes):
        _taps_cpu.taps(x, xo, offs, J, w, wo, ldw, rows, acc, lanes)

    rng = np.random.default_rng(5)
    cols = _taps_cpu.VECTORS * _taps_cpu.VECTOR_BYTES // np.dtype(dtype).itemsize
    for trial in range(30):
        J = int(rng.integers(1, 40))
        offs = rng.integers(0, 200, J).astype(np.int64)
        lanes = cols if trial % 3 == 0 else int(rng.integers(1, cols + 1))  # whole tiles load x plainly
        rows = int(rng.integers(1, _taps_cpu.ROWS + 1))
        x = rng.standard_normal(int(offs.max()) + lanes + int(rng.integers(0, 3))).astype(dtype)
        ldw = J + int(rng.integers(0, 4))
        w = rng.standard_normal(ldw * rows + 5).astype(dtype)
        acc = np.full(_taps_cpu.ROWS * cols, np.nan, dtype)
        xo = int(rng.integers(0, x.size - int(offs.max()) - lanes + 1))
        xo = min(xo, x.size - int(offs.max()) - lanes)
        tile(x, xo, offs, J, w, 2, ldw, rows, acc, lanes)
        want = np.zeros((_taps_cpu.ROWS, cols))
        for m in range(_taps_cpu.ROWS):
            r = 2 + min(m, rows - 1) * ldw
            for j in range(J):
                want[m, :lanes] += float(w[r + j]) * x[xo + offs[j]:xo + offs[j] + lanes].astype(np.float64)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(acc.reshape(_taps_cpu.ROWS, cols), want, rtol=tol, atol=tol * J,
                                   err_msg=f"trial {trial}: J {J} rows {rows} lanes {lanes}")


@pytest.mark.parametrize("which", ["taps", "taps_out"])
def test_the_tiles_tap_loop_keeps_its_accumulators_in_registers(which):
    # ROWS x VECTORS accumulators, VECTORS loads of x and a broadcast weight must fit the
    # register file: 4 x 3 on AVX2 (16 registers) spilled two accumulators to the stack, a
    # store and a load each every tap (32->32 3x3 at batch 1: 290 against 167 us). The x86-64
    # machine code of the tap loops (the blocks holding the tile's multiply-adds) reads and
    # writes no stack slot, in both tiles (taps_out's vectors a runtime step apart).
    import platform
    import re

    from numba import njit

    from numbacnn.layers import _taps_cpu

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("reads x86-64 machine code")

    @njit
    def sums(x, xo, offs, J, w, wo, ldw, rows, acc, lanes):
        _taps_cpu.taps(x, xo, offs, J, w, wo, ldw, rows, acc, lanes)

    @njit
    def out(x, xo, offs, J, w, wo, ldw, rows, lanes, y, yo, ldy, b, sc, bo, r, flags, xstep):
        _taps_cpu.taps_out(x, xo, offs, J, w, wo, ldw, rows, lanes, y, yo, ldy, b, sc, bo, r, flags, xstep)

    # Arrays that hold a whole tile (ROWS by its columns; acc and y are written in full): 64
    # floats, AVX2's tile, took AVX-512's 384 past their end, and the heap broke tests later.
    size = 2 * _taps_cpu.ROWS * _taps_cpu.tile_columns(4)
    f32, i64, one, offs = np.zeros(size, np.float32), np.int64(0), np.int64(1), np.zeros(1, np.int64)
    if which == "taps":
        tile = sums
        tile(f32, i64, offs, one, f32, i64, one, one, f32, one)
    else:
        tile = out
        tile(f32, i64, offs, one, f32, i64, one, one, one, f32, i64, one, f32, f32, i64, f32, i64, np.int64(8))
    asm = next(iter(tile.inspect_asm().values()))
    parts = re.split(r"\n(\.?L\w+):", asm)  # at each label: [before, label, block, label, block, ...]
    fmas = _taps_cpu.ROWS * _taps_cpu.VECTORS
    loops = []
    for label, block in zip(parts[1::2], parts[2::2]):
        # A loop's block ends at its branch back to its label: code that falls through after
        # it (the exit, where LLVM's znver4 schedule puts the spilled pointers' reloads) is
        # not the loop's.
        latch = re.search(rf"\n\tj\w+\s+{re.escape(label)}\b", block)
        block = block[:latch.end()] if latch else block
        if len(re.findall(r"\bvfmadd\w*ps\b", block)) >= fmas:
            loops.append(block)
    if not loops:
        pytest.skip("no fused multiply-add on this machine: the tile's loops are not one block each")
    assert len(loops) == 2  # whole tiles' plain loads, cut tiles' masked ones
    for loop in loops:
        assert "(%rsp)" not in loop, loop


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_taps_out_tile_against_numpy(dtype):
    # The tile written straight to y: scale (a folded batch norm's) and bias (or none),
    # residual, relu's rule (NaN kept, -0.0 to 0), nothing touched past its rows and lanes (y
    # and r are fenced with sentinels), rows at every count, its vectors side by side or (every
    # other trial) x's each xstep values after the one before, y's side by side (a tile across
    # two output rows: conv2d_shift_cpu._dense), against float64 NumPy.
    from numba import njit

    from numbacnn.layers import _taps_cpu

    @njit
    def tile(x, xo, offs, J, w, wo, ldw, rows, lanes, y, yo, ldy, b, sc, bo, r, flags, xstep):
        _taps_cpu.taps_out(x, xo, offs, J, w, wo, ldw, rows, lanes, y, yo, ldy, b, sc, bo, r, flags, xstep)

    rng = np.random.default_rng(6)
    width = _taps_cpu.VECTOR_BYTES // np.dtype(dtype).itemsize
    cols, R = _taps_cpu.VECTORS * width, _taps_cpu.ROWS
    for trial in range(96):
        flags = trial % 16
        J = int(rng.integers(1, 20))
        offs = rng.integers(0, 100, J).astype(np.int64)
        lanes, rows = cols if trial % 3 == 0 else int(rng.integers(1, cols + 1)), int(rng.integers(1, R + 1))
        xstep = width if trial % 2 == 0 else width + int(rng.integers(0, 6))
        n = np.arange(lanes)
        xi, yi = n // width * xstep + n % width, n  # lane n's offsets in x and y
        x = rng.standard_normal(int(offs.max()) + int(xi[-1]) + 4).astype(dtype)
        x[int(rng.integers(0, x.size))] = np.nan  # a NaN in some sums
        xo = int(rng.integers(0, x.size - int(offs.max()) - int(xi[-1])))
        w = rng.standard_normal(J * R).astype(dtype)
        w[:J] = 0.0  # row 0 sums to +-0.0 (or NaN): relu and the -0.0 identity show
        b = rng.standard_normal(R + 2).astype(dtype)
        sc = rng.uniform(-2, 2, R + 2).astype(dtype)
        sc[1] = -1.0  # row 0's +0.0 sum scaled to -0.0: the bias's -0.0 keeps it, relu takes it to 0
        ldy = int(yi[-1]) + 1 + int(rng.integers(0, 5))
        y = np.full(3 + R * ldy + 3, 7.0, dtype)  # 7.0: untouched
        r = rng.standard_normal(y.size).astype(dtype)
        tile(x, xo, offs, J, w, 0, J, rows, lanes, y, 3, ldy, b, sc, 1, r, flags, xstep)
        want = np.full(y.size, 7.0)
        for m in range(rows):
            s = np.zeros(lanes)
            for j in range(J):
                s = s + float(w[m * J + j]) * x[xo + offs[j] + xi].astype(np.float64)
            s = s * (float(sc[1 + m]) if flags & 8 else 1.0) + (float(b[1 + m]) if flags & 1 else -0.0)
            at = 3 + m * ldy + yi
            if flags & 2:
                s = s + r[at]
            if flags & 4:
                s = np.where(s <= 0, 0.0, s)
            want[at] = s
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol * J, err_msg=f"trial {trial}: flags {flags} "
                                   f"J {J} rows {rows} lanes {lanes} xstep {xstep}")
        zeros = want == 0
        assert np.array_equal(np.signbit(y[zeros]), np.signbit(want[zeros])), f"trial {trial}: the sign of zero"
