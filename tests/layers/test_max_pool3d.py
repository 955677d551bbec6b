"""max_pool3d: a naive reference, PyTorch parity, the kernels' edges fenced, the messages.

Its kernels serve max_pool1d and max_pool2d as well (on views with a depth of 1), so the
random geometries here sweep what only a real depth reaches: depth padding, strides and
dilation, and the unrolled 2x2 branch with several depth taps, ceil mode hanging past the
last plane."""

from functools import partial

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer, run_fenced

from _pool_cases import case_ids, check_matches_torch, check_max_fenced, pool_model

MaxPool3d = nc.get_layer("max_pool3d")


def _triple(v):
    return (v, v, v) if isinstance(v, int) else tuple(v)


def _out(size, k, s, p, d, ceil_mode):
    # PyTorch's rule: floor (or ceil) of the span over the stride, plus one; in ceil mode a
    # window that would start in the far padding is dropped.
    span = size + 2 * p - d * (k - 1) - 1
    n = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    return n


def max_pool3d_ref(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, gy=None):
    """y (and, given gy, the input gradient routed to each window's first maximum) by loops
    over outputs and taps, taps outside the input skipped."""
    ks, ss = _triple(kernel_size), _triple(stride or kernel_size)
    ps, ds = _triple(padding), _triple(dilation)
    N, C = x.shape[:2]
    outs = [_out(x.shape[2 + i], ks[i], ss[i], ps[i], ds[i], ceil_mode) for i in range(3)]
    y = np.full((N, C, *outs), -np.inf)
    gx = np.zeros_like(x)
    for n, c, a, b, e in np.ndindex(N, C, *outs):
        at = None
        for t, r, s in np.ndindex(*ks):
            pos = tuple(o * st - p + k * dl for o, st, p, k, dl in zip((a, b, e), ss, ps, (t, r, s), ds))
            if all(0 <= v < m for v, m in zip(pos, x.shape[2:])) and (at is None or x[(n, c, *pos)] > y[n, c, a, b, e]):
                y[n, c, a, b, e], at = x[(n, c, *pos)], pos
        if gy is not None and at is not None:
            gx[(n, c, *at)] += gy[n, c, a, b, e]
    return y if gy is None else (y, gx)


# (hyper-parameters, input shape, expected per-sample output shape)
CONFIGS = [
    (dict(kernel_size=2), (2, 3, 4, 6, 5), (3, 2, 3, 2)),
    (dict(kernel_size=3, stride=1, padding=1), (1, 2, 3, 5, 4), (2, 3, 5, 4)),  # batch 1, overlapping
    (dict(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), (2, 2, 3, 7, 7), (2, 3, 4, 4)),
    (dict(kernel_size=2, stride=2, ceil_mode=True), (1, 2, 5, 5, 3), (2, 3, 3, 2)),  # odd sizes, ceil
    (dict(kernel_size=(2, 3, 2), stride=(1, 2, 3), padding=(1, 1, 0), dilation=(2, 1, 2)), (2, 1, 5, 6, 7),
     (1, 5, 3, 2)),
    (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (1, 1, 4, 6, 5), (1, 3, 4, 3)),
]
IDS = case_ids(CONFIGS)


@pytest.mark.parametrize("kw, shape, out", CONFIGS[:4], ids=IDS[:4])
def test_max_pool3d_cpu(kw, shape, out):
    layer = MaxPool3d(**kw)
    assert layer.output_shape(shape[1:]) == out
    check_layer(layer, [shape], partial(max_pool3d_ref, **kw), cuda=False)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw, shape, out", CONFIGS, ids=IDS)
def test_max_pool3d_matches_torch(kw, shape, out, dtype):
    check_matches_torch(MaxPool3d(**kw), "max_pool3d", kw, shape, out, dtype, tol=1e-6, exact_y=True)


def test_max_pool3d_ties_and_nan_route_as_torch():
    torch = pytest.importorskip("torch")
    # Ties everywhere (small integers), overlapping windows, NaNs and a volume of -inf.
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (1, 2, 4, 5, 5)).astype(np.float32)
    x[0, 0, 1, 2, 2] = x[0, 0, 2, 2, 3] = np.nan
    x[0, 1] = -np.inf
    for kw in (dict(kernel_size=2, stride=1), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)):
        model = pool_model(MaxPool3d(**kw), x.shape)
        y = model.forward(x, training=True)
        gy = np.arange(y.size, dtype=np.float32).reshape(y.shape)
        gx = model.backward(gy)
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.nn.functional.max_pool3d(tx, **kw)
        ty.backward(torch.tensor(gy))
        np.testing.assert_array_equal(y, ty.detach().numpy())
        np.testing.assert_array_equal(gx, tx.grad.numpy())


