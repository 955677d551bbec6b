"""conv2d's shifted-taps path (conv2d_shift_cpu): where the default takes it, and its outputs
against PyTorch and a float64 reference, NaN and Inf included. Its bounds and every padding
and dilation are swept in test_conv2d_bounds (forced), its fused relu and residual in
test_fuse_inference."""

import numpy as np
import pytest

import numbacnn as nc
from _conv_cases import cpu_path, naive
from numbacnn.layers._taps_cpu import VECTOR_BYTES

Conv2d = nc.get_layer("conv2d")


def test_conv2d_cpu_inference_takes_shifted_taps_at_batch_one_and_where_winograd_is_not():
    # Batch-1 inference at stride 1, any channel count (vgg_small at batch 1: 660-672 -> 474-485
    # us); larger batches where Winograd does not apply (lenet5's 1 -> 6 and 6 -> 16 5x5 at
    # batch 256: 2.44-2.58 -> 1.72-1.79 ms); Winograd keeps its batches (conv2d_plan).
    lenet = Conv2d(out_channels=6, kernel_size=5, padding=2)
    vgg = Conv2d(out_channels=128, kernel_size=3, padding=1)
    assert cpu_path(lenet, (1, 1, 28, 28), backward=False) == "shift"
    assert cpu_path(lenet, (256, 1, 28, 28), backward=False) == "shift"
    assert cpu_path(vgg, (1, 64, 8, 8), backward=False) == "shift"
    assert cpu_path(vgg, (32, 64, 8, 8), backward=False) == "winograd"
    assert cpu_path(Conv2d(out_channels=16, kernel_size=5), (256, 6, 14, 14), backward=False) == "shift"
    # a training step: where im2col would run, the forward on shifted taps (its backward im2col's)
    assert cpu_path(lenet, (32, 1, 28, 28)) == "shift"
    assert cpu_path(vgg, (1, 64, 8, 8)) != "shift"
    assert cpu_path(Conv2d(out_channels=16, kernel_size=5), (32, 6, 14, 14)) == "pixel"
    assert cpu_path(lenet, (1, 1, 28, 28), "float64", backward=False) == "im2col"
    strided = Conv2d(out_channels=6, kernel_size=3, stride=2, padding=1)
    assert cpu_path(strided, (1, 32, 16, 16), backward=False) == "shift"
    assert cpu_path(strided, (8, 32, 16, 16), backward=False) == "shift"
    assert cpu_path(strided, (8, 32, 16, 16)) == "im2col"  # training: shifted taps' forward at stride 1 only
    assert cpu_path(Conv2d(out_channels=6, kernel_size=1), (1, 3, 8, 8), backward=False) != "shift"  # 1x1
    # 1x1 from few channels to many, batches of two or more: the tile straight into y, where
    # the tile is AVX-512's 8 rows by 48 columns; on narrower vectors (4 by 16) im2col's product
    # 3x3 stride 1 of at most 32 channels on rows of two or more whole AVX2 tiles (16 columns):
    # the taps a row at a time there, Winograd elsewhere (conv2d_plan.SHIFT3X3_MAX_CHANNELS)
    few = Conv2d(out_channels=16, kernel_size=3, padding=1)
    assert cpu_path(few, (8, 16, 32, 32), backward=False) == ("shift" if VECTOR_BYTES == 32 else "winograd")
    assert cpu_path(few, (8, 16, 16, 16), backward=False) == "winograd"  # one tile a row
    assert cpu_path(Conv2d(out_channels=64, kernel_size=3, padding=1), (8, 16, 32, 32), backward=False) == "winograd"
    assert cpu_path(few, (8, 16, 32, 32)) == "winograd"  # training
    wide = Conv2d(out_channels=64, kernel_size=1)
    assert cpu_path(wide, (8, 16, 32, 32), backward=False) == ("shift" if VECTOR_BYTES == 64 else "im2col")
    assert cpu_path(wide, (1, 16, 32, 32), backward=False) != "shift"
    assert cpu_path(wide, (8, 64, 32, 32), backward=False) != "shift"
    assert cpu_path(wide, (8, 16, 32, 32)) != "shift"  # training
    assert cpu_path(Conv2d(out_channels=16, kernel_size=1), (8, 16, 32, 32), backward=False) != "shift"
    assert cpu_path(Conv2d(out_channels=6, kernel_size=(1, 5)), (1, 3, 1, 28), backward=False) != "shift"  # conv1d
    assert cpu_path(Conv2d(out_channels=6, kernel_size=3, groups=2), (1, 4, 8, 8), backward=False) != "shift"


