"""conv2d's Winograd path at batch 1 in inference: one sample's tile rows cut into chunks.

``conv2d_forward_winograd_rows`` runs when an inference plan at batch 1 has more chunks than
samples (conv2d_cpu.conv2d_plan, ``WINOGRAD_SPLIT_MIN_ROWS``): each chunk owns a run of tile
rows and its own V, M, pix and lanes, and all of them read the one padded image, whose rows
are made in a parallel loop before. These tests drive the kernel with more chunks than the
machine has threads (the chunks are the units of work, whatever runs them), at sizes no chunk
count divides and with blocks shorter than a chunk, against loops over output pixels; fence
every array on random geometries; and check the plan's choice and the NaN/Inf fallback.
"""

import numpy as np
import pytest

import numbacnn as nc
import numbacnn.layers.conv2d_cpu as conv2d_cpu_module
from numbacnn.layers import conv2d_winograd_cpu
from numbacnn.layers.conv2d_cpu import WINOGRAD_SPLIT_MIN_ROWS, conv2d_plan, force_path
from numbacnn.layers.conv2d_winograd_cpu import conv2d_forward_wino, scratch
from numbacnn.testing import run_fenced
from _conv_cases import naive as conv_loops

Conv2d = nc.get_layer("conv2d")


def naive(x, w, b, pad):
    """The forward of _conv_cases.naive (loops over output pixels, float64)."""
    return conv_loops(x, w, b, None, pad)[0]


def _forward(x, w, b, pad, T):
    # The kernel as the layer calls it, on scratch for a batch of 1 in T chunks.
    C, K, P, Q = x.shape[1], w.shape[0], x.shape[2] + 2 * pad - w.shape[2] + 1, x.shape[3] + 2 * pad - w.shape[3] + 1
    d, tr = scratch(1, T, C, K, P, Q, w.shape[2:])
    s = {name: np.zeros(shape, np.int64) if name == "nonfinite" else np.full(shape, np.nan, x.dtype)
         for name, shape in d.items()}  # NaN scratch: a value read before it was written shows
    y = np.full((1, K, P, Q), np.nan, x.dtype)
    ok = conv2d_forward_wino(x, w, b, y, s["U"], s["xp"], s["V"], s["M"], s["pix"], s["R"], s["nonfinite"],
                             (pad, pad), tr)
    return y, ok, s["nonfinite"], d, tr


# (C, K, H, W, kernel, pad): 13 rows (4 tile rows, the last one cut), 16x16, a 4x4 and a 6x6
# kernel (3x3 sub-kernels side by side in V), a 2x2 one, channels off the 16-lane width.
GEOMETRIES = [(5, 6, 13, 9, 3, 1), (3, 17, 16, 16, 3, 1), (4, 5, 21, 7, 4, 1), (6, 3, 17, 17, 2, 0),
              (3, 4, 20, 11, 6, 2), (2, 3, 30, 5, 3, 0)]


@pytest.mark.parametrize("T", [2, 3, 4])
@pytest.mark.parametrize("short", [False, True], ids=["block-per-chunk", "block-per-tile-row"])
@pytest.mark.parametrize("geo", GEOMETRIES, ids=[f"{g[0]}x{g[2]}x{g[3]}-K{g[1]}-k{g[4]}-p{g[5]}" for g in GEOMETRIES])
def test_split_tile_rows_match_naive_loops(geo, short, T, monkeypatch):
    C, K, H, W, k, pad = geo
    if short:  # room for one tile row a block: a chunk runs several blocks
        monkeypatch.setattr(conv2d_winograd_cpu, "_BLOCK_ELEMENTS", 1)
    rng = np.random.default_rng(T)
    x = rng.standard_normal((1, C, H, W))
    w = rng.standard_normal((K, C, k, k))
    b = rng.standard_normal(K)
    y, ok, nonfinite, d, tr = _forward(x, w, b, pad, T)
    th = (y.shape[2] + 3) // 4
    assert d["V"][0] == T and d["xp"][0] == 1  # a chunk's own transforms, one shared image
    assert tr == 1 if short else tr == -(-th // T)
    assert ok and not nonfinite.any()
    np.testing.assert_allclose(y, naive(x, w, b, pad), rtol=1e-9, atol=1e-9)
    whole = _forward(x, w, b, pad, 1)[0]  # the batch kernel, every tile row in one chunk
    np.testing.assert_allclose(y, whole, rtol=1e-12, atol=1e-12)
    y32 = _forward(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), pad, T)[0]
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, naive(x, w, b, pad), rtol=1e-4, atol=1e-3)


def test_nonfinite_outputs_are_counted_by_the_chunk_that_wrote_them():
    # An Inf in the input's last row spreads over the last tile row's outputs only: chunk 2 of 3.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 24, 8))
    x[0, 1, 23, 4] = np.inf
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    y, ok, nonfinite, _, _ = _forward(x, w, b, 1, 3)
    assert not ok
    bad = ~np.isfinite(y[0])
    assert not bad[:, :16].any() and bad[:, 20:].any()
    np.testing.assert_array_equal(nonfinite, [0, 0, bad.sum()])


