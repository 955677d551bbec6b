"""avg_pool1d: avg_pool3d's kernels on (N, C, 1, 1, L) views, checked against a naive
reference, PyTorch, fenced random geometries and the messages."""

from functools import partial

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer, run_fenced

from _pool_cases import case_ids, check_matches_torch

AvgPool1d = nc.get_layer("avg_pool1d")


def _one(v):
    return v[0] if isinstance(v, (tuple, list)) else v


def avg_pool1d_ref(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, gy=None):
    """y (and, given gy, the input gradient); positions in the padding count in the divisor
    with count_include_pad, positions past the padding (ceil mode) never."""
    k, s, p = _one(kernel_size), _one(stride or kernel_size), _one(padding)
    N, C, L = x.shape
    out = (-(-(L + 2 * p - k) // s) if ceil_mode else (L + 2 * p - k) // s) + 1
    if ceil_mode and (out - 1) * s >= L + p:
        out -= 1
    y, gx = np.zeros((N, C, out)), np.zeros_like(x)
    for o in range(out):
        taps = [o * s - p + j for j in range(k)]
        inside = [t for t in taps if 0 <= t < L]
        div = len([t for t in taps if -p <= t < L + p]) if count_include_pad else len(inside)
        y[:, :, o] = x[:, :, inside].sum(axis=2) / div
        if gy is not None:
            for t in inside:
                gx[:, :, t] += gy[:, :, o] / div
    return y if gy is None else (y, gx)


# (hyper-parameters, input shape, expected per-sample output shape)
CONFIGS = [
    (dict(kernel_size=2), (2, 3, 9), (3, 4)),
    (dict(kernel_size=3, stride=1, padding=1), (1, 4, 7), (4, 7)),  # batch 1, overlapping
    (dict(kernel_size=3, stride=1, padding=1, count_include_pad=False), (1, 4, 7), (4, 7)),
    (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 2, 10), (2, 6)),  # past the padding
    (dict(kernel_size=(4,), stride=(3,), padding=(2,), ceil_mode=True, count_include_pad=False), (3, 2, 13),
     (2, 5)),
    (dict(kernel_size=5, stride=5, ceil_mode=True), (2, 1, 3), (1, 1)),  # shorter than the window
]
IDS = case_ids(CONFIGS)


@pytest.mark.parametrize("kw, shape, out", CONFIGS[::2], ids=IDS[::2])
def test_avg_pool1d_cpu(kw, shape, out):
    layer = AvgPool1d(**kw)
    assert layer.output_shape(shape[1:]) == out
    check_layer(layer, [shape], partial(avg_pool1d_ref, **kw), cuda=False)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw, shape, out", CONFIGS, ids=IDS)
def test_avg_pool1d_matches_torch(kw, shape, out, dtype):
    tol = 1e-6 if dtype == "float32" else 1e-12
    check_matches_torch(AvgPool1d(**kw), "avg_pool1d", kw, shape, out, dtype, tol=tol, exact_y=False)


def test_avg_pool1d_has_no_divisor_override_as_in_torch():
    with pytest.raises(TypeError, match="layer 'avg_pool1d': got an unexpected keyword argument 'divisor_override'"):
        AvgPool1d(2, divisor_override=2)
    g = nc.Graph()
    h = g.avg_pool1d(g.input((8, 20)), kernel_size=3, name="pool")
    assert h.config == {"kernel_size": 3, "stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True}
    model = nc.Model(g)
    assert model.output_shape == (8, 6) and model.flops() == 8 * 6 * 3


def test_avg_pool1d_shape_errors():
    check_layer(AvgPool1d(3), [(2, 2, 5)], partial(avg_pool1d_ref, kernel_size=3), cuda=False, bad_shapes=[
        ([(2, 2, 3, 3)], "expected an input of shape (C, L), found (2, 3, 3)"),
        ([(2, 2, 2)], "input of length 2 is shorter than the window of 3: expected at least 3, found 2"),
    ])


@pytest.mark.parametrize("kw, exc, text", [
    (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(kernel_size=(2, 2)), TypeError, "kernel_size must be an int or a 1-tuple of ints"),
    (dict(kernel_size=2, stride=0), ValueError, "stride must be >= 1"),
    (dict(kernel_size=2, padding=2), ValueError, "expected padding <= 1, found 2 for kernel_size 2"),
    (dict(kernel_size=2, count_include_pad=None), TypeError, "count_include_pad must be True or False"),
])
def test_avg_pool1d_bad_hyper_parameters(kw, exc, text):
    with pytest.raises(exc, match=text.replace("(", r"\(").replace(")", r"\)")):
        AvgPool1d(**kw)


@pytest.mark.cuda
def test_avg_pool1d_cuda():
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    check_layer(AvgPool1d(**kw), [(2, 2, 8)], partial(avg_pool1d_ref, **kw), cuda=True, threads=False)


def _geometries(count, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        k = int(rng.integers(1, 6))
        kw = dict(kernel_size=k, stride=int(rng.integers(1, 4)), padding=int(rng.integers(0, k // 2 + 1)),
                  ceil_mode=bool(rng.random() < 0.5), count_include_pad=bool(rng.random() < 0.5))
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 14)))
        try:
            AvgPool1d(**kw).output_shape(shape[1:])
        except nc.ShapeError:
            continue
        out.append((kw, shape))
    return out


GEOMETRIES = _geometries(12, seed=13)


@pytest.mark.parametrize("i", range(len(GEOMETRIES)), ids=[f"{kw}@{s}" for kw, s in GEOMETRIES])
def test_avg_pool1d_random_geometries_fenced(i):
    kw, shape = GEOMETRIES[i]
    rng = np.random.default_rng(i)
    layer = AvgPool1d(**kw)
    x = rng.standard_normal(shape)
    gy = rng.standard_normal((shape[0], *layer.output_shape(shape[1:])))
    run = run_fenced(layer, [x], gy)
    want_y, want_gx = avg_pool1d_ref(x, gy=gy, **kw)
    np.testing.assert_allclose(run.y, want_y, rtol=1e-12, atol=1e-12, err_msg=f"forward of {layer!r} on {shape}")
    np.testing.assert_allclose(run.gxs[0], want_gx, rtol=1e-12, atol=1e-12, err_msg=f"input gradient of {layer!r}")
