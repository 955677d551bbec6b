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


@pytest.mark.parametrize("host_gains", [True, False])
def test_batch_one_takes_winograd_for_large_3x3_only_where_the_host_measured_it(monkeypatch, host_gains):
    # Zen 4 (conv2d_plan.BATCH1_WINOGRAD): a 3x3 of C*K*P*Q >= 2**20 from 8x8 outputs and 16
    # channels runs Winograd's rows at batch 1 (vgg_small's 32->32, 64->64 and 128->128: the model
    # 569-572 -> 488-491 us); less work, few pixels, few channels, 5x5 and other hosts keep theirs.
    # Each check below misses one condition alone.
    from numbacnn.layers import conv2d_plan

    monkeypatch.setattr(conv2d_plan, "BATCH1_WINOGRAD", host_gains)
    three = {K: Conv2d(out_channels=K, kernel_size=3, padding=1) for K in (16, 32, 64, 128, 512)}
    large = [(three[32], (1, 32, 32, 32)), (three[64], (1, 64, 16, 16)), (three[128], (1, 128, 8, 8))]
    for layer, shape in large:
        assert cpu_path(layer, shape, backward=False) == ("winograd" if host_gains else "shift"), shape
    assert cpu_path(three[128], (1, 64, 8, 8), backward=False) == "shift"  # 2**19: below the work
    assert cpu_path(three[512], (1, 512, 2, 2), backward=False) == "shift"  # one tile, three quarters unused
    assert cpu_path(three[32], (1, 8, 64, 64), backward=False) == "shift"  # 2**20, but 8 channels in
    assert cpu_path(Conv2d(out_channels=64, kernel_size=5, padding=2), (1, 64, 16, 16), backward=False) == "shift"

    # The model takes that plan, and its output is the convolution's (float64 loop reference).
    m = _model(64, 64, 3, 1, (16, 16), relu=True)
    x = np.random.default_rng(4).standard_normal((1, 64, 16, 16)).astype(np.float32)
    y = m.forward(x)
    plans = [p for ctx in m._executor.thread_pass().folds.ctxs for p in ctx._plans.values()]
    assert [p.path for p in plans if hasattr(p, "path")] == ["winograd" if host_gains else "shift"]
    w, b = m.params["c.weight"].astype(np.float64), m.params["c.bias"].astype(np.float64)
    want = np.maximum(naive(x.astype(np.float64), w, b, None, 1)[0], 0)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)

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
    # few channels (conv2d_plan.SHIFT_TRAIN_MAX_PRODUCT, AVX2): shifted taps too, the backward pixel-major's
    lenet2 = Conv2d(out_channels=16, kernel_size=5)
    assert cpu_path(lenet2, (32, 6, 14, 14)) == ("shift" if VECTOR_BYTES == 32 else "pixel")
    assert cpu_path(Conv2d(out_channels=128, kernel_size=5), (32, 6, 14, 14)) == "pixel"
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
    # With AVX-512's tile, 16 channels in and out on 32x32 or more (SHIFT3X3_WIDE_MAX_CHANNELS).
    few = Conv2d(out_channels=16, kernel_size=3, padding=1)
    assert cpu_path(few, (8, 16, 32, 32), backward=False) == ("shift" if VECTOR_BYTES in (32, 64) else "winograd")
    assert cpu_path(few, (8, 16, 16, 16), backward=False) == "winograd"  # one tile a row; AVX-512: 256 pixels
    assert cpu_path(few, (8, 16, 24, 48), backward=False) == ("shift" if VECTOR_BYTES in (32, 64) else "winograd")
    assert cpu_path(few, (8, 16, 22, 46), backward=False) == "winograd"  # 1012 outputs (AVX2: 46 columns)
    assert cpu_path(Conv2d(out_channels=32, kernel_size=3, padding=1), (8, 16, 32, 32),
                    backward=False) == ("shift" if VECTOR_BYTES == 32 else "winograd")
    assert cpu_path(Conv2d(out_channels=16, kernel_size=5, padding=2), (8, 16, 32, 32), backward=False) == "winograd"
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
from numbacnn import _passes
from numbacnn.layers import _taps_cpu, conv2d_cpu, conv2d_shift_cpu
from numbacnn.layers.conv2d_cpu import force_path

