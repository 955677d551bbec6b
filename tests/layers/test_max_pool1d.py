"""max_pool1d: max_pool3d's kernels on (N, C, 1, 1, L) views, checked against a naive
reference, PyTorch, fenced random geometries and the messages."""

from functools import partial

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

from _pool_cases import case_ids, check_matches_torch, check_max_fenced, pool_model

MaxPool1d = nc.get_layer("max_pool1d")


def _one(v):
    return v[0] if isinstance(v, (tuple, list)) else v


def max_pool1d_ref(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, gy=None):
    """y (and, given gy, the input gradient of each window's first maximum), by loops."""
    k, s, p, d = _one(kernel_size), _one(stride or kernel_size), _one(padding), _one(dilation)
    N, C, L = x.shape
    span = L + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= L + p:
        out -= 1  # PyTorch drops a window that would start in the far padding
    y, gx = np.full((N, C, out), -np.inf), np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for o in range(out):
                taps = [o * s - p + j * d for j in range(k) if 0 <= o * s - p + j * d < L]
                at = taps[int(np.argmax(x[n, c, taps]))]  # argmax: the first maximum
                y[n, c, o] = x[n, c, at]
                if gy is not None:
                    gx[n, c, at] += gy[n, c, o]
    return y if gy is None else (y, gx)


# (hyper-parameters, input shape, expected per-sample output shape)
CONFIGS = [
    (dict(kernel_size=2), (2, 3, 9), (3, 4)),
    (dict(kernel_size=3, stride=1, padding=1), (1, 4, 7), (4, 7)),  # batch 1, overlapping
    (dict(kernel_size=3, stride=2, ceil_mode=True), (2, 2, 10), (2, 5)),
    (dict(kernel_size=(3,), stride=(2,), padding=(1,), dilation=(2,)), (3, 2, 11), (2, 5)),
    (dict(kernel_size=4, stride=3, padding=2, ceil_mode=True), (1, 3, 13), (3, 5)),  # ceil: 6th dropped
    (dict(kernel_size=5, stride=5, ceil_mode=True), (2, 1, 3), (1, 1)),  # shorter than the window
]
IDS = case_ids(CONFIGS)


@pytest.mark.parametrize("kw, shape, out", CONFIGS[:3], ids=IDS[:3])
def test_max_pool1d_cpu(kw, shape, out):
    layer = MaxPool1d(**kw)
    assert layer.output_shape(shape[1:]) == out
    check_layer(layer, [shape], partial(max_pool1d_ref, **kw), cuda=False)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw, shape, out", CONFIGS, ids=IDS)
def test_max_pool1d_matches_torch(kw, shape, out, dtype):
    check_matches_torch(MaxPool1d(**kw), "max_pool1d", kw, shape, out, dtype, tol=1e-6, exact_y=True)


def test_max_pool1d_shape_errors():
    check_layer(MaxPool1d(3), [(2, 2, 5)], partial(max_pool1d_ref, kernel_size=3), cuda=False, bad_shapes=[
        ([(2, 2, 3, 3)], "expected an input of shape (C, L), found (2, 3, 3)"),
        ([(2, 6)], "expected an input of shape (C, L), found (6,)"),
        ([(2, 2, 2)], "input of length 2 is shorter than the window of 3: expected at least 3, found 2"),
    ])
    with pytest.raises(nc.ShapeError, match=r"max_pool1d node 'pool': input of length 2 \(padded to 4\) is shorter "
                                            r"than the window of 5: expected at least 3, found 2"):
        pool_model(MaxPool1d(3, padding=1, dilation=2), (1, 1, 2))


@pytest.mark.parametrize("kw, exc, text", [
    (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(kernel_size=(2, 2)), TypeError, "kernel_size must be an int or a 1-tuple of ints, found (2, 2)"),
    (dict(kernel_size="2"), TypeError, "kernel_size must be an int or a 1-tuple of ints"),
    (dict(kernel_size=2, stride=0), ValueError, "stride must be >= 1"),
    (dict(kernel_size=3, padding=2), ValueError, "expected padding <= 1, found 2 for kernel_size 3"),
    (dict(kernel_size=2, dilation=0), ValueError, "dilation must be >= 1"),
    (dict(kernel_size=2, ceil_mode=0), TypeError, "ceil_mode must be True or False"),
])
def test_max_pool1d_bad_hyper_parameters(kw, exc, text):
    with pytest.raises(exc, match=text.replace("(", r"\(").replace(")", r"\)")):
        MaxPool1d(**kw)


def test_max_pool1d_builder_config_and_flops():
    g = nc.Graph()
    h = g.max_pool1d(g.input((8, 20)), kernel_size=3, stride=2, name="pool")
    model = nc.Model(g)
    assert model.output_shape == (8, 9)
    assert h.config == {"kernel_size": 3, "stride": 2, "padding": 0, "dilation": 1, "ceil_mode": False}
    assert model.flops() == 8 * 9 * 3


@pytest.mark.cuda
def test_max_pool1d_cuda():
    kw = dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)
    check_layer(MaxPool1d(**kw), [(2, 2, 7)], partial(max_pool1d_ref, **kw), cuda=True, threads=False)


def _geometries(count, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        k = int(rng.integers(1, 6))
        kw = dict(kernel_size=k, stride=int(rng.integers(1, 4)), padding=int(rng.integers(0, k // 2 + 1)),
                  dilation=int(rng.integers(1, 3)), ceil_mode=bool(rng.random() < 0.5))
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 14)))
        try:
            MaxPool1d(**kw).output_shape(shape[1:])
        except nc.ShapeError:
            continue
        out.append((kw, shape))
    return out


GEOMETRIES = _geometries(16, seed=11)


def test_max_pool1d_random_geometries_reach_the_row_kernel_and_the_edges():
    assert sum(kw["stride"] == 1 for kw, _ in GEOMETRIES) >= 3 and sum(kw["stride"] > 1 for kw, _ in GEOMETRIES) >= 3
    assert any(kw["ceil_mode"] for kw, _ in GEOMETRIES) and any(kw["padding"] for kw, _ in GEOMETRIES)


@pytest.mark.parametrize("i", range(len(GEOMETRIES)), ids=[f"{kw}@{s}" for kw, s in GEOMETRIES])
def test_max_pool1d_random_geometries_fenced(i):
    kw, shape = GEOMETRIES[i]
    layer = MaxPool1d(**kw)
    check_max_fenced(layer, shape, partial(max_pool1d_ref, **kw), seed=i)
