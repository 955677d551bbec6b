from functools import partial

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

AvgPool2d = nc.get_layer("avg_pool2d")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out_size(size, k, s, p, ceil_mode):
    span = size + 2 * p - k
    n = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    return n


def avg_pool_ref(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
    # Each window position is tested on its own: it adds to the sum when it lies in the input;
    # it adds to the divisor when it lies in the padded input (count_include_pad) or in the
    # input (not count_include_pad). A ceil-mode window running past the right padding thus
    # counts only up to it, as PyTorch does.
    (R, S), (sh, sw), (ph, pw) = _pair(kernel_size), _pair(stride or kernel_size), _pair(padding)
    N, C, H, W = x.shape
    P, Q = _out_size(H, R, sh, ph, ceil_mode), _out_size(W, S, sw, pw, ceil_mode)
    y = np.empty((N, C, P, Q))
    for n in range(N):
        for c in range(C):
            for p in range(P):
                for q in range(Q):
                    total, count = 0.0, 0
                    for r in range(R):
                        for s in range(S):
                            h, w = p * sh - ph + r, q * sw - pw + s
                            inside = 0 <= h < H and 0 <= w < W
                            padded = -ph <= h < H + ph and -pw <= w < W + pw
                            total += x[n, c, h, w] if inside else 0.0
                            count += (padded if count_include_pad else inside)
                    y[n, c, p, q] = total / (divisor_override or count)
    return y


# (hyper-parameters, input shape, expected per-sample output shape)
CONFIGS = [
    (dict(kernel_size=2), (2, 3, 6, 6), (3, 3, 3)),
    (dict(kernel_size=2, stride=1), (1, 2, 5, 5), (2, 4, 4)),  # overlapping windows, batch 1
    (dict(kernel_size=3, stride=1, padding=1), (1, 2, 5, 4), (2, 5, 4)),
    (dict(kernel_size=3, stride=1, padding=1, count_include_pad=False), (1, 2, 5, 4), (2, 5, 4)),
    (dict(kernel_size=3, stride=2), (2, 2, 6, 6), (2, 2, 2)),
    # ceil mode: the last window (rows 5..7) runs past the padded edge (row 6)
    (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 2, 6, 6), (2, 4, 4)),
    (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (2, 2, 6, 6), (2, 4, 4)),
    (dict(kernel_size=3, stride=2, ceil_mode=True), (1, 2, 6, 7), (2, 3, 3)),
    # ceil's extra window would start in the right padding: PyTorch drops it (4 -> 3)
    (dict(kernel_size=2, stride=2, padding=1, ceil_mode=True), (1, 2, 5, 5), (2, 3, 3)),
    (dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), divisor_override=4), (2, 1, 7, 5), (1, 4, 4)),
    (dict(kernel_size=3, stride=3, padding=1, ceil_mode=True, count_include_pad=False), (1, 2, 7, 7), (2, 3, 3)),
    (dict(kernel_size=3, stride=2, ceil_mode=True), (1, 1, 2, 2), (1, 1, 1)),  # smaller than the window
]
IDS = [f"{'-'.join(f'{k}{v}' for k, v in kw.items())}-{'x'.join(map(str, shape))}" for kw, shape, _ in CONFIGS]


@pytest.mark.parametrize("kw, shape, out", CONFIGS, ids=IDS)
def test_avg_pool2d_cpu(kw, shape, out):
    layer = AvgPool2d(**kw)
    assert layer.output_shape(shape[1:]) == out
    check_layer(layer, [shape], partial(avg_pool_ref, **kw), cuda=False)


def _model(layer, shape, dtype="float32"):
    g = nc.Graph()
    g.output(g.add_layer(layer, g.input(shape[1:]), name="pool"))
    return nc.Model(g, dtype=dtype)