conv2d_cpu.SPLIT_MIN_MACS = _passes.PARALLEL_MIN = 0  # batch 1 splits its tiles over the threads, however small
width = int(sys.argv[1])  # the machine's vector bytes this child compiles for, before any kernel
for module in (_taps_cpu, conv2d_shift_cpu):
    module.VECTOR_BYTES, module.ROWS = width, _taps_cpu.tile_shape(width)[0]
_taps_cpu.VECTORS = _taps_cpu.tile_shape(width)[1]
rng = np.random.default_rng(width)
for dtype in ("float32", "float64"):
    lane = width // np.dtype(dtype).itemsize  # rows a whole number of these go densely on AVX2 (_dense)
    for C, K, k, stride, groups, dilation, H, W in ((3, 9, 3, 1, 1, 1, 11, 13), (5, 4, 5, 2, 1, 1, 12, 9),
                                                    (16, 20, 1, 1, 1, 1, 6, 7), (4, 6, 3, 2, 2, 2, 9, 10),
                                                    (3, 6, 3, 1, 1, 1, 7, lane), (5, 7, 3, 2, 1, 1, 9, 2 * lane),
                                                    (2, 5, 5, 1, 1, 1, 5, 3 * lane)):
        g = nc.Graph()
        g.conv2d(g.input((C, H, W)), out_channels=K, kernel_size=k, stride=stride, padding=k // 2, groups=groups,
                 dilation=dilation, name="c")
        m, m2 = nc.Model(g, seed=width, dtype=dtype), nc.Model(g, seed=width, dtype=dtype)
        for n in (2, 1):  # batch 1: the tiles split over the threads (and rows a vector wide, a vector a row)
            x = rng.standard_normal((n, C, H, W)).astype(dtype)
            with force_path("shift"):
                y = m.forward(x)
            with force_path("im2col"):
                want = m2.forward(x)
            tol = 1e-5 if dtype == "float32" else 1e-12
            np.testing.assert_allclose(y, want, rtol=tol, atol=tol,
                                       err_msg=f"{dtype} {C} {K} {k} {stride} {groups} {n}")
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
def test_output_rows_a_whole_number_of_tiles_go_straight_to_y(k, stride, pad, groups, monkeypatch):
    # Output rows a whole number of vectors wide (AVX2: 8 at batch 1, 16, 24, 32) take tiles
    # over y's plane in row order, a tile's second vector in the next row where a row ends
    # mid-tile (conv2d_shift_cpu._dense; elsewhere rows of whole tiles only), written
    # straight to y with the bias, a folded batch norm's scale, the join's residual and relu; at
    # batch 3 and 1 (the tiles split over the threads, as a larger model's would); against the
    # float64 model (im2col), NaN and Inf included.
    from numbacnn import _passes
    from numbacnn.layers import _taps_cpu, conv2d_cpu
    from numbacnn.layers.conv2d_cpu import force_path

    monkeypatch.setattr(conv2d_cpu, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(_passes, "PARALLEL_MIN", 0)

    NR = _taps_cpu.VECTORS * _taps_cpu.VECTOR_BYTES // 4
    lane = _taps_cpu.VECTOR_BYTES // 4
    for Q in (lane, NR, NR + lane, 2 * NR):  # AVX2: rows of 1 to 4 vectors, the tiles across rows at 24
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
        for batch in (xs, xs[1:2]):
            with force_path("shift"):
                y = model.forward(batch)
            assert y.shape[-1] == Q
            want = ref.forward(batch.astype(np.float64))
            np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
            fine = np.isfinite(want)
            np.testing.assert_allclose(y[fine], want[fine], rtol=1e-4, atol=1e-4)


def test_a_wide_1x1_convolution_writes_its_bias_residual_and_relu_from_the_tile(monkeypatch):
    # 16 -> 64 1x1 at batch 3 (shifted taps, AVX-512's default there, forced: written straight
    # to y, the grid is y's plane), the join's add and relu fused into the later conv (not
    # joined with the earlier one, numbacnn._joined, so that each conv keeps its plan where this
    # test reads it): against the float64 model (im2col), a NaN and an infinity included (relu
    # keeps NaN).
    from numbacnn import _joined
    from numbacnn.layers.conv2d_cpu import force_path

    monkeypatch.setattr(_joined, "pairs", lambda *args: [])
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
