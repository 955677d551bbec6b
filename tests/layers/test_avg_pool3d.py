"""avg_pool3d: a naive reference, PyTorch parity, the kernels' edges fenced, the messages.

Its kernels serve avg_pool1d and avg_pool2d as well (on views with a depth of 1); the random
geometries here sweep what only a real depth reaches."""

from functools import partial

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer, run_fenced

from _pool_cases import case_ids, check_matches_torch, pool_model

AvgPool3d = nc.get_layer("avg_pool3d")


def _triple(v):
    return (v, v, v) if isinstance(v, int) else tuple(v)


def _out(size, k, s, p, ceil_mode):
    span = size + 2 * p - k
    n = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    return n


def avg_pool3d_ref(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                   divisor_override=None, gy=None):
    """y (and, given gy, the input gradient): each window position adds to the sum when it lies
    in the input, and to the divisor when it lies in the padded input (count_include_pad) or in
    the input; a ceil-mode window past the padding thus counts only up to it, as in PyTorch."""
    ks, ss, ps = _triple(kernel_size), _triple(stride or kernel_size), _triple(padding)
    N, C = x.shape[:2]
    sizes = x.shape[2:]
    outs = [_out(sizes[i], ks[i], ss[i], ps[i], ceil_mode) for i in range(3)]
    y, gx = np.zeros((N, C, *outs)), np.zeros_like(x)
    for o in np.ndindex(*outs):
        inside, count = [], 0
        for k in np.ndindex(*ks):
            pos = tuple(a * s - p + j for a, s, p, j in zip(o, ss, ps, k))
            within = all(0 <= v < m for v, m in zip(pos, sizes))
            padded = all(-p <= v < m + p for v, m, p in zip(pos, sizes, ps))
            inside += [pos] if within else []
            count += padded if count_include_pad else within
        div = divisor_override or count
        for pos in inside:
            y[(slice(None), slice(None), *o)] += x[(slice(None), slice(None), *pos)] / div
            if gy is not None:
                gx[(slice(None), slice(None), *pos)] += gy[(slice(None), slice(None), *o)] / div
    return y if gy is None else (y, gx)


# (hyper-parameters, input shape, expected per-sample output shape)
CONFIGS = [
    (dict(kernel_size=2), (2, 3, 4, 6, 5), (3, 2, 3, 2)),
    (dict(kernel_size=3, stride=1, padding=1), (1, 2, 3, 5, 4), (2, 3, 5, 4)),  # batch 1, overlapping
    (dict(kernel_size=3, stride=1, padding=1, count_include_pad=False), (1, 2, 3, 5, 4), (2, 3, 5, 4)),
    (dict(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), ceil_mode=True), (2, 2, 3, 6, 6),
     (2, 3, 4, 4)),  # the last windows run past the padded edge
    (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (1, 1, 6, 5, 7),
     (1, 4, 3, 4)),
    (dict(kernel_size=(2, 3, 2), stride=(1, 2, 3), padding=(1, 1, 0), divisor_override=5), (2, 1, 3, 7, 5),
     (1, 4, 4, 2)),
]
IDS = case_ids(CONFIGS)


@pytest.mark.parametrize("kw, shape, out", CONFIGS[:5:2], ids=IDS[:5:2])
def test_avg_pool3d_cpu(kw, shape, out):
    layer = AvgPool3d(**kw)
    assert layer.output_shape(shape[1:]) == out
    check_layer(layer, [shape], partial(avg_pool3d_ref, **kw), cuda=False)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw, shape, out", CONFIGS, ids=IDS)
def test_avg_pool3d_matches_torch(kw, shape, out, dtype):
    tol = 1e-6 if dtype == "float32" else 1e-12
    check_matches_torch(AvgPool3d(**kw), "avg_pool3d", kw, shape, out, dtype, tol=tol, exact_y=False)


def test_avg_pool3d_divisors_at_the_edges():
    # Ones in, so each output is (input positions in its window) / divisor, per axis a product.
    x = np.ones((1, 1, 6, 6, 6))
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    with_pad = pool_model(AvgPool3d(**kw), x.shape, "float64").forward(x)
    without = pool_model(AvgPool3d(**kw, count_include_pad=False), x.shape, "float64").forward(x)
    # Windows along each axis: [-1,2) [1,4) [3,6) [5,8) -> input 2 3 3 1, padded-clipped 3 3 3 2.
    rows, padded = np.array([2, 3, 3, 1]), np.array([3, 3, 3, 2])
    inside = np.einsum("i,j,k->ijk", rows, rows, rows)
    np.testing.assert_allclose(with_pad[0, 0], inside / np.einsum("i,j,k->ijk", padded, padded, padded))
    np.testing.assert_allclose(without[0, 0], np.ones((4, 4, 4)))