@pytest.mark.parametrize("kw, shape, out", CONFIGS, ids=IDS)
def test_avg_pool2d_matches_torch(kw, shape, out):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    model = _model(AvgPool2d(**kw), shape)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = model.backward(gy)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.avg_pool2d(tx, **kw)
    ty.backward(torch.tensor(gy))
    assert y.shape == tuple(ty.shape) == (shape[0], *out)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_avg_pool2d_divisors_at_the_edges():
    # Ones in, so each output is (input positions in its window) / divisor.
    x = np.ones((1, 1, 6, 6))
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    with_pad = _model(AvgPool2d(**kw), x.shape, "float64").forward(x)
    without = _model(AvgPool2d(**kw, count_include_pad=False), x.shape, "float64").forward(x)
    # Row windows: [-1,2) [1,4) [3,6) [5,8) -> input rows 2 3 3 1, padded-clipped rows 3 3 3 2.
    rows, padded = np.array([2, 3, 3, 1]), np.array([3, 3, 3, 2])
    np.testing.assert_allclose(with_pad[0, 0], np.outer(rows, rows) / np.outer(padded, padded))
    np.testing.assert_allclose(without[0, 0], np.ones((4, 4)))


def test_avg_pool2d_shape_errors():
    check_layer(AvgPool2d(5, padding=1), [(1, 2, 6, 6)], partial(avg_pool_ref, kernel_size=5, padding=1),
                cuda=False, bad_shapes=[
                    ([(1, 3, 4)], "expected an input of shape (C, H, W), found (3, 4)"),
                    ([(1, 1, 2, 9)], "input 2x9 (padded to 4x11) is smaller than the 5x5 window"),
                ])
    with pytest.raises(nc.ShapeError, match=r"avg_pool2d node 'pool': input 3x3 is smaller than the 5x5 "
                                            r"window: expected at least 5x5, found 3x3"):
        _model(AvgPool2d(5), (1, 1, 3, 3))


@pytest.mark.parametrize("kw, exc, text", [
    (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(kernel_size=(2, 2, 2)), TypeError, "kernel_size must be an int or a pair"),
    (dict(kernel_size=2, stride=(1, 0)), ValueError, "stride must be >= 1"),
    (dict(kernel_size=2, padding=-1), ValueError, "padding must be >= 0"),
    (dict(kernel_size=2, padding=2), ValueError, "padding must be at most half of kernel_size"),
    (dict(kernel_size=2, ceil_mode="yes"), TypeError, "ceil_mode must be True or False"),
    (dict(kernel_size=2, count_include_pad=None), TypeError, "count_include_pad must be True or False"),
    (dict(kernel_size=2, divisor_override=0), ValueError, "divisor_override must be positive"),
    (dict(kernel_size=2, divisor_override=2.5), TypeError, "divisor_override must be None or an int"),
])
def test_avg_pool2d_bad_hyper_parameters(kw, exc, text):
    with pytest.raises(exc, match=text):
        AvgPool2d(**kw)


def test_avg_pool2d_builder_config_and_flops():
    g = nc.Graph()
    h = g.avg_pool2d(g.input((4, 7, 7)), kernel_size=3, stride=2, padding=1, name="pool")
    model = nc.Model(g)
    assert model.output_shape == (4, 4, 4)
    assert h.config == {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": False,
                        "count_include_pad": True, "divisor_override": None}
    assert model.flops() == 4 * 4 * 4 * 9


@pytest.mark.cuda
def test_avg_pool2d_cuda_overlapping_padded():
    kw = dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)
    check_layer(AvgPool2d(**kw), [(1, 2, 4, 5)], partial(avg_pool_ref, **kw), cuda=True, threads=False)


@pytest.mark.cuda
def test_avg_pool2d_cuda_ceil_past_the_padding():
    kw = dict(kernel_size=(3, 2), stride=2, padding=1, ceil_mode=True)
    check_layer(AvgPool2d(**kw), [(2, 1, 6, 5)], partial(avg_pool_ref, **kw), cuda=True, threads=False)


@pytest.mark.cuda
def test_avg_pool2d_cuda_divisor_override():
    kw = dict(kernel_size=2, stride=1, divisor_override=3)
    check_layer(AvgPool2d(**kw), [(1, 2, 3, 4)], partial(avg_pool_ref, **kw), cuda=True, threads=False)
