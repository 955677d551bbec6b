"""conv_transpose2d's CPU forward as one wide 3x3 convolution (conv_transpose2d_wide_cpu):
which geometries take it, its values against the naive scatter in float64 (odd sizes, no
bias, stride 1 and 2, a 6x6 kernel), a weight edited between inference calls, NaN and Inf
as the direct product gives them, and the layer's backward after it."""

import numpy as np
import pytest
from test_conv_transpose2d import convt_ref

import numbacnn as nc
from numbacnn.device import get_backend
from numbacnn.layer import Ctx
from numbacnn.layers import conv_transpose2d_cpu
from numbacnn.layers.conv2d_plan import force_path
from numbacnn.layers.conv_transpose2d_wide_cpu import wide_plan

ConvTranspose2d = nc.get_layer("conv_transpose2d")


def _geo(k, s, p):
    return (1, k, k, s, s, 1, 1, p, p)


def _out(H, k, s, p):
    return (H - 1) * s - 2 * p + k


@pytest.mark.parametrize("N, C, H, K, k, s, p, dtype, want", [
    (16, 64, 16, 32, 4, 2, 1, np.float32, True),   # the usual 2x upsampling
    (2, 16, 7, 16, 4, 2, 1, np.float32, True),     # odd size
    (2, 16, 5, 20, 6, 2, 2, np.float32, True),     # 9 taps a phase
    (2, 32, 9, 16, 3, 1, 1, np.float32, True),     # stride 1: one phase
    (16, 64, 16, 32, 4, 2, 1, np.float64, False),  # float64 stays on the exact columns
    (16, 64, 16, 32, 2, 2, 0, np.float32, False),  # one tap a phase: fewer than MIN_TAPS
    (16, 64, 16, 32, 3, 2, 1, np.float32, False),  # output 2H - 1: phases of unequal sizes
    (16, 64, 16, 32, 4, 2, 0, np.float32, False),  # output 2H + 2: more rows than the phases' H
    (16, 64, 16, 32, 5, 1, 2, np.float32, False),  # a 5x5 window
    (2, 32, 9, 8, 3, 1, 1, np.float32, False),     # 8 output channels: conv2d takes no Winograd
])
def test_which_geometries_take_the_wide_convolution(N, C, H, K, k, s, p, dtype, want):
    P = _out(H, k, s, p)
    got = wide_plan((N, C, H, H), (N, K, P, P), _geo(k, s, p), dtype)
    assert (got is not None) == want
    scratch = conv_transpose2d_cpu.conv_transpose2d_scratch((N, C, H, H), (N, K, P, P), _geo(k, s, p), dtype)
    assert ("wide" in scratch) == want
    if want:
        plan, shape = got
        assert plan.path == "winograd" and shape == (N, s * s * K, H, H)
    # A conv2d path forced for conv2d layers steers neither way here; float64 stays exact.
    for forced in ("im2col", "winograd"):
        with force_path(forced):
            assert (wide_plan((N, C, H, H), (N, K, P, P), _geo(k, s, p), dtype) is not None) == want


@pytest.fixture
def wide_calls(monkeypatch):
    """What each wide forward returned (True: the wide convolution gave y; False: x or w was
    not finite and the layer fell back), in call order."""
    calls = []
    real = conv_transpose2d_cpu.wide_forward

    def spy(*args):
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(conv_transpose2d_cpu, "wide_forward", spy)
    return calls