@pytest.mark.parametrize("stride,groups,dilation", [(2, 1, 1), (3, 1, 1), ((2, 1), 2, 1), (2, 1, 2)])
def test_conv2d_forced_shift_runs_strided_and_grouped_convolutions(stride, groups, dilation):
    # Strides through the padded sample's phase planes (a plane per row and column phase);
    # groups through their own channels and weights. Against a float64 loop reference.
    from numbacnn.layers.conv2d_cpu import force_path

    g = nc.Graph()
    g.conv2d(g.input((4, 11, 9)), out_channels=6, kernel_size=3, stride=stride, padding=1, groups=groups,
             dilation=dilation, name="c")
    m = nc.Model(g, seed=1, dtype="float64")
    x = np.random.default_rng(2).standard_normal((2, 4, 11, 9))
    with force_path("shift"):
        y = m.forward(x)
    plans = [p for ctx in m._executor.thread_pass().folds.ctxs for p in ctx._plans.values()]
    assert [p.path for p in plans if hasattr(p, "path")] == ["shift"]
    w, b = m.params["c.weight"], m.params["c.bias"]
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    K, Cg = 6, 4 // groups
    want = np.zeros(y.shape)
    for k in range(K):
        c0 = k // (K // groups) * Cg
        for p in range(y.shape[2]):
            for q in range(y.shape[3]):
                span = 2 * dilation + 1
                win = xp[:, c0:c0 + Cg, p * sh:p * sh + span:dilation, q * sw:q * sw + span:dilation]
                want[:, k, p, q] = (win * w[k]).sum(axis=(1, 2, 3)) + b[k]
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


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


