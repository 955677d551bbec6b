from functools import partial

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

MaxPool2d = nc.get_layer("max_pool2d")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out_size(size, k, s, p, d, ceil_mode):
    # PyTorch's rule: floor (or ceil) of the span over the stride, plus one; in ceil mode a
    # window that would start in the right padding is dropped.
    span = size + 2 * p - d * (k - 1) - 1
    n = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    return n


def max_pool_ref(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    (R, S), (sh, sw) = _pair(kernel_size), _pair(stride or kernel_size)
    (ph, pw), (dh, dw) = _pair(padding), _pair(dilation)
    N, C, H, W = x.shape
    P, Q = _out_size(H, R, sh, ph, dh, ceil_mode), _out_size(W, S, sw, pw, dw, ceil_mode)
    # -inf everywhere outside the input, wide enough for windows running past the padding.
    big = np.full((N, C, ph + (P - 1) * sh + dh * (R - 1) + 1 + H, pw + (Q - 1) * sw + dw * (S - 1) + 1 + W), -np.inf)
    big[:, :, ph:ph + H, pw:pw + W] = x
    y = np.empty((N, C, P, Q))
    for n in range(N):
        for c in range(C):
            for p in range(P):
                for q in range(Q):
                    y[n, c, p, q] = max(big[n, c, p * sh + r * dh, q * sw + s * dw]
                                        for r in range(R) for s in range(S))
    return y


# (hyper-parameters, input shape, expected per-sample output shape)
CONFIGS = [
    (dict(kernel_size=2), (2, 3, 6, 6), (3, 3, 3)),
    (dict(kernel_size=2, stride=1), (1, 2, 5, 5), (2, 4, 4)),  # overlapping windows, batch 1
    (dict(kernel_size=3, stride=2, padding=1), (2, 2, 7, 7), (2, 4, 4)),
    (dict(kernel_size=3, stride=1, padding=1), (1, 3, 5, 4), (3, 5, 4)),
    (dict(kernel_size=3, stride=2), (2, 2, 6, 6), (2, 2, 2)),
    (dict(kernel_size=3, stride=2, ceil_mode=True), (2, 2, 6, 6), (2, 3, 3)),  # ceil adds a window
    # ceil's extra window would start in the right padding: PyTorch drops it (4 -> 3)
    (dict(kernel_size=2, stride=2, padding=1, ceil_mode=True), (1, 2, 5, 5), (2, 3, 3)),
    (dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1)), (2, 1, 7, 5), (1, 3, 4)),
    (dict(kernel_size=3, stride=3, ceil_mode=True), (1, 1, 2, 4), (1, 1, 2)),  # smaller than the window
]
IDS = [f"{'-'.join(f'{k}{v}' for k, v in kw.items())}-{'x'.join(map(str, shape))}" for kw, shape, _ in CONFIGS]


@pytest.mark.parametrize("kw, shape, out", CONFIGS, ids=IDS)
def test_max_pool2d_cpu(kw, shape, out):
    layer = MaxPool2d(**kw)
    assert layer.output_shape(shape[1:]) == out
    check_layer(layer, [shape], partial(max_pool_ref, **kw), cuda=False)


def _torch_run(torch, kw, x, gy):
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, **kw)
    ty.backward(torch.tensor(gy))
    return ty.detach().numpy(), tx.grad.numpy()


def _model(layer, shape, dtype="float32"):
    g = nc.Graph()
    g.output(g.add_layer(layer, g.input(shape[1:]), name="pool"))
    return nc.Model(g, dtype=dtype)


@pytest.mark.parametrize("kw, shape, out", CONFIGS, ids=IDS)
def test_max_pool2d_matches_torch(kw, shape, out):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    model = _model(MaxPool2d(**kw), shape)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = model.backward(gy)
    ty, tgx = _torch_run(torch, kw, x, gy)
    assert y.shape == ty.shape == (shape[0], *out)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_allclose(gx, tgx, rtol=1e-6, atol=1e-6)


# The kernels run serially below PARALLEL_MIN input elements and in parallel from there: both
# sides of the threshold, on the window path (stride 2) and the row path (stride 1), with a
# NaN in the larger one, against PyTorch.
@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1)],
                         ids=["windows", "rows"])