def _case(seed, x_shape, K, k, s=2, p=1, bias=True, output_padding=0):
    """(rng, x, w, b, cfg, layer, its Ctx) for an (N, C, H, W) input: random float32 data."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    R, S = (k, k) if isinstance(k, int) else k
    w = (rng.standard_normal((x_shape[1], K, R, S)) * 0.2).astype(np.float32)
    b = rng.standard_normal(K, dtype=np.float32) if bias else None
    cfg = dict(out_channels=K, kernel_size=k, stride=s, padding=p, bias=bias, output_padding=output_padding)
    layer = ConvTranspose2d(**cfg)
    return rng, x, w, b, cfg, layer, _ctx(layer, x, w, b)


def _ctx(layer, x, w, b, dtype=np.float32):
    backend = get_backend("cpu")
    ctx = Ctx("up", "cpu", np.dtype(dtype), backend, np.random.default_rng(0), layer=layer)
    ctx.params = {"weight": w, "bias": b} if b is not None else {"weight": w}
    ctx.grads = {k: np.zeros_like(v) for k, v in ctx.params.items()}
    ctx.needs_input_grad = (True,)
    return ctx


def _forward(layer, ctx, x, training=False):
    ctx.begin(training, grad=training)
    return np.array(layer.forward(ctx, x))


@pytest.mark.parametrize("N, C, H, W, K, k, s, p, bias, op", [
    (3, 16, 7, 5, 8, 4, 2, 1, True, 0),
    (2, 16, 6, 6, 12, 4, 2, 1, False, 0),
    (2, 16, 5, 6, 6, 6, 2, 2, True, 0),
    (2, 20, 9, 7, 16, 3, 1, 1, True, 0),
    (2, 16, 4, 4, 16, 4, 2, 1, True, 0),
    (2, 16, 5, 7, 8, (4, 3), (2, 1), 1, True, 0),  # a stride and a kernel of their own per axis
    (2, 16, 6, 5, 8, 5, 2, 2, True, 1),  # output_padding evens out kernel 5's phases
])
def test_the_wide_forward_matches_the_scatter(wide_calls, N, C, H, W, K, k, s, p, bias, op):
    _, x, w, b, cfg, layer, ctx = _case(1, (N, C, H, W), K, k, s, p, bias, op)
    want = convt_ref(cfg)(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64))
    for training in (False, True):
        y = _forward(layer, ctx, x, training)
        assert wide_calls == [True] * (1 + training)  # the path under test gave y
        np.testing.assert_allclose(y, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_an_inference_forward_sees_a_weight_edited_in_place(wide_calls):
    # The wide plan keeps Winograd's transformed weights between inference calls: an edit of
    # the layer's weight in place must reach the next call.
    _, x, w, b, cfg, layer, ctx = _case(2, (4, 16, 8, 8), 16, 4)
    _forward(layer, ctx, x)
    w[3, 5, 0, 2] += 1.0
    want = convt_ref(cfg)(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(_forward(layer, ctx, x), want, rtol=0, atol=2e-5 * np.abs(want).max())
    assert wide_calls == [True, True]


@pytest.mark.parametrize("C, K", [(16, 16), (4, 3)])
@pytest.mark.parametrize("where", ["x inf", "x nan", "w inf"])
def test_nan_and_inf_land_where_the_direct_product_puts_them(wide_calls, where, C, K):
    # A zero tap of the wide kernel times Inf would be NaN where the transposed convolution has
    # no product at all: the forward gives way to the direct paths then. With 4 -> 3 channels
    # (no wide convolution) AVX-512 hosts take shifted taps: "w inf" failed there before they
    # gave way too, having multiplied the padding's zeros by -Inf (NaN at 12 outputs of 16 -> 16).
    _, x, w, b, cfg, layer, ctx = _case(3, (2, C, 6, 6), K, 4)
    if where == "x inf":
        x[1, 3, 2, 4] = np.inf
    elif where == "x nan":
        x[0, C // 2, 5, 0] = np.nan
    else:
        w[2, K - 1, 1, 3] = -np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        want = convt_ref(cfg)(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    for training in (False, True):
        y = _forward(layer, ctx, x, training)
        assert ("wide" in ctx.plan(x.shape, lambda: None).scratch) == (C == 16)
        assert wide_calls == [False] * (1 + training) * (C == 16)  # tried, then fell back
        np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
        np.testing.assert_array_equal(np.isposinf(y), np.isposinf(want))
        np.testing.assert_array_equal(np.isneginf(y), np.isneginf(want))
        finite = np.isfinite(want)
        np.testing.assert_allclose(y[finite], want[finite], rtol=0, atol=2e-5 * np.abs(want[finite]).max())


def test_the_backward_after_the_wide_forward_gives_every_gradient(wide_calls):
    rng, x, w, b, cfg, layer, ctx = _case(4, (3, 16, 5, 7), 8, 4)
    y = _forward(layer, ctx, x, training=True)
    assert wide_calls == [True]
    gy = rng.standard_normal(y.shape, dtype=np.float32)
    gx = np.array(layer.backward(ctx, gy))
    ref = convt_ref(cfg)
    x64, w64, b64, gy64 = (a.astype(np.float64) for a in (x, w, b, gy))
    # The scatter is linear: its adjoint's values, by finite differences in float64 along random directions.
    for arg, got in ((0, gx), (1, ctx.grads["weight"])):
        d = rng.standard_normal((x64, w64)[arg].shape)
        args = [x64, w64, b64]
        plus, minus = list(args), list(args)
        plus[arg], minus[arg] = args[arg] + 1e-3 * d, args[arg] - 1e-3 * d
        fd = ((ref(*plus) - ref(*minus)) * gy64).sum() / 2e-3
        np.testing.assert_allclose((got * d).sum(), fd, rtol=1e-4)
    np.testing.assert_allclose(ctx.grads["bias"], gy64.sum(axis=(0, 2, 3)), rtol=1e-5)