def test_the_tiles_tap_loop_keeps_its_accumulators_in_registers():
    # ROWS x VECTORS accumulators, VECTORS loads of x and a broadcast weight must fit the
    # register file: 4 x 3 on AVX2 (16 registers) spilled two accumulators to the stack, a
    # store and a load each every tap (32->32 3x3 at batch 1: 290 against 167 us). The x86-64
    # machine code of the tap loops (the blocks holding the tile's multiply-adds) reads and
    # writes no stack slot.
    import platform
    import re

    from numba import njit

    from numbacnn.layers import _taps_cpu

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("reads x86-64 machine code")

    @njit
    def tile(x, xo, offs, J, w, wo, ldw, rows, acc, lanes):
        _taps_cpu.taps(x, xo, offs, J, w, wo, ldw, rows, acc, lanes)

    f32, i64 = np.zeros(64, np.float32), np.int64(0)
    tile(f32, i64, np.zeros(1, np.int64), np.int64(1), f32, i64, np.int64(1), np.int64(1), f32, np.int64(1))
    asm = next(iter(tile.inspect_asm().values()))
    blocks = re.split(r"\n\.?L\w+:", asm)  # at each label
    fmas = _taps_cpu.ROWS * _taps_cpu.VECTORS
    loops = [b for b in blocks if len(re.findall(r"\bvfmadd\w*ps\b", b)) >= fmas]
    if not loops:
        pytest.skip("no fused multiply-add on this machine: the tile's loops are not one block each")
    assert len(loops) == 2  # whole tiles' plain loads, cut tiles' masked ones
    for loop in loops:
        assert "(%rsp)" not in loop, loop


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_taps_out_tile_against_numpy(dtype):
    # The tile written straight to y: scale (a folded batch norm's) and bias (or none),
    # residual, relu's rule (NaN kept, -0.0 to 0), nothing touched past its rows and lanes (y
    # and r are fenced with sentinels), rows at every count, against float64 NumPy.
    from numba import njit

    from numbacnn.layers import _taps_cpu

    @njit
    def tile(x, xo, offs, J, w, wo, ldw, rows, lanes, y, yo, ldy, b, sc, bo, r, flags):
        _taps_cpu.taps_out(x, xo, offs, J, w, wo, ldw, rows, lanes, y, yo, ldy, b, sc, bo, r, flags)

    rng = np.random.default_rng(6)
    cols = _taps_cpu.VECTORS * _taps_cpu.VECTOR_BYTES // np.dtype(dtype).itemsize
    R = _taps_cpu.ROWS
    for trial in range(64):
        flags = trial % 16
        J = int(rng.integers(1, 20))
        offs = rng.integers(0, 100, J).astype(np.int64)
        lanes, rows = cols if trial % 3 == 0 else int(rng.integers(1, cols + 1)), int(rng.integers(1, R + 1))
        x = rng.standard_normal(int(offs.max()) + lanes + 3).astype(dtype)
        x[int(rng.integers(0, x.size))] = np.nan  # a NaN in some sums
        xo = int(rng.integers(0, x.size - int(offs.max()) - lanes + 1))
        w = rng.standard_normal(J * R).astype(dtype)
        w[:J] = 0.0  # row 0 sums to +-0.0 (or NaN): relu and the -0.0 identity show
        b = rng.standard_normal(R + 2).astype(dtype)
        sc = rng.uniform(-2, 2, R + 2).astype(dtype)
        sc[1] = -1.0  # row 0's +0.0 sum scaled to -0.0: the bias's -0.0 keeps it, relu takes it to 0
        ldy = lanes + int(rng.integers(0, 5))
        y = np.full(3 + R * ldy + 3, 7.0, dtype)  # 7.0: untouched
        r = rng.standard_normal(y.size).astype(dtype)
        tile(x, xo, offs, J, w, 0, J, rows, lanes, y, 3, ldy, b, sc, 1, r, flags)
        want = np.full(y.size, 7.0)
        for m in range(rows):
            s = np.zeros(lanes)
            for j in range(J):
                s = s + float(w[m * J + j]) * x[xo + offs[j]:xo + offs[j] + lanes].astype(np.float64)
            s = s * (float(sc[1 + m]) if flags & 8 else 1.0) + (float(b[1 + m]) if flags & 1 else -0.0)
            at = 3 + m * ldy
            if flags & 2:
                s = s + r[at:at + lanes]
            if flags & 4:
                s = np.where(s <= 0, 0.0, s)
            want[at:at + lanes] = s
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol * J, err_msg=f"trial {trial}: flags {flags} "
                                   f"J {J} rows {rows} lanes {lanes}")
        zeros = want == 0
        assert np.array_equal(np.signbit(y[zeros]), np.signbit(want[zeros])), f"trial {trial}: the sign of zero"


def _model(C, K, kernel, pad, shape, relu):
    g = nc.Graph()
    h = g.conv2d(g.input((C, *shape)), out_channels=K, kernel_size=kernel, padding=pad, name="c")
    g.output(g.relu(h) if relu else h)
    return nc.Model(g, seed=3)


@pytest.mark.parametrize("C,K,kernel,pad,shape", [(1, 6, 5, 2, (28, 28)), (4, 8, 5, 2, (16, 16)), (3, 8, 3, 1, (9, 7)),
                                                  (2, 5, (2, 4), 0, (5, 11)), (1, 1, 5, 2, (1, 1)),
                                                  (20, 19, 3, 1, (13, 10)), (16, 33, 5, 0, (12, 30))])
