"""conv1d's F(4, 5) Winograd path (conv1d_winograd_cpu): one-row, 5-tap, stride-1 convolutions.

The layer forced onto the path against a naive sum over the taps and float64 finite
differences (tiles over either edge, uneven paddings, lengths that leave a partial last tile,
blocks of several samples and blocks of part of one sample, no bias); every array fenced on
random geometries; PyTorch as an oracle in float32; the plan's choice; NaN and Inf placed
where PyTorch puts them (the im2col fallback).
"""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.layers import conv1d_winograd_cpu, conv2d_cpu
from numbacnn.testing import check_layer, run_fenced

Conv1d = nc.get_layer("conv1d")


def _naive(x, w, b, pads):
    """y[n, k, q] = sum over c and taps s of w[k, c, s] * xpad[n, c, q + s] (+ b[k])."""
    N, C, L = x.shape
    K, _, S = w.shape
    xp = np.zeros((N, C, L + pads[0] + pads[1]))
    xp[:, :, pads[0]:pads[0] + L] = x
    Q = xp.shape[2] - S + 1
    y = np.zeros((N, K, Q))
    for s in range(S):
        y += np.einsum("ncq,kc->nkq", xp[:, :, s:s + Q], w[:, :, s])
    return y if b is None else y + b[None, :, None]


def _ref(pads):
    return lambda x, weight, bias=None: _naive(x, weight, bias, pads)


def _path(layer, shape, dtype="float32"):
    x4 = (shape[0], shape[1], 1, shape[2])
    out = (shape[0], *layer._output_shape_2d(x4[1:]))
    return conv2d_cpu.conv2d_plan("c", x4, out, layer._geometry(), True, dtype).path


CASES = [  # (padding, input shape, (left, right)); lengths leave 0-3 outputs in the last tile
    (2, (2, 3, 9), (2, 2)),
    ((4, 1), (3, 5, 6), (4, 1)),
    ((0, 3), (1, 2, 13), (0, 3)),
    (0, (2, 4, 5), (0, 0)),  # one output
    ("same", (2, 17, 11), (2, 2)),  # past one 16-lane group of channels
    (6, (1, 2, 1), (6, 6)),  # padding wider than the input
]


@pytest.mark.parametrize("padding,shape,pads", CASES, ids=[f"{p}@{s}" for p, s, _ in CASES])
@pytest.mark.parametrize("block", ["default", "one-tile", "whole-batch"])
def test_conv1d_winograd_against_loops_and_finite_differences(padding, shape, pads, block, monkeypatch):
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "winograd")
    if block != "default":  # blocks of one tile (one sample's tiles split), or all samples at once
        monkeypatch.setattr(conv1d_winograd_cpu, "_BLOCK_ELEMENTS", 1 if block == "one-tile" else 1 << 30)
    layer = Conv1d(out_channels=3, kernel_size=5, padding=padding, bias=shape[1] != 5)
    assert _path(layer, shape) == _path(layer, shape, "float64") == "winograd1d"
    check_layer(layer, [shape], _ref(pads), cuda=False, fd_points=6)


@pytest.mark.parametrize("seed", range(8))
def test_conv1d_winograd_fenced(seed, monkeypatch):
    # Random sizes and paddings, every array fenced (a read or write past any array fails).
    rng = np.random.default_rng(200 + seed)
    C, K = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    pads = tuple(int(v) for v in rng.integers(0, 7, 2))
    L = int(rng.integers(max(1, 5 - sum(pads)), 40))
    layer = Conv1d(out_channels=K, kernel_size=5, padding=pads, bias=bool(rng.integers(2)))
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "winograd")
    if seed % 2:
        monkeypatch.setattr(conv1d_winograd_cpu, "_BLOCK_ELEMENTS", int(rng.integers(1, 3000)))
    x = rng.standard_normal((int(rng.integers(1, 6)), C, L))
    gy = rng.standard_normal((x.shape[0], *layer.output_shape(x.shape[1:])))
    run = run_fenced(layer, [x], gy, seed=seed)
    w, b = run.params["weight"], run.params.get("bias")
    np.testing.assert_allclose(run.y, _naive(x, w, b, pads), rtol=1e-9, atol=1e-9)
    # the input gradient: gy correlated with the flipped, transposed weights, padded by 4 each side
    gxp = _naive(gy, w[:, :, ::-1].transpose(1, 0, 2), None, (4, 4))
    np.testing.assert_allclose(run.gxs[0], gxp[:, :, pads[0]:pads[0] + L], rtol=1e-9, atol=1e-9)
    xp = np.pad(x, ((0, 0), (0, 0), pads))
    Q = gy.shape[2]
    gw = np.stack([np.einsum("ncq,nkq->kc", xp[:, :, s:s + Q], gy) for s in range(5)], -1)
    np.testing.assert_allclose(run.grads["weight"], gw, rtol=1e-9, atol=1e-9)
    if layer.bias:
        np.testing.assert_allclose(run.grads["bias"], gy.sum(axis=(0, 2)), rtol=1e-9, atol=1e-9)


