"""max_pool2d in inference, where the kernels are asked for the values alone (no indices for a
backward): the separable 3x3 passes, the same-size blocks of planes and the row kernels across
planes (_max_pool2d_cpu), each held to the window-order fold that training's index kernel and
PyTorch compute, down to the sign of a tied zero and NaN."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn._layer_checks import build_model

MaxPool2d = nc.get_layer("max_pool2d")


def _model(layer, shape):
    return build_model(layer, [shape], "float32", seed=0)


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1),
                                dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=2, ceil_mode=True),
                                dict(kernel_size=2, stride=1)],
                         ids=["2x2", "3x3-s1-p1", "3x3-s2-p1", "3x3-s2-ceil", "2x2-s1"])
def test_max_pool2d_inference_values_alone_like_torch(kw):
    # Inference asks the kernels for the values alone (an empty index: max_pool3d_cpu's
    # _values2x2 / _values3x3; the general kernels still find the indices): NaN, +-Inf, ties
    # and edge columns as in PyTorch, and the same as the training forward's.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 4, (2, 3, 11, 13)).astype(np.float32)  # many ties
    flat = x.reshape(-1)
    for value, count in ((np.nan, 6), (np.inf, 4), (-np.inf, 8)):
        flat[rng.choice(flat.size, count, replace=False)] = value
    x[1, 2] = -np.inf  # a plane of -inf
    x[0, 1, :, 0] = np.nan  # a first column of NaN (clamped taps)
    model = _model(MaxPool2d(**kw), x.shape)
    want = torch.nn.functional.max_pool2d(torch.tensor(x), **kw).numpy()
    y = model.forward(x)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(model.forward(x, training=True), want)
    assert np.isnan(y).any() and np.isinf(y).any()


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=3, stride=1),
                                dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=(1, 2), padding=1),
                                dict(kernel_size=3, stride=(2, 1), padding=1),
                                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                dict(kernel_size=3, stride=3, ceil_mode=True)],
                         ids=["s1-p1", "s1-p0", "s2-p1", "s12-p1", "s21-p1", "s2-p1-ceil", "s3-p0-ceil"])
@pytest.mark.parametrize("hw", [(1, 1), (2, 1), (1, 2), (2, 2), (3, 3), (4, 4), (5, 8), (8, 5), (16, 16)])
def test_max_pool2d_3x3_values_alone_keep_the_window_order(kw, hw):
    # Inference's separable 3x3 pass (_values3x3: flat row triples, then flat row folds)
    # must take the same element as the window-order fold that training's index kernel
    # does, down to the sign of a tied zero, on planes from 1x1 up: a tie between 0.0 and
    # -0.0 keeps the first in window order (PyTorch's rule), and the end columns and rows
    # that the flat passes redo are clamped as the windows are.
    try:
        MaxPool2d(**kw).output_shape((1, *hw))
    except nc.ShapeError:
        pytest.skip("smaller than the window")
    rng = np.random.default_rng(hw[0] * 31 + hw[1])
    x = np.where(rng.random((2, 3, *hw)) < 0.5, np.float32(0.0), np.float32(-0.0))
    x[1, 1] = rng.integers(-1, 2, hw).astype(np.float32)  # ties between other values too
    layer = MaxPool2d(**kw)
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    model = _model(layer, x.shape)
    y, yt = model.forward(x), model.forward(x, training=True)
    ref = np.empty_like(y)
    for n, c, p, q in np.ndindex(*y.shape):
        best = None
        for r, s in np.ndindex(3, 3):
            h, w = p * sh - ph + r, q * sw - pw + s
            if 0 <= h < hw[0] and 0 <= w < hw[1] and (best is None or x[n, c, h, w] > best):
                best = x[n, c, h, w]
        ref[n, c, p, q] = best
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(ref))
    np.testing.assert_array_equal(np.signbit(yt), np.signbit(ref))


def test_max_pool2d_3x3_values_alone_over_threads_keep_the_window_order():
    # At PARALLEL_MIN elements and more the planes are cut into chunks, each reusing its own
    # scratch plane after plane: the values alone must still equal training's pass (which
    # keeps indices, a separate kernel) down to the sign of a tied zero.
    rng = np.random.default_rng(9)
    x = np.where(rng.random((2, 64, 32, 32)) < 0.5, np.float32(0.0), np.float32(-0.0))
    x[1, ::3] = rng.integers(-2, 3, (22, 32, 32)).astype(np.float32)
    for kw in (dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=3, stride=2, padding=1)):
        model = _model(MaxPool2d(**kw), x.shape)
        y, yt = model.forward(x), model.forward(x, training=True)
        np.testing.assert_array_equal(y, yt)
        np.testing.assert_array_equal(np.signbit(y), np.signbit(yt))


@pytest.mark.parametrize("shape", [(3, 350, 8, 8), (5, 211, 4, 4), (2, 3, 37, 5)], ids=["8x8", "4x4", "37x5"])
def test_max_pool2d_same_size_blocks_of_planes_keep_the_window_order(shape):
    # Stride 1, padding 1: inference runs blocks of planes through shared flat passes
    # (_same_rows), each plane's end rows redone; a block ends inside a chunk (525 planes of
    # 8x8 a chunk, in blocks of 16) and a pass crosses from plane to plane. Ties of zeros
    # and of other values, and NaN (the last one in window order wins), must land as the
    # index kernel of training puts them.
    rng = np.random.default_rng(shape[1])
    x = np.where(rng.random(shape) < 0.5, np.float32(0.0), np.float32(-0.0))
    x[:, ::3] = rng.integers(-2, 3, x[:, ::3].shape).astype(np.float32)
    x[rng.random(shape) < 0.02] = np.nan
    model = _model(MaxPool2d(kernel_size=3, stride=1, padding=1), x.shape)
    y, yt = model.forward(x), model.forward(x, training=True)
    np.testing.assert_array_equal(y, yt)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(yt))


@pytest.mark.parametrize("shape", [(1, 6, 28, 28), (3, 5, 8, 8), (2, 3, 4, 6), (1, 1, 2, 2), (1, 2, 2, 2050),
                                   (2, 40, 20, 20), (300, 16, 8, 8), (4, 3, 16, 16), (4, 8, 30, 30)],
                         ids=["lenet-1", "8x8", "4x6", "2x2", "wide-2050", "20x20", "batch300-8x8", "16x16", "30x30"])
@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)], ids=["2x2", "3x3-s2-p1"])
def test_max_pool2d_values_alone_by_rows_keep_the_window_order(kw, shape):
    # Inference's 2x2 stride-2 pool and 3x3 stride-2 padding-1 pool over planes of even size
    # take _max_pool2d_cpu._rows2x2 / _rows3x3s2 (one flat sequence of rows, cut into blocks
    # that may start inside a plane (30x30, wide-2050), and chunks of the rows over the
    # threads from PARALLEL_MIN elements: batch300-8x8): each window's first maximum in window
    # order, down to the sign of a tied zero, and NaN where one is, as training's kernel
    # (indices kept) and PyTorch give; wide-2050 has a row wider than a block, 16x16 rows a
    # multiple of 8 wide (the 2x2 plane kernel's).
    rng = np.random.default_rng(shape[3])
    x = np.where(rng.random(shape) < 0.5, np.float32(0.0), np.float32(-0.0))
    x[:, ::2] = rng.integers(-2, 3, x[:, ::2].shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, max(1, flat.size // 50), replace=False)] = np.nan
    layer = MaxPool2d(**kw)
    model = _model(layer, shape)
    y, yt = model.forward(x), model.forward(x, training=True)
    (R, S), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    N, C, H, W = shape
    P, Q = y.shape[2:]
    ref, seen = np.zeros(y.shape, np.float32), np.zeros(y.shape, bool)
    for r, s in np.ndindex(R, S):  # window order over the taps inside x
        h, w = np.arange(P) * sh - ph + r, np.arange(Q) * sw - pw + s
        inside = ((h >= 0) & (h < H))[:, None] & ((w >= 0) & (w < W))[None, :]
        v = x[:, :, np.clip(h, 0, H - 1)][:, :, :, np.clip(w, 0, W - 1)]
        take = inside & (~seen | (v > ref) | np.isnan(v))
        ref[take] = v[take]
        seen |= inside
    for got in (y, yt):
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(ref))