@pytest.mark.parametrize("batch", [1, 3])
def test_conv2d_shift_against_a_float64_reference(C, K, kernel, pad, shape, batch):
    # The default's pick in inference at batch 1 (tiles of several channel blocks and a
    # partial one, grids of several column blocks), split over the threads or run in the
    # caller; forced at batch 3, which cuts the batch over the threads unevenly.
    from numbacnn.layers.conv2d_cpu import force_path

    m = _model(C, K, kernel, pad, shape, relu=False)
    x = np.random.default_rng(C * K).standard_normal((batch, C, *shape)).astype(np.float32)
    with force_path("auto" if batch == 1 else "shift"):
        y = m.forward(x)
    plans = [p for ctx in m._executor.thread_pass().folds.ctxs for p in ctx._plans.values()]
    assert [p.path for p in plans if hasattr(p, "path")] == ["shift"]
    w, b = m.params["c.weight"].astype(np.float64), m.params["c.bias"].astype(np.float64)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if kh == kw:
        want = naive(x.astype(np.float64), w, b, None, pad)[0]
        np.testing.assert_allclose(y, want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(y, m.forward(x, grad=True), rtol=2e-5, atol=2e-5)  # the training forward: im2col


def test_conv2d_shift_like_torch_with_nan_and_inf():
    torch = pytest.importorskip("torch")
    from numbacnn.layers.conv2d_cpu import force_path

    m = _model(1, 6, 5, 2, (28, 28), relu=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    x[0, 0, 3, 4], x[0, 0, 20, 0], x[1, 0, 27, 27], x[1, 0, 10, 10] = np.nan, np.inf, -np.inf, 1e30
    with force_path("shift"):
        y = m.forward(x)
    want = torch.relu(torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(m.params["c.weight"]),
                                                 torch.tensor(m.params["c.bias"]), padding=2)).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(want))
    fine = np.isfinite(want)
    np.testing.assert_allclose(y[fine], want[fine], rtol=1e-5, atol=1e-5 * np.abs(want[fine]).max())
    assert np.isnan(y).any() and np.isinf(y).any() and (y == 0).any()


_NARROW = """
import sys
import numpy as np
import numbacnn as nc
from numbacnn.layers import _taps_cpu, conv2d_shift_cpu
from numbacnn.layers.conv2d_cpu import force_path

width = int(sys.argv[1])  # the machine's vector bytes this child compiles for, before any kernel
for module in (_taps_cpu, conv2d_shift_cpu):
    module.VECTOR_BYTES, module.ROWS = width, _taps_cpu.tile_shape(width)[0]
_taps_cpu.VECTORS = _taps_cpu.tile_shape(width)[1]
rng = np.random.default_rng(width)
for dtype in ("float32", "float64"):
    for C, K, k, stride, groups, dilation, H, W in ((3, 9, 3, 1, 1, 1, 11, 13), (5, 4, 5, 2, 1, 1, 12, 9),
                                                    (16, 20, 1, 1, 1, 1, 6, 7), (4, 6, 3, 2, 2, 2, 9, 10)):
        g = nc.Graph()
        g.conv2d(g.input((C, H, W)), out_channels=K, kernel_size=k, stride=stride, padding=k // 2, groups=groups,
                 dilation=dilation, name="c")
        m = nc.Model(g, seed=width, dtype=dtype)
        x = rng.standard_normal((2, C, H, W)).astype(dtype)
        with force_path("shift"):
            y = m.forward(x)
        with force_path("im2col"):
            m2 = nc.Model(g, seed=width, dtype=dtype)
            want = m2.forward(x)
        tol = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol, err_msg=f"{dtype} {C} {K} {k} {stride} {groups}")
ir = "".join(conv2d_shift_cpu._tiles.inspect_llvm().values())
assert f"llvm.masked.load.v{width // 4}f32" in ir and f"llvm.masked.load.v{width // 8}f64" in ir
assert ("llvm.masked.load.v16f32" in ir) == (width == 64)
print("ok", _taps_cpu.ROWS, _taps_cpu.VECTORS, _taps_cpu.VECTOR_BYTES)
"""


@pytest.mark.parametrize("width", [16, 32, 64])
def test_every_machines_tiles_match_im2col(width, tmp_path):
    # The tile's rows and vector width follow the host (AVX-512: 8 rows of 3 64-byte vectors;
    # AVX: 4 of 2 32-byte ones; else 4 of 2 16-byte ones). Each is compiled in a child process
    # with a cache of its own (the widths are constants of the compiled kernels), forced on
    # shift, float32 and float64, strided, grouped and dilated, against im2col.
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _NARROW, str(width)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["ok", *(["8", "3"] if width == 64 else ["4", "2"]), str(width)]


_STALE = """
import numpy as np
import numbacnn as nc
from numbacnn.layers import _taps_cpu, conv2d_shift_cpu
from numbacnn.layers.conv2d_cpu import force_path

def run(H):
    g = nc.Graph()
    g.conv2d(g.input((5, H, H)), out_channels=13, kernel_size=3, padding=1, name="c")
    x = np.random.default_rng(H).standard_normal((1, 5, H, H)).astype(np.float32)
    with force_path("shift"):
        y = nc.Model(g, seed=0).forward(x)
    with force_path("im2col"):
        want = nc.Model(g, seed=0).forward(x)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)

run(9)  # compiles the kernels for this machine's width
for module in (_taps_cpu, conv2d_shift_cpu):  # Python now believes another width (a shared cache's view)
    module.VECTOR_BYTES, module.ROWS = 16, 4
run(10)  # the compiled kernels, a new plan: their own tile count, nothing past y or the weights
print("ok")
"""