@pytest.mark.parametrize("side", [-1, 0], ids=["serial", "parallel"])
def test_max_pool2d_both_sides_of_parallel_min(kw, side):
    torch = pytest.importorskip("torch")
    from numbacnn._threads import PARALLEL_MIN

    C = PARALLEL_MIN // (2 * 32 * 32) + side  # one channel short of PARALLEL_MIN elements, or there
    shape = (2, C, 32, 32)
    assert (np.prod(shape) < PARALLEL_MIN) == (side < 0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(np.float32)
    x[1, C - 1, 5, 7] = np.nan
    model = _model(MaxPool2d(**kw), shape)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = model.backward(gy)
    ty, tgx = _torch_run(torch, kw, x, gy)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_allclose(gx, tgx, rtol=1e-6, atol=1e-6)


def test_max_pool2d_ties_route_to_the_first_maximum():
    torch = pytest.importorskip("torch")
    # Constant input with overlapping windows: every window is a tie, and an input element
    # can be the first maximum of several windows (its gradients add up).
    x = np.ones((1, 2, 5, 5), np.float32)
    x[0, 1, 2, 2] = 2.0
    kw = dict(kernel_size=3, stride=1, padding=1)
    model = _model(MaxPool2d(**kw), x.shape)
    y = model.forward(x, training=True)
    gy = np.arange(y.size, dtype=np.float32).reshape(y.shape)
    gx = model.backward(gy)
    ty, tgx = _torch_run(torch, kw, x, gy)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(gx, tgx)


def test_max_pool2d_nan_propagates_like_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal((1, 1, 4, 4)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    model = _model(MaxPool2d(2), x.shape)
    gy = np.ones((1, 1, 2, 2), np.float32)
    y = model.forward(x, training=True)
    gx = model.backward(gy)
    ty, tgx = _torch_run(torch, dict(kernel_size=2), x, gy)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(gx, tgx)


def test_max_pool2d_window_of_padding_only():
    # A dilated window can hold padding alone (kernel 2, dilation 2, padding 1 on a 1x1
    # input reads rows -1 and 1): its output is -inf, as in PyTorch, and it passes no gradient
    # back. PyTorch's own CPU backward writes outside its gradient here, so only its forward
    # is compared.
    torch = pytest.importorskip("torch")
    kw = dict(kernel_size=2, stride=1, padding=1, dilation=2)
    x = np.ones((1, 1, 1, 1), np.float32)
    model = _model(MaxPool2d(**kw), x.shape)
    y = model.forward(x, training=True)
    np.testing.assert_array_equal(y, torch.nn.functional.max_pool2d(torch.tensor(x), **kw).numpy())
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == -np.inf
    np.testing.assert_array_equal(model.backward(np.ones_like(y)), np.zeros_like(x))


def test_max_pool2d_shape_errors():
    check_layer(MaxPool2d(5, padding=1), [(1, 2, 6, 6)], partial(max_pool_ref, kernel_size=5, padding=1),
                cuda=False, bad_shapes=[
                    ([(1, 3, 4)], "expected an input of shape (C, H, W), found (3, 4)"),
                    ([(1, 1, 2, 3, 4)], "expected an input of shape (C, H, W), found (1, 2, 3, 4)"),
                    ([(1, 1, 2, 9)], "input 2x9 (padded to 4x11) is smaller than the 5x5 window"),
                ])
    with pytest.raises(nc.ShapeError, match=r"max_pool2d node 'pool': input 3x3 is smaller than the 5x5 window: "
                             r"expected at least 5x5, found 3x3"):
        _model(MaxPool2d(5), (1, 1, 3, 3))
    with pytest.raises(nc.ShapeError, match=r"input 4x4 is smaller than the 5x5 window"):
        _model(MaxPool2d(3, dilation=2), (1, 1, 4, 4))


@pytest.mark.parametrize("kw, exc, text", [
    (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(kernel_size=(2,)), TypeError, "kernel_size must be an int or a pair"),
    (dict(kernel_size=2.0), TypeError, "kernel_size must be an int or a pair"),
    (dict(kernel_size=True), TypeError, "kernel_size must be an int or a pair"),
    (dict(kernel_size=2, stride=0), ValueError, "stride must be >= 1"),
    (dict(kernel_size=2, padding=-1), ValueError, "padding must be >= 0"),
    (dict(kernel_size=3, padding=2), ValueError, "padding must be at most half of kernel_size"),
    (dict(kernel_size=(4, 2), padding=(2, 2)), ValueError, "expected padding <= 2x1, found 2x2"),
    (dict(kernel_size=2, dilation=0), ValueError, "dilation must be >= 1"),
    (dict(kernel_size=2, ceil_mode=1), TypeError, "ceil_mode must be True or False"),
])
def test_max_pool2d_bad_hyper_parameters(kw, exc, text):
    with pytest.raises(exc, match=text.replace("(", r"\(")):
        MaxPool2d(**kw)


def test_max_pool2d_builder_config_and_flops():
    g = nc.Graph()
    h = g.max_pool2d(g.input((4, 7, 7)), kernel_size=3, stride=2, padding=[1, 1], name="pool")
    model = nc.Model(g)
    assert model.output_shape == (4, 4, 4)
    assert h.config == {"kernel_size": 3, "stride": 2, "padding": [1, 1], "dilation": 1, "ceil_mode": False}
    assert model.flops() == 4 * 4 * 4 * 9
    assert model.params == {} and model.buffers == {}


@pytest.mark.cuda
def test_max_pool2d_cuda_overlapping_padded():
    kw = dict(kernel_size=3, stride=1, padding=1)
    check_layer(MaxPool2d(**kw), [(1, 2, 4, 5)], partial(max_pool_ref, **kw), cuda=True, threads=False)


@pytest.mark.cuda
def test_max_pool2d_cuda_ceil_dilated():
    kw = dict(kernel_size=(2, 3), stride=2, padding=1, dilation=(2, 1), ceil_mode=True)
    check_layer(MaxPool2d(**kw), [(2, 1, 5, 6)], partial(max_pool_ref, **kw), cuda=True, threads=False)


@pytest.mark.parametrize("stride", [2, 1, 3])
def test_max_pool2d_unpadded_2x2_fast_path_matches_the_general_path(stride):
    # The CPU kernel has a branch for unpadded 2x2 windows (no bounds checks); it must keep
    # the general loop's rules, checked here against a naive loop: ties, NaNs, -inf windows.
    rng = np.random.default_rng(stride)
    x = rng.integers(0, 3, (2, 3, 7, 8)).astype(np.float32)  # many ties
    x[0, 0, 2, 2] = x[1, 2, 4, 5] = x[1, 2, 4, 4] = np.nan
    x[0, 1, :2, :2] = -np.inf  # a window of -inf alone: its first element, as in PyTorch
    gy = rng.standard_normal((2, 3, *((np.array([7, 8]) - 2) // stride + 1))).astype(np.float32)
    fast = _model(MaxPool2d(2, stride=stride), x.shape)
    y, gx = fast.forward(x, training=True), fast.backward(gy)
    # Reference: the naive definition, first maximum wins, a NaN wins (the last one seen), a
    # window of -inf alone takes its first element (PyTorch's max_pool2d).
    ry, rgx = np.empty_like(y), np.zeros_like(x)
    for n, c, p, q in np.ndindex(*y.shape):
        best, at = -np.inf, None
        for r, s in ((0, 0), (0, 1), (1, 0), (1, 1)):
            v = x[n, c, p * stride + r, q * stride + s]
            if at is None or v > best or v != v:
                best, at = v, (p * stride + r, q * stride + s)
        ry[n, c, p, q] = best
        rgx[n, c, at[0], at[1]] += gy[n, c, p, q]
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(gx, rgx)


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=3),
                                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=3, stride=1, padding=(0, 1)),
                                dict(kernel_size=3, stride=(1, 2), padding=(0, 1)),
                                dict(kernel_size=3, stride=(3, 2), padding=1, ceil_mode=True),
                                dict(kernel_size=3, stride=2, padding=1, dilation=2),
                                dict(kernel_size=(2, 3), stride=(2, 2), padding=(1, 0))])
def test_max_pool2d_inside_windows_keep_the_general_rules(kw):
    # The window kernel runs windows wholly inside x through one unchecked pass per tap; it
    # must keep the checked loop's rules at every window, edge or inside: ties, NaNs, -inf.
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (2, 3, 11, 12)).astype(np.float32)  # many ties
    x[0, 0, 4, 4] = x[1, 2, 6, 6] = x[1, 2, 6, 7] = x[0, 1, 0, 0] = np.nan
    x[0, 2, 3:8, 3:8] = -np.inf  # inside windows of -inf alone: their first element
    layer = MaxPool2d(**kw)
    (R, S), (sh, sw), (ph, pw), (dh, dw) = layer.kernel, layer.stride, layer.padding, layer.dilation
    _, P, Q = layer.output_shape(x.shape[1:])
    gy = rng.standard_normal((2, 3, P, Q)).astype(np.float32)
    model = _model(layer, x.shape)
    y, gx = model.forward(x, training=True), model.backward(gy)
    ry, rgx = np.empty_like(y), np.zeros_like(x)
    for n, c, p, q in np.ndindex(*y.shape):
        best, at = -np.inf, None
        for r, s in np.ndindex(R, S):
            h, w = p * sh - ph + r * dh, q * sw - pw + s * dw
            if 0 <= h < x.shape[2] and 0 <= w < x.shape[3]:
                v = x[n, c, h, w]
                if at is None or v > best or v != v:
                    best, at = v, (h, w)
        ry[n, c, p, q] = best
        rgx[n, c, at[0], at[1]] += gy[n, c, p, q]
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(gx, rgx)