def test_conv1d_winograd_is_the_default_for_wide_5_tap_convolutions():
    wide = Conv1d(out_channels=32, kernel_size=5, padding=2)
    assert _path(wide, (8, 32, 300)) == "winograd1d"
    assert _path(wide, (8, 32, 300), "float64") == "im2col"  # float64: accuracy first (conv2d_plan)
    assert _path(wide, (40, 32, 30)) == "im2col"  # 30 outputs: under WINOGRAD1D_MIN_OUTPUTS
    assert _path(wide, (4, 32, 300)) == "winograd1d" and _path(wide, (3, 32, 300)) == "im2col"  # little work
    assert _path(wide, (8, 16, 300)) == "im2col"  # few channels
    for other in (dict(kernel_size=3, padding=1), dict(kernel_size=5, stride=2), dict(kernel_size=5, dilation=2),
                  dict(kernel_size=5, groups=2)):
        assert _path(Conv1d(out_channels=32, **other), (8, 32, 300)) == "im2col", other
    # two rows with a 1x5 window is conv2d's business, not this path's
    two_rows = nc.get_layer("conv2d")(out_channels=32, kernel_size=(1, 5), padding=(0, 2))
    out = (2, *two_rows._output_shape_2d((32, 2, 300)))
    assert conv2d_cpu.conv2d_plan("c", (2, 32, 2, 300), out, two_rows._geometry(), True, "float32").path != "winograd1d"


def test_forcing_winograd_on_a_conv1d_it_cannot_run_names_the_node(monkeypatch):
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "winograd")
    with pytest.raises(ValueError, match=r"node 'c': conv2d path 'winograd' was forced .* kernel 1x3"):
        _path(Conv1d(out_channels=4, kernel_size=3), (2, 4, 20))


def _model(N, C, K, L, dtype="float32", seed=1):
    assert _path(Conv1d(out_channels=K, kernel_size=5, padding=2), (N, C, L), dtype) == "winograd1d"
    g = nc.Graph()
    g.conv1d(g.input((C, L)), out_channels=K, kernel_size=5, padding=2, name="c")
    return nc.Model(g, seed=seed, dtype=dtype)


def test_conv1d_winograd_matches_torch_in_float32():
    torch = pytest.importorskip("torch")
    m = _model(14, 40, 36, 70)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((14, 40, 70)).astype(np.float32)
    y = m.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = m.backward(gy)
    assert y.dtype == gx.dtype == m.grads["c.weight"].dtype == np.float32
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(m.params["c.weight"], requires_grad=True)
    bt = torch.tensor(m.params["c.bias"], requires_grad=True)
    yt = torch.nn.functional.conv1d(xt, wt, bt, padding=2)
    yt.backward(torch.tensor(gy))
    for got, want in ((y, yt), (gx, xt.grad), (m.grads["c.weight"], wt.grad), (m.grads["c.bias"], bt.grad)):
        want = want.detach().numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("where", ["x", "gy"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_conv1d_winograd_puts_nan_and_inf_where_torch_does(where, value):
    # A tile transform would spread one NaN or Inf over its tile's 4 outputs (and Inf - Inf
    # makes NaN); the layer recomputes on the im2col path, which puts them where PyTorch does.
    torch = pytest.importorskip("torch")
    m = _model(6, 32, 32, 200)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 32, 200)).astype(np.float32)
    gy = rng.standard_normal((6, 32, 200)).astype(np.float32)
    (x if where == "x" else gy)[1, 5, 17] = value
    y = m.forward(x, training=True)
    gx = m.backward(gy)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(m.params["c.weight"], requires_grad=True)
    yt = torch.nn.functional.conv1d(xt, wt, torch.tensor(m.params["c.bias"]), padding=2)
    yt.backward(torch.tensor(gy))
    for got, want in ((y, yt), (gx, xt.grad), (m.grads["c.weight"], wt.grad)):
        want = want.detach().numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=0, atol=1e-4 * max(1.0, np.abs(want[ok]).max()))


def test_one_row_conv2d_takes_it_too(monkeypatch):
    # conv2d on one-row images with a 1x5 window is the same convolution: same plan, same path
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "winograd")
    layer = nc.get_layer("conv2d")(out_channels=3, kernel_size=(1, 5), padding=(0, 0, 3, 1))
    out = (2, *layer._output_shape_2d((4, 1, 10)))
    assert conv2d_cpu.conv2d_plan("c", (2, 4, 1, 10), out, layer._geometry(), True, "float64").path == "winograd1d"

    def ref(x, weight, bias):
        return _naive(x[:, :, 0], weight[:, :, 0], bias, (3, 1))[:, :, None]

    check_layer(layer, [(2, 4, 1, 10)], ref, cuda=False, fd_points=6)