def test_the_plan_splits_batch_one_inference_alone(monkeypatch):
    # Four threads, whatever this machine has: the plan's chunk count is what is checked.
    monkeypatch.setattr(conv2d_cpu_module, "batch_chunks", lambda n: max(1, min(4, n)))
    geo = (1, 3, 3, 1, 1, 1, 1, 1, 1)

    def chunks(N, C, H, backward=False, kernel=3, K=32):
        g = (1, kernel, kernel, *geo[3:7], kernel // 2, kernel // 2)
        with force_path("winograd"):  # batch-1 inference takes shifted taps by default
            plan = conv2d_plan("conv", (N, C, H, H), (N, K, H, H), g, backward, np.float32)
        assert plan.path == "winograd"
        return plan.chunks

    assert WINOGRAD_SPLIT_MIN_ROWS == 2  # the counts below follow from it
    assert chunks(1, 32, 16) == 2  # 4 tile rows: two a chunk
    assert chunks(1, 32, 32) == 4  # 8 tile rows: four chunks of two
    assert chunks(1, 16, 8, K=16) == 1  # 2 tile rows: one chunk (one row each lost)
    assert chunks(1, 32, 16, backward=True) == 1  # training keeps the batch kernel
    assert chunks(2, 32, 16) == 2  # a batch of two: a sample a chunk, as before
    assert chunks(1, 32, 16, kernel=5) == 1  # F(4x4, 5x5) has no split kernel


@pytest.fixture
def rows_runs(monkeypatch):
    """Four threads at plan time (the chunks are units of work, whatever runs them), and a
    count of the calls of the split kernel."""
    monkeypatch.setattr(conv2d_cpu_module, "batch_chunks", lambda n: max(1, min(4, n)))
    calls = []
    kernel = conv2d_winograd_cpu.conv2d_forward_winograd_rows

    def counted(*args):
        calls.append(args[4].shape[0])  # V: its chunk count
        return kernel(*args)

    monkeypatch.setattr(conv2d_winograd_cpu, "conv2d_forward_winograd_rows", counted)
    return calls


def _random_geometry(rng):
    # At least 13 output rows: four tile rows, two chunks or more.
    k = int(rng.choice([2, 3, 3, 3, 4, 6]))
    pad = int(rng.integers(0, 2))
    H, W = int(rng.integers(13, 30)) + k - 1 - 2 * pad, int(rng.integers(1, 12)) + k - 1
    return int(rng.integers(1, 20)), int(rng.integers(1, 20)), H, W, k, pad


@pytest.mark.parametrize("i", range(12))
def test_split_tile_rows_fenced_on_random_geometries(i, rows_runs, monkeypatch):
    # A read past an array brings NaN (compared below), a write past one fails the run.
    rng = np.random.default_rng(300 + i)
    C, K, H, W, k, pad = _random_geometry(rng)
    if rng.integers(2):
        monkeypatch.setattr(conv2d_winograd_cpu, "_BLOCK_ELEMENTS", 1)
    layer = Conv2d(out_channels=K, kernel_size=k, padding=pad)
    x = rng.standard_normal((1, C, H, W))
    with force_path("winograd"):
        run = run_fenced(layer, [x], None, training=False, seed=i)
    np.testing.assert_allclose(run.y, naive(x, run.params["weight"], run.params["bias"], pad), rtol=1e-9,
                               atol=1e-9, err_msg=f"C{C} K{K} {H}x{W} k{k} pad{pad}")
    assert rows_runs and rows_runs[0] >= 2


def _one_conv(C, K, H):
    g = nc.Graph()
    g.output(g.conv2d(g.input((C, H, H)), out_channels=K, kernel_size=3, padding=1, name="conv"))
    return g


def test_a_batch_one_model_splits_its_tile_rows(rows_runs):
    # 32->32 at 32x32 is 19 MFLOP, over PARALLEL_MIN_FLOPS: the executor keeps the threads and
    # the plan (Winograd forced: the default is shifted taps) splits the 8 tile rows 4 ways.
    model = nc.Model(_one_conv(32, 32, 32), seed=0)
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 32)).astype(np.float32)
    with force_path("winograd"):
        y = model.forward(x)
    assert rows_runs == [4]
    want = naive(x.astype(np.float64), model.params["conv.weight"], model.params["conv.bias"], 1)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-3)


def test_a_batch_one_model_with_inf_gets_pytorchs_nan_and_inf(rows_runs):
    # The split path's fallback: a non-finite input recomputes on im2col, as at any batch,
    # whose NaN and Inf land where the window sums put them.
    model = nc.Model(_one_conv(32, 32, 32), seed=0)
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 32)).astype(np.float32)
    x[0, 3, 10, 7] = np.inf
    x[0, 5, 30, 30] = np.nan
    with force_path("winograd"):
        y = model.forward(x)
    assert rows_runs == [4]
    want = naive(x.astype(np.float64), model.params["conv.weight"], model.params["conv.bias"], 1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(want))
    fin = np.isfinite(want)
    assert (~fin).sum() < fin.sum()
    np.testing.assert_allclose(y[fin], want[fin], rtol=1e-4, atol=1e-3)