def test_max_pool3d_shape_errors():
    check_layer(MaxPool3d(3, padding=1), [(1, 2, 3, 4, 4)], partial(max_pool3d_ref, kernel_size=3, padding=1),
                cuda=False, bad_shapes=[
                    ([(1, 3, 4, 4)], "expected an input of shape (C, D, H, W), found (3, 4, 4)"),
                    ([(1, 1, 2, 3, 4, 4)], "expected an input of shape (C, D, H, W), found (1, 2, 3, 4, 4)"),
                ])
    with pytest.raises(nc.ShapeError, match=r"max_pool3d node 'pool': input 1x4x4 is smaller than the 2x2x2 "
                                            r"window: expected at least 2x2x2, found 1x4x4"):
        pool_model(MaxPool3d(2), (1, 1, 1, 4, 4))
    with pytest.raises(nc.ShapeError, match=r"input 4x2x9 \(padded to 4x4x11\) is smaller than the 1x5x5 window"):
        pool_model(MaxPool3d((1, 5, 5), padding=(0, 1, 1)), (1, 1, 4, 2, 9))


@pytest.mark.parametrize("kw, exc, text", [
    (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(kernel_size=(2, 2)), TypeError, "kernel_size must be an int or a triple of ints, found (2, 2)"),
    (dict(kernel_size=2.0), TypeError, "kernel_size must be an int or a triple of ints"),
    (dict(kernel_size=2, stride=(1, 0, 1)), ValueError, "stride must be >= 1"),
    (dict(kernel_size=2, padding=-1), ValueError, "padding must be >= 0"),
    (dict(kernel_size=(4, 2, 2), padding=(2, 2, 1)), ValueError, "expected padding <= 2x1x1, found 2x2x1 for "
                                                                 "kernel_size 4x2x2"),
    (dict(kernel_size=2, dilation=(1, 1)), TypeError, "dilation must be an int or a triple of ints"),
    (dict(kernel_size=2, ceil_mode=None), TypeError, "ceil_mode must be True or False"),
])
def test_max_pool3d_bad_hyper_parameters(kw, exc, text):
    with pytest.raises(exc, match=text.replace("(", r"\(").replace(")", r"\)")):
        MaxPool3d(**kw)


def test_max_pool3d_builder_config_and_flops():
    g = nc.Graph()
    h = g.max_pool3d(g.input((4, 5, 7, 7)), kernel_size=(1, 3, 3), stride=2, padding=[0, 1, 1], name="pool")
    model = nc.Model(g)
    assert model.output_shape == (4, 3, 4, 4)
    assert h.config == {"kernel_size": [1, 3, 3], "stride": 2, "padding": [0, 1, 1], "dilation": 1,
                        "ceil_mode": False}
    assert model.flops() == 4 * 3 * 4 * 4 * 9
    assert model.params == {} and model.buffers == {}


@pytest.mark.cuda
def test_max_pool3d_cuda_overlapping_padded():
    kw = dict(kernel_size=3, stride=1, padding=1)
    check_layer(MaxPool3d(**kw), [(1, 2, 2, 3, 4)], partial(max_pool3d_ref, **kw), cuda=True, threads=False)


@pytest.mark.cuda
def test_max_pool3d_cuda_ceil_dilated():
    kw = dict(kernel_size=(2, 2, 3), stride=2, padding=1, dilation=(2, 1, 1), ceil_mode=True)
    check_layer(MaxPool3d(**kw), [(2, 1, 4, 3, 5)], partial(max_pool3d_ref, **kw), cuda=True, threads=False)


def _geometries(count, seed):
    """Random legal geometries: one in three the unrolled 2x2 (unpadded, undilated) window."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        two = rng.random() < 1 / 3
        T = int(rng.integers(1, 4))
        R, S = (2, 2) if two else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        kw = dict(kernel_size=(T, R, S), stride=tuple(int(v) for v in rng.integers(1, 4, 3)),
                  ceil_mode=bool(rng.random() < 0.5))
        if two:
            kw["dilation"] = (int(rng.integers(1, 3)), 1, 1)
        else:
            kw["padding"] = tuple(int(rng.integers(0, k // 2 + 1)) for k in (T, R, S))
            kw["dilation"] = tuple(int(v) for v in rng.integers(1, 3, 3))
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 3)), *(int(v) for v in rng.integers(1, 7, 3)))
        try:
            MaxPool3d(**kw).output_shape(shape[1:])
        except nc.ShapeError:
            continue  # smaller than the window
        out.append((kw, shape))
    return out


GEOMETRIES = _geometries(30, seed=77)


def test_max_pool3d_random_geometries_cover_the_kernels_and_the_edges():
    unrolled = [(kw, s) for kw, s in GEOMETRIES if kw["kernel_size"][1:] == (2, 2) and "padding" not in kw]
    assert len([1 for kw, _ in GEOMETRIES if kw["stride"][2] == 1]) >= 6  # the row kernel
    assert len(unrolled) >= 6 and any(kw["kernel_size"][0] > 1 for kw, _ in unrolled)
    assert any(kw["ceil_mode"] and s[2] % 2 for kw, s in unrolled)
    assert any(min(s[2:]) == 1 for _, s in GEOMETRIES) and any(s[0] == 1 for _, s in GEOMETRIES)


@pytest.mark.parametrize("i", range(len(GEOMETRIES)), ids=[f"{kw}@{s}" for kw, s in GEOMETRIES])
def test_max_pool3d_random_geometries_fenced(i):
    kw, shape = GEOMETRIES[i]
    layer = MaxPool3d(**kw)
    run, x = check_max_fenced(layer, shape, partial(max_pool3d_ref, **kw), seed=i)
    np.testing.assert_array_equal(run_fenced(layer, [x], None, training=False).y, run.y)
