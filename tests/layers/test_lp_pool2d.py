"""lp_pool2d: a naive reference (values and gradients), PyTorch parity for several p (1, 2,
fractional, negative, large, +-inf), zero and NaN windows as PyTorch, fenced random
geometries, and the messages."""

from functools import partial

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer, run_fenced

LPPool2d = nc.get_layer("lp_pool2d")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out(size, k, s, ceil_mode):
    n = (-(-(size - k) // s) if ceil_mode else (size - k) // s) + 1
    return n - 1 if ceil_mode and (n - 1) * s >= size else n


def lp_pool_ref(x, norm_type, kernel_size, stride=None, ceil_mode=False, gy=None):
    """y = (R*S * mean of x^p over the window's inputs)^(1/p) (so the plain sum when the whole
    window is inside); +inf: max |x|, -inf: min |x|. Given gy, also the input gradient of
    positive inputs, dy/dx = (R*S / n) * c^(1/p - 1) * x^(p - 1), or gy * sign(x) at the
    first extreme |x| for +-inf."""
    (R, S), (sh, sw), p = _pair(kernel_size), _pair(stride or kernel_size), float(norm_type)
    N, C, H, W = x.shape
    P, Q = _out(H, R, sh, ceil_mode), _out(W, S, sw, ceil_mode)
    y, gx = np.zeros((N, C, P, Q)), np.zeros_like(x)
    for n, ch, i, j in np.ndindex(N, C, P, Q):
        win = x[n, ch, i * sh:i * sh + R, j * sw:j * sw + S]
        if np.isinf(p):
            flat = np.abs(win).ravel()
            at = int(np.argmax(flat) if p > 0 else np.argmin(flat))
            y[n, ch, i, j] = flat[at]
            h, w = i * sh + at // win.shape[1], j * sw + at % win.shape[1]
            if gy is not None:
                gx[n, ch, h, w] += gy[n, ch, i, j] * np.sign(x[n, ch, h, w])
            continue
        c = R * S * np.mean(win ** p)
        y[n, ch, i, j] = c ** (1 / p)
        if gy is not None:
            gx[n, ch, i * sh:i * sh + R, j * sw:j * sw + S] += (
                gy[n, ch, i, j] * R * S / win.size * c ** (1 / p - 1) * win ** (p - 1))
    return y if gy is None else (y, gx)


def _positive(shape, seed=0):
    return [np.abs(np.random.default_rng(seed).standard_normal(shape)) + 0.2]


# (hyper-parameters, input shape, expected per-sample output shape, positive inputs only)
CONFIGS = [
    (dict(norm_type=2, kernel_size=2), (2, 3, 6, 5), (3, 3, 2), False),
    (dict(norm_type=2, kernel_size=3, stride=2, ceil_mode=True), (1, 2, 7, 8), (2, 3, 4), False),  # batch 1
    (dict(norm_type=1, kernel_size=(3, 2), stride=(2, 1)), (2, 2, 7, 5), (2, 3, 4), False),
    (dict(norm_type=3, kernel_size=2, stride=1), (2, 2, 5, 5), (2, 4, 4), True),
    (dict(norm_type=2.5, kernel_size=(2, 3), stride=2, ceil_mode=True), (1, 3, 5, 7), (3, 3, 3), True),
    (dict(norm_type=-1.5, kernel_size=2), (2, 2, 4, 6), (2, 2, 3), True),
    (dict(norm_type=20, kernel_size=3, stride=1), (1, 2, 5, 5), (2, 3, 3), True),
    (dict(norm_type=float("inf"), kernel_size=3, stride=2, ceil_mode=True), (2, 2, 6, 7), (2, 3, 3), False),
    (dict(norm_type=float("-inf"), kernel_size=2, stride=1), (1, 2, 4, 5), (2, 3, 4), False),
]
IDS = [f"{'-'.join(f'{k}{v}' for k, v in kw.items())}-{'x'.join(map(str, shape))}" for kw, shape, _, _ in CONFIGS]


@pytest.mark.parametrize("kw, shape, out, positive", CONFIGS[::2], ids=IDS[::2])
def test_lp_pool2d_cpu(kw, shape, out, positive):
    layer = LPPool2d(**kw)
    assert layer.output_shape(shape[1:]) == out
    check_layer(layer, [shape], partial(lp_pool_ref, **kw), cuda=False, inputs=_positive(shape) if positive else None)


def _model(layer, shape, dtype="float32"):
    g = nc.Graph()
    g.output(g.add_layer(layer, g.input(shape[1:]), name="pool"))
    return nc.Model(g, dtype=dtype)


def _torch_run(torch, kw, x, gy):
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.lp_pool2d(tx, kw["norm_type"], kw["kernel_size"], kw.get("stride"),
                                       kw.get("ceil_mode", False))
    ty.backward(torch.tensor(gy))
    return ty.detach().numpy(), tx.grad.numpy()


def _close(ours, theirs, tol):
    # NaN where PyTorch has NaN, the same infinities, the finite values close.
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw, shape, out, positive", CONFIGS, ids=IDS)
def test_lp_pool2d_matches_torch(kw, shape, out, positive, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = (_positive(shape, 1)[0] if positive else rng.standard_normal(shape)).astype(dtype)
    model = _model(LPPool2d(**kw), shape, dtype)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = model.backward(gy)
    ty, tgx = _torch_run(torch, kw, x, gy)
    assert y.dtype == gx.dtype == np.dtype(dtype)
    assert y.shape == ty.shape == (shape[0], *out)
    tol = 2e-5 if dtype == "float32" else 1e-12
    _close(y, ty, tol)
    _close(gx, tgx, tol)


@pytest.mark.parametrize("norm_type", [2, 1, 0.5, 3, float("inf")])
def test_lp_pool2d_zero_nan_and_inf_windows_as_torch(norm_type):
    # A window of zeros: PyTorch's y is 0 and its gradient 0 (relu's gradient at 0), though
    # c^(1/p - 1) is infinite there; p = 1 with a NaN in the window gives a NaN output yet a
    # zero gradient (sign(NaN) = 0 in the chain); p < 1 at x = 0 gives infinite gradients.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    if norm_type == 0.5:
        x = np.abs(x)
    x[0, 0, :2, :2] = 0
    x[0, 0, 2, 3] = 0
    x[0, 1, 0, 0] = np.nan
    x[1, 0, 2:4, 2] = np.inf
    x[1, 1, 4, 4] = -np.inf
    kw = dict(norm_type=norm_type, kernel_size=2, stride=2)
    model = _model(LPPool2d(**kw), x.shape)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    ty, tgx = _torch_run(torch, kw, x, gy)
    _close(y, ty, 2e-5)
    gx = model.backward(gy)  # one backward per forward (a second one is refused)
    _close(gx, tgx, 2e-5)
    if norm_type in (1, 2):
        assert y[0, 0, 0, 0] == 0 and np.isnan(y[0, 1, 0, 0])
        assert (gx[0, 0, :2, :2] == 0).all()


def test_lp_pool2d_l2_is_the_window_norm():
    x = np.arange(1 * 1 * 4 * 4, dtype=np.float64).reshape(1, 1, 4, 4) - 7
    y = _model(LPPool2d(2, 2), x.shape, "float64").forward(x)
    want = [[np.linalg.norm(x[0, 0, i:i + 2, j:j + 2]) for j in (0, 2)] for i in (0, 2)]
    np.testing.assert_allclose(y[0, 0], want, rtol=1e-15)


def test_lp_pool2d_shape_errors():
    check_layer(LPPool2d(2, 3), [(1, 2, 4, 4)], partial(lp_pool_ref, norm_type=2, kernel_size=3), cuda=False,
                bad_shapes=[
                    ([(1, 3, 4)], "expected an input of shape (C, H, W), found (3, 4)"),
                    ([(1, 1, 2, 4)], "input 2x4 is smaller than the 3x3 window: expected at least 3x3, found 2x4"),
                ])


@pytest.mark.parametrize("kw, exc, text", [
    (dict(norm_type=0, kernel_size=2), ValueError, "norm_type must not be 0"),
    (dict(norm_type="2", kernel_size=2), TypeError, "norm_type must be a number"),
    (dict(norm_type=True, kernel_size=2), TypeError, "norm_type must be a number"),
    (dict(norm_type=float("nan"), kernel_size=2), TypeError, "norm_type must be a number"),
    (dict(norm_type=2, kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(norm_type=2, kernel_size=(2, 2, 2)), TypeError, "kernel_size must be an int or a pair of ints"),
    (dict(norm_type=2, kernel_size=2, stride=0), ValueError, "stride must be >= 1"),
    (dict(norm_type=2, kernel_size=2, ceil_mode=1), TypeError, "ceil_mode must be True or False"),
])
def test_lp_pool2d_bad_hyper_parameters(kw, exc, text):
    with pytest.raises(exc, match=text):
        LPPool2d(**kw)


def test_lp_pool2d_builder_config_and_flops():
    g = nc.Graph()
    h = g.lp_pool2d(g.input((4, 8, 8)), norm_type=2, kernel_size=2, name="pool")
    model = nc.Model(g)
    assert model.output_shape == (4, 4, 4)
    assert h.config == {"norm_type": 2, "kernel_size": 2, "stride": None, "ceil_mode": False}
    assert model.flops() == 4 * 4 * 4 * (2 * 4 + 3)


@pytest.mark.cuda
@pytest.mark.parametrize("kw, positive", [
    (dict(norm_type=2, kernel_size=3, stride=2, ceil_mode=True), False),
    (dict(norm_type=1.5, kernel_size=2, stride=1), True),
    (dict(norm_type=float("inf"), kernel_size=2, stride=1), False),
    (dict(norm_type=float("-inf"), kernel_size=(2, 3), stride=2, ceil_mode=True), False),
])
def test_lp_pool2d_cuda(kw, positive):
    shape = (2, 2, 5, 6)
    check_layer(LPPool2d(**kw), [shape], partial(lp_pool_ref, **kw), cuda=True, threads=False,
                inputs=_positive(shape) if positive else None)


def _geometries(count, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        norm = [2, 1, 3.5, float("inf"), float("-inf")][int(rng.integers(0, 5))]
        kw = dict(norm_type=norm, kernel_size=(int(rng.integers(1, 5)), int(rng.integers(1, 5))),
                  stride=(int(rng.integers(1, 4)), int(rng.integers(1, 4))), ceil_mode=bool(rng.random() < 0.5))
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        try:
            LPPool2d(**kw).output_shape(shape[1:])
        except nc.ShapeError:
            continue
        out.append((kw, shape))
    return out


GEOMETRIES = _geometries(20, seed=8)


@pytest.mark.parametrize("i", range(len(GEOMETRIES)), ids=[f"{kw}@{s}" for kw, s in GEOMETRIES])
def test_lp_pool2d_random_geometries_fenced(i):
    kw, shape = GEOMETRIES[i]
    dtype = np.float32 if i % 4 == 3 else np.float64
    rng = np.random.default_rng(i)
    layer = LPPool2d(**kw)
    x = (np.abs(rng.standard_normal(shape)) + 0.2).astype(dtype)  # positive: any p is defined
    x[..., ::2] *= -1 if float(kw["norm_type"]) in (1, 2) or np.isinf(kw["norm_type"]) else 1
    gy = rng.standard_normal((shape[0], *layer.output_shape(shape[1:]))).astype(dtype)
    run = run_fenced(layer, [x], gy)
    want_y, want_gx = lp_pool_ref(x.astype(np.float64), gy=gy.astype(np.float64), **kw)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(run.y, want_y, rtol=tol, atol=tol, err_msg=f"forward of {layer!r} on {shape}")
    np.testing.assert_allclose(run.gxs[0], want_gx, rtol=tol, atol=tol, err_msg=f"input gradient of {layer!r}")