def test_a_kernel_compiled_for_another_width_keeps_its_own_tile_count(tmp_path):
    # A cache holds kernels compiled with one machine's ROWS and vector width; a process whose
    # Python side reads other values (another machine sharing the cache) must not hand them a
    # tile count of its own: the kernels count their tiles themselves (the count passed from
    # Python before ran 4x the tiles, past the weights and y).
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _STALE], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.split() == ["ok"], out.stderr[-3000:]


@pytest.mark.parametrize("k,stride,pad,groups", [(3, 1, 1, 1), (5, 1, 2, 1), (3, 2, 1, 1), (3, 1, 1, 2), (2, 1, 0, 1)])
def test_output_rows_a_whole_number_of_tiles_go_straight_to_y(k, stride, pad, groups):
    # Output rows of one or two tiles' columns (AVX2: 16, 32) take the tiles a row at a time,
    # written straight to y with the bias, a folded batch norm's scale, the join's residual and
    # relu (conv2d_shift_cpu._rowwise); against the float64 model (im2col), NaN and Inf included.
    from numbacnn.layers import _taps_cpu
    from numbacnn.layers.conv2d_cpu import force_path

    NR = _taps_cpu.VECTORS * _taps_cpu.VECTOR_BYTES // 4
    for Q in (NR, 2 * NR):
        W = (Q - 1) * stride + k - 2 * pad
        g = nc.Graph()
        x = g.input((4, 6, W))
        conv = dict(out_channels=6, kernel_size=k, stride=stride, padding=pad)
        a = g.batch_norm2d(g.conv2d(x, groups=groups, name="a", **conv), name="bn")
        g.output(g.relu(g.add(g.conv2d(x, name="s", **conv), a)))
        model = nc.Model(g, seed=Q + k)
        model.buffers["bn.running_mean"][...] = np.linspace(-0.5, 0.5, 6)
        model.buffers["bn.running_var"][...] = np.linspace(0.5, 2.0, 6)
        ref = model.astype("float64")
        xs = np.random.default_rng(Q).standard_normal((3, 4, 6, W)).astype(np.float32)
        xs[1, 2, 1, 3], xs[2, 0, 5, W - 1] = np.nan, np.inf
        with force_path("shift"):
            y = model.forward(xs)
        assert y.shape[-1] == Q
        want = ref.forward(xs.astype(np.float64))
        np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
        fine = np.isfinite(want)
        np.testing.assert_allclose(y[fine], want[fine], rtol=1e-4, atol=1e-4)


def test_a_wide_1x1_convolution_writes_its_bias_residual_and_relu_from_the_tile():
    # 16 -> 64 1x1 at batch 3 (shifted taps, AVX-512's default there, forced: written straight
    # to y, the grid is y's plane), the join's add and relu fused into the later conv: against
    # the float64 model (im2col), a NaN and an infinity included (relu keeps NaN).
    from numbacnn.layers.conv2d_cpu import force_path

    g = nc.Graph()
    x = g.input((16, 6, 5))
    a = g.conv2d(x, out_channels=64, kernel_size=1, name="a")
    p = g.conv2d(x, out_channels=64, kernel_size=1, bias=False, name="p")
    g.output(g.relu(g.add(p, a)))
    model = nc.Model(g, seed=7)
    ref = model.astype("float64")
    xs = np.random.default_rng(8).standard_normal((3, 16, 6, 5)).astype(np.float32)
    xs[1, 3, 2, 2], xs[2, 0, 0, 4] = np.nan, np.inf
    with force_path("shift"):
        y = model.forward(xs)
    paths = [p.path for ctx in model._executor.thread_pass().folds.ctxs for p in ctx._plans.values()
             if hasattr(p, "path")]
    assert paths == ["shift", "shift"]
    want = ref.forward(xs.astype(np.float64))
    assert np.isnan(y).sum() == np.isnan(want).sum() > 0
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
