"""conv2d's batch-1 inference split (conv2d_cpu._forward_split): each sample's output rows
(a 1x1's output channels) shared over the threads, against the training forward and a float64 reference by loops
(test_conv2d_bounds.conv_ref)."""

import numpy as np
import pytest

import numbacnn as nc
from test_conv2d_bounds import conv_ref


@pytest.mark.parametrize("cfg,C", [
    (dict(out_channels=64, kernel_size=1), 16),  # x is its own column matrix: split by output channels
    (dict(out_channels=30, kernel_size=1, groups=2), 64),  # 15 a group: shares of 7 and 8 in each
    (dict(out_channels=1, kernel_size=1), 512),  # fewer output channels than threads: a share of none
    (dict(out_channels=32, kernel_size=3, stride=2, padding=1), 32),
    (dict(out_channels=32, kernel_size=3, padding=1, groups=2), 12),
    (dict(out_channels=32, kernel_size=(3, 2), dilation=2, padding=(1, 2, 0, 3)), 5)])
def test_conv2d_batch_1_inference_splits_over_threads(cfg, C, monkeypatch):
    # Inference below the thread count (batch 1) splits each sample's output rows from
    # SPLIT_MIN_MACS on, one share per thread (their columns of the column matrix, then of the
    # product); training keeps whole samples per chunk (a chunk without samples would leave
    # its weight-gradient partial unwritten). The split forward is the training forward's
    # values and a float64 reference's, NaN where PyTorch puts it.
    import numba

    from numbacnn.layers import conv2d_cpu

    threads = numba.get_num_threads()
    if threads < 2:
        pytest.skip("one Numba thread: nothing to split over")
    g = nc.Graph()
    g.output(g.relu(g.conv2d(g.input((C, 48, 45)), name="c", **cfg), name="r"))
    model = nc.Model(g, seed=1)
    layer = model.graph.nodes["c"].obj
    out = (1, *layer._output_shape_2d((C, 48, 45)))
    macs = np.prod(out) * C // layer.groups * np.prod(layer.kernel)
    assert macs >= conv2d_cpu.SPLIT_MIN_MACS
    with conv2d_cpu.force_path("im2col"):
        plan = conv2d_cpu.conv2d_plan("c", (1, C, 48, 45), out, layer._geometry(), False, "float32")
        assert plan.chunks == threads
        assert conv2d_cpu.conv2d_plan("c", (1, C, 48, 45), out, layer._geometry(), True, "float32").chunks == 1
        x = np.random.default_rng(2).standard_normal((1, C, 48, 45)).astype(np.float32)
        train = model.forward(x, training=True)
        ran = []
        original = conv2d_cpu._im2col_forward
        monkeypatch.setattr(conv2d_cpu, "_im2col_forward", lambda *a: ran.append(a[6]) or original(*a))
        y = model.forward(x)
    assert ran == [threads]  # the model's own plan split (its values are past PARALLEL_MIN: not one thread)
    np.testing.assert_allclose(y, train, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(y, _reference(x.astype(np.float64), model), rtol=1e-4, atol=1e-4)
    x[0, 0, 5, 7] = np.nan
    y = model.forward(x)
    ref = _reference(x.astype(np.float64), model)
    assert np.array_equal(np.isnan(y), np.isnan(ref)) and np.isnan(y).any()


def _reference(x, model):
    """relu(conv2d(x) + b) in float64 by test_conv2d_bounds' per-tap loops."""
    layer = model.graph.nodes["c"].obj
    w, b = model.params["c.weight"].astype(np.float64), model.params["c.bias"].astype(np.float64)
    cfg = layer.config | {"kernel_size": layer.kernel, "stride": layer.stride, "dilation": layer.dilation}
    with np.errstate(invalid="ignore"):
        y = conv_ref(x, w, b, np.zeros((x.shape[0], *layer.output_shape(x.shape[1:]))), cfg)[0]
        return np.where(y <= 0, 0, y)


@pytest.mark.parametrize("N,cfg,C", [
    (2, dict(out_channels=40, kernel_size=1), 48),  # whole samples a chunk: 40x48 @ 48x2115, blocks of 432
    (3, dict(out_channels=24, kernel_size=3, padding=1, stride=(2, 1)), 20),  # 24x180 @ 180x1080, blocks of 224
    (1, dict(out_channels=64, kernel_size=1), 40)])  # split by channels: 32x40 @ 40x2115, blocks of 720
def test_im2col_forward_in_column_blocks_matches_a_float64_reference(N, cfg, C):
    # Products past _blas.SMALL_PRODUCT multiply-adds run in column blocks (small_cols), the
    # last one narrower: every block's columns land where one product would put them (a block
    # written at the wrong offset, or one left out, shows against the reference), NaN included.
    from numbacnn._blas import SMALL_PRODUCT, small_cols
    from numbacnn.layers import conv2d_cpu

    g = nc.Graph()
    g.output(g.relu(g.conv2d(g.input((C, 47, 45)), name="c", **cfg), name="r"))
    model = nc.Model(g, seed=3)
    layer = model.graph.nodes["c"].obj
    K, P, Q = layer._output_shape_2d((C, 47, 45))
    rows = K // 2 if N == 1 else K  # batch 1: each thread its share of the channels (the split)
    J = C * int(np.prod(layer.kernel))
    assert rows * P * Q * J > SMALL_PRODUCT and (P * Q) % small_cols(rows, P * Q, J) != 0
    x = np.random.default_rng(4).standard_normal((N, C, 47, 45)).astype(np.float32)
    x[-1, 1, 7, 40] = np.nan
    with conv2d_cpu.force_path("im2col"):
        y = model.forward(x)
    ref = _reference(x.astype(np.float64), model)
    assert np.array_equal(np.isnan(y), np.isnan(ref)) and np.isnan(y).any()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_batch_1_3x3_takes_the_split_shifted_taps(monkeypatch):
    # Batch-1 inference at stride 1 takes shifted taps (conv2d_plan), its tiles split over the
    # threads from SPLIT_MIN_MACS; Winograd keeps larger batches and training, im2col 1x1. (On
    # Zen 4 the largest batch-1 3x3s take Winograd instead: test_conv2d_shift; not here.)
    import numba

    from numbacnn.layers import conv2d_cpu, conv2d_plan

    monkeypatch.setattr(conv2d_plan, "BATCH1_WINOGRAD", False)

    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: nothing to split over")
    geo = (1, 3, 3, 1, 1, 1, 1, 1, 1)

    def plan(N, C, K, H, W, backward=False, g=geo):
        return conv2d_cpu.conv2d_plan("c", (N, C, H, W), (N, K, H, W), g, backward, "float32")

    assert (plan(1, 128, 128, 8, 8).path, plan(1, 128, 128, 8, 8).chunks) == ("shift", numba.get_num_threads())
    assert plan(1, 64, 64, 8, 8).path == plan(1, 64, 64, 6, 7).path == plan(1, 64, 64, 5, 13).path == "shift"
    assert plan(2, 128, 128, 8, 8).path == plan(1, 128, 128, 8, 8, backward=True).path == "winograd"
    assert (plan(1, 16, 16, 8, 8).path, plan(1, 16, 16, 8, 8).chunks) == ("shift", 1)  # 147k multiply-adds
    one = (1, 1, 1, 1, 1, 1, 1, 0, 0)
    assert (plan(1, 128, 128, 8, 8, g=one).path, plan(1, 128, 128, 8, 8, g=one).chunks) == (
        "im2col", numba.get_num_threads())


@pytest.mark.parametrize("path,kernel,N", [("im2col", 3, 1), ("im2col", 1, 1), ("im2col", 3, 2), ("shift", 3, 1),
                                           ("shift", 1, 1), ("shift", 3, 3)])
def test_forward_reuses_its_arguments_only_for_the_same_arrays(path, kernel, N):
    # An im2col or shifted-taps forward keeps its last call's arrays and the kernel arguments
    # made from them (the plan's ``last``) and reuses them while the same objects come back:
    # every array replaced by another object (x, w, b, y, the residual, the scale, the
    # scratch), or edited in place, or the relu flag changed, must show in that call's output
    # (a float64 reference).
    from numbacnn.layers import conv2d_cpu

    rng = np.random.default_rng(kernel + N)
    C, K, H = 6, 5, 7
    geo = (1, kernel, kernel, 1, 1, 1, 1, kernel // 2, kernel // 2)
    with conv2d_cpu.force_path(path):
        plan = conv2d_cpu.conv2d_plan("c", (N, C, H, H), (N, K, H, H), geo, False, "float32")
    scratch = tuple(np.empty(shape, np.float32) for shape, _ in plan.forward_scratch)
    new = {"x": lambda: rng.standard_normal((N, C, H, H)).astype(np.float32),
           "w": lambda: rng.standard_normal((K, C, kernel, kernel)).astype(np.float32),
           "b": lambda: rng.standard_normal(K).astype(np.float32),
           "y": lambda: np.full((N, K, H, H), np.nan, np.float32),
           "r": lambda: rng.standard_normal((N, K, H, H)).astype(np.float32),
           "s": lambda: rng.uniform(-2, 2, K).astype(np.float32)}
    a = {k: f() for k, f in new.items()}
    cfg = dict(kernel_size=(kernel, kernel), stride=(1, 1), dilation=(1, 1), groups=1, padding=kernel // 2)
    steps = ["first", "same", "x", "w", "b", "y", "r", "s", "col", "x in place", "w in place", "s in place", "relu",
             "no residual", "x", "no scale", "same"]
    relu, residual, scaled = False, True, True
    for step in steps:
        if step in new:
            a[step] = new[step]()
        elif step.endswith("in place"):
            a[step[0]] *= -1.5
        elif step == "relu":
            relu = True
        elif step == "no residual":
            residual = False
        elif step == "no scale":
            scaled = False
        elif step == "col":  # new column-matrix scratch (3x3): this call must build its columns there
            scratch = tuple(np.full(shape, np.nan, np.float32) for shape, _ in plan.forward_scratch)
        conv2d_cpu.conv2d_forward(a["x"], a["w"], a["b"], a["y"], plan, scratch, relu, a["r"] if residual else None,
                                  a["s"] if scaled else None)
        want = conv_ref(a["x"].astype(np.float64), a["w"].astype(np.float64), None, np.zeros((N, K, H, H)), cfg)[0]
        want = want * (a["s"][None, :, None, None] if scaled else 1) + a["b"][None, :, None, None]
        want = want + (a["r"] if residual else 0)
        want = np.maximum(want, 0) if relu else want
        np.testing.assert_allclose(a["y"], want, rtol=1e-4, atol=1e-4, err_msg=step)
        assert all(not np.isnan(c).all() for c in scratch), step
    assert plan.last  # kept for the next call


def test_training_plans_keep_no_arrays_past_the_call():
    # The reuse above is for inference; a plan with a backward after it keeps nothing, so a
    # training step's arrays are freed when the step lets go of them (kept, they raised
    # vgg_small's training-step peak by about 6 MB at batch 32).
    import gc
    import weakref

    from numbacnn.layers import conv2d_cpu

    N, C, K, H = 2, 4, 3, 6
    geo = (1, 3, 3, 1, 1, 1, 1, 1, 1)
    with conv2d_cpu.force_path("im2col"):
        train = conv2d_cpu.conv2d_plan("c", (N, C, H, H), (N, K, H, H), geo, True, "float32")
        infer = conv2d_cpu.conv2d_plan("c", (N, C, H, H), (N, K, H, H), geo, False, "float32")
    for plan, kept in ((train, False), (infer, True)):
        x = np.random.default_rng(0).standard_normal((N, C, H, H)).astype(np.float32)
        w, b = np.ones((K, C, 3, 3), np.float32), np.zeros(K, np.float32)
        y = np.empty((N, K, H, H), np.float32)
        scratch = tuple(np.empty(shape, np.float32) for shape, _ in plan.forward_scratch)
        conv2d_cpu.conv2d_forward(x, w, b, y, plan, scratch)
        np.testing.assert_allclose(y[:, :, 1:-1, 1:-1].sum(axis=1), 3 * sum(
            x[:, :, r:r + H - 2, s:s + H - 2].sum(axis=1) for r in range(3) for s in range(3)), rtol=1e-4, atol=1e-4)
        ref = weakref.ref(x)
        del x, y, scratch
        gc.collect()
        assert (ref() is not None) == kept