def test_avg_pool3d_shape_errors():
    check_layer(AvgPool3d(3, padding=1), [(1, 2, 3, 4, 4)], partial(avg_pool3d_ref, kernel_size=3, padding=1),
                cuda=False, bad_shapes=[
                    ([(1, 3, 4, 4)], "expected an input of shape (C, D, H, W), found (3, 4, 4)"),
                ])
    with pytest.raises(nc.ShapeError, match=r"avg_pool3d node 'pool': input 4x1x4 is smaller than the 2x2x2 "
                                            r"window: expected at least 2x2x2, found 4x1x4"):
        pool_model(AvgPool3d(2), (1, 1, 4, 1, 4))


@pytest.mark.parametrize("kw, exc, text", [
    (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(kernel_size=(2, 2)), TypeError, "kernel_size must be an int or a triple of ints"),
    (dict(kernel_size=2, stride=(1, 0, 1)), ValueError, "stride must be >= 1"),
    (dict(kernel_size=2, padding=(0, 0, 2)), ValueError, "padding must be at most half of kernel_size"),
    (dict(kernel_size=2, ceil_mode="yes"), TypeError, "ceil_mode must be True or False"),
    (dict(kernel_size=2, count_include_pad=1), TypeError, "count_include_pad must be True or False"),
    (dict(kernel_size=2, divisor_override=0), ValueError, "divisor_override must be positive"),
    (dict(kernel_size=2, divisor_override=1.5), TypeError, "divisor_override must be None or an int"),
])
def test_avg_pool3d_bad_hyper_parameters(kw, exc, text):
    with pytest.raises(exc, match=text):
        AvgPool3d(**kw)


def test_avg_pool3d_builder_config_and_flops():
    g = nc.Graph()
    h = g.avg_pool3d(g.input((4, 5, 7, 7)), kernel_size=(1, 3, 3), stride=2, name="pool")
    model = nc.Model(g)
    assert model.output_shape == (4, 3, 3, 3)
    assert h.config == {"kernel_size": [1, 3, 3], "stride": 2, "padding": 0, "ceil_mode": False,
                        "count_include_pad": True, "divisor_override": None}
    assert model.flops() == 4 * 27 * 9


@pytest.mark.cuda
def test_avg_pool3d_cuda_ceil_past_the_padding():
    kw = dict(kernel_size=(3, 2, 3), stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    check_layer(AvgPool3d(**kw), [(2, 1, 4, 3, 5)], partial(avg_pool3d_ref, **kw), cuda=True, threads=False)


@pytest.mark.cuda
def test_avg_pool3d_cuda_overlapping_divisor_override():
    kw = dict(kernel_size=2, stride=1, padding=1, divisor_override=3)
    check_layer(AvgPool3d(**kw), [(1, 2, 2, 3, 2)], partial(avg_pool3d_ref, **kw), cuda=True, threads=False)


def _geometries(count, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        ks = tuple(int(v) for v in rng.integers(1, 4, 3))
        kw = dict(kernel_size=ks, stride=tuple(int(v) for v in rng.integers(1, 4, 3)),
                  padding=tuple(int(rng.integers(0, k // 2 + 1)) for k in ks), ceil_mode=bool(rng.random() < 0.5),
                  count_include_pad=bool(rng.random() < 0.5),
                  divisor_override=int(rng.integers(1, 9)) if rng.random() < 0.15 else None)
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 3)), *(int(v) for v in rng.integers(1, 7, 3)))
        try:
            AvgPool3d(**kw).output_shape(shape[1:])
        except nc.ShapeError:
            continue
        out.append((kw, shape))
    return out


GEOMETRIES = _geometries(24, seed=5)


def test_avg_pool3d_random_geometries_reach_the_edges():
    assert any(kw["ceil_mode"] and any(kw["padding"]) for kw, _ in GEOMETRIES)
    assert any(kw["divisor_override"] for kw, _ in GEOMETRIES)
    assert any(not kw["count_include_pad"] for kw, _ in GEOMETRIES)
    assert any(min(s[2:]) == 1 for _, s in GEOMETRIES)


@pytest.mark.parametrize("i", range(len(GEOMETRIES)), ids=[f"{kw}@{s}" for kw, s in GEOMETRIES])
def test_avg_pool3d_random_geometries_fenced(i):
    kw, shape = GEOMETRIES[i]
    dtype = np.float32 if i % 4 == 3 else np.float64
    rng = np.random.default_rng(i)
    layer = AvgPool3d(**kw)
    x = rng.standard_normal(shape).astype(dtype)
    gy = rng.standard_normal((shape[0], *layer.output_shape(shape[1:]))).astype(dtype)
    run = run_fenced(layer, [x], gy)
    want_y, want_gx = avg_pool3d_ref(x.astype(np.float64), gy=gy.astype(np.float64), **kw)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(run.y, want_y, rtol=tol, atol=tol, err_msg=f"forward of {layer!r} on {shape}")
    np.testing.assert_allclose(run.gxs[0], want_gx, rtol=tol, atol=tol, err_msg=f"input gradient of {layer!r}")
