"""adaptive_max_pool2d: a naive reference over PyTorch's bins, PyTorch parity (ties and NaN
routing too), fenced random sizes, the messages, and agreement with the spp plugin, which
keeps its own copy of the bin rule (it imports only numbacnn's public modules)."""

from functools import partial

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

from _pool_cases import adaptive_cases, check_fenced

AdaptiveMaxPool2d = nc.get_layer("adaptive_max_pool2d")


def _bins(size, out):
    return [(int(np.floor(i * size / out)), int(np.ceil((i + 1) * size / out))) for i in range(out)]


def adaptive_max_ref(x, output_size, gy=None):
    """y (and, given gy, the input gradient routed to each bin's first maximum)."""
    P, Q = (output_size, output_size) if isinstance(output_size, int) else output_size
    N, C, H, W = x.shape
    P, Q = P or H, Q or W
    y, gx = np.zeros((N, C, P, Q)), np.zeros_like(x)
    for i, (h0, h1) in enumerate(_bins(H, P)):
        for j, (w0, w1) in enumerate(_bins(W, Q)):
            for n, c in np.ndindex(N, C):
                b = x[n, c, h0:h1, w0:w1]
                h, w = np.unravel_index(int(np.argmax(b)), b.shape)  # the first maximum
                y[n, c, i, j] = b[h, w]
                if gy is not None:
                    gx[n, c, h0 + h, w0 + w] += gy[n, c, i, j]
    return y if gy is None else (y, gx)


CONFIGS = [
    ((2, 3), (2, 3, 6, 9), (3, 2, 3)),
    ((3, 2), (1, 2, 7, 5), (2, 3, 2)),  # overlapping bins, batch 1
    (1, (2, 4, 5, 3), (4, 1, 1)),
    (4, (2, 2, 3, 2), (2, 4, 4)),  # more outputs than inputs
    ((5, None), (2, 3, 7, 4), (3, 5, 4)),
    ((None, 3), (1, 1, 2, 11), (1, 2, 3)),
]
IDS = [f"out{o}-{'x'.join(map(str, s))}" for o, s, _ in CONFIGS]


@pytest.mark.parametrize("output_size, shape, out", CONFIGS[:4], ids=IDS[:4])
def test_adaptive_max_pool2d_cpu(output_size, shape, out):
    layer = AdaptiveMaxPool2d(output_size)
    assert layer.output_shape(shape[1:]) == out
    check_layer(layer, [shape], partial(adaptive_max_ref, output_size=output_size), cuda=False)


def _model(layer, shape, dtype="float32"):
    g = nc.Graph()
    g.output(g.add_layer(layer, g.input(shape[1:]), name="pool"))
    return nc.Model(g, dtype=dtype)


def _both(torch, output_size, x, dtype, seed=1):
    model = _model(AdaptiveMaxPool2d(output_size), x.shape, dtype)
    y = model.forward(x, training=True)
    gy = np.random.default_rng(seed).standard_normal(y.shape).astype(dtype)
    gx = model.backward(gy)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.adaptive_max_pool2d(tx, output_size)
    ty.backward(torch.tensor(gy))
    return (y, gx), (ty.detach().numpy(), tx.grad.numpy())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output_size, shape, out", CONFIGS, ids=IDS)
def test_adaptive_max_pool2d_matches_torch(output_size, shape, out, dtype):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    (y, gx), (ty, tgx) = _both(torch, output_size, x, dtype)
    assert y.dtype == gx.dtype == np.dtype(dtype)
    assert y.shape == ty.shape == (shape[0], *out)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_allclose(gx, tgx, rtol=1e-6, atol=1e-6)


def test_adaptive_max_pool2d_ties_nan_and_inf_route_as_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).integers(0, 3, (2, 3, 7, 5)).astype(np.float32)  # many ties
    x[0, 0, 1, 1] = x[1, 2, 3, 3] = x[1, 2, 4, 4] = np.nan
    x[0, 1] = -np.inf
    for output_size in [(3, 4), (9, 2), 1]:
        (y, gx), (ty, tgx) = _both(torch, output_size, x, "float32")
        np.testing.assert_array_equal(y, ty)
        np.testing.assert_array_equal(gx, tgx)


def test_adaptive_max_pool2d_shape_errors_and_config():
    check_layer(AdaptiveMaxPool2d(2), [(1, 2, 3, 3)], partial(adaptive_max_ref, output_size=2), cuda=False,
                bad_shapes=[([(1, 3, 4)], "expected an input of shape (C, H, W), found (3, 4)")])
    with pytest.raises(ValueError, match="output_size must be >= 1"):
        AdaptiveMaxPool2d((0, 2))
    with pytest.raises(TypeError, match="output_size must be an int or a pair of ints or None"):
        AdaptiveMaxPool2d("4")
    g = nc.Graph()
    h = g.adaptive_max_pool2d(g.input((4, 9, 7)), output_size=4, name="pool")
    assert h.config == {"output_size": 4} and nc.Model(g).output_shape == (4, 4, 4)


def test_spp_plugin_agrees_with_adaptive_max_pool2d():
    # spp keeps its own copy of the bin rule and the NaN/tie rule: a drift shows up here.
    if "spp" not in nc.layer_names():
        pytest.skip("the spp plugin is not installed")
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, (2, 3, 7, 6)).astype(np.float64)
    x[0, 1, 2, 2] = np.nan
    levels = [1, 2, 4, 5]
    g = nc.Graph()
    g.output(g.spp(g.input(x.shape[1:]), levels=levels, name="spp"))
    spp = nc.Model(g, dtype="float64")
    y = spp.forward(x, training=True)
    gy = rng.standard_normal(y.shape)
    gx = spp.backward(gy)
    want_y, want_gx, at = [], np.zeros_like(x), 0
    for level in levels:
        m = _model(AdaptiveMaxPool2d(level), x.shape, "float64")
        part = m.forward(x, training=True)
        want_y.append(part.reshape(2, -1))
        want_gx += m.backward(gy[:, at:at + part[0].size].reshape(part.shape))
        at += part[0].size
    np.testing.assert_array_equal(y, np.concatenate(want_y, axis=1))
    np.testing.assert_allclose(gx, want_gx, rtol=1e-14, atol=1e-14)  # summed in another order


@pytest.mark.cuda
@pytest.mark.parametrize("output_size, shape", [((3, 2), (1, 2, 7, 5)), (4, (2, 1, 3, 2))])
def test_adaptive_max_pool2d_cuda(output_size, shape):
    check_layer(AdaptiveMaxPool2d(output_size), [shape], partial(adaptive_max_ref, output_size=output_size),
                cuda=True, threads=False)


CASES = adaptive_cases(16, seed=4)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{o}@{s}" for o, s in CASES])
def test_adaptive_max_pool2d_random_sizes_fenced(i):
    output_size, shape = CASES[i]
    check_fenced(AdaptiveMaxPool2d(output_size), shape, partial(adaptive_max_ref, output_size=output_size), seed=i,
                 exact_y=True)
