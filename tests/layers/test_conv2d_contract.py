"""conv2d's refusals (shapes, constructor arguments), parameter initialisation, flops, and the
first layer's skipped input gradient: the layer's contract outside its arithmetic (the arithmetic
is tests/layers/test_conv2d.py's)."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

Conv2d = nc.get_layer("conv2d")


def test_conv2d_bad_shapes():
    check_layer(Conv2d(out_channels=4, kernel_size=3, groups=2), [(2, 4, 5, 5)], cuda=False, threads=False,
                bad_shapes=[([(2, 3, 5, 5)], "input has 3 channels, which groups=2 does not divide"),
                            ([(2, 4, 2, 5)], "smaller than the kernel's extent 3x3"),
                            ([(2, 4, 5, 1)], "found 5x1"),
                            ([(2, 20)], "expected a (C, H, W) input, found shape (20,)")])


def test_conv2d_dilated_kernel_too_big():
    g = nc.Graph()
    g.conv2d(g.input((1, 4, 4)), out_channels=1, kernel_size=3, dilation=2, name="c")
    with pytest.raises(nc.ShapeError, match=r"conv2d node 'c': input 4x4 padded to 4x4 is smaller than the "
                                            r"kernel's extent 5x5 \(kernel 3x3, dilation 2x2\)"):
        nc.Model(g)


@pytest.mark.parametrize("kwargs,error,text", [
    (dict(out_channels=0, kernel_size=3), ValueError, "out_channels must be >= 1"),
    (dict(out_channels=2.0, kernel_size=3), TypeError, "out_channels must be an int"),
    (dict(out_channels=2, kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(out_channels=2, kernel_size=(3,)), TypeError, "kernel_size must be an int or a pair"),
    (dict(out_channels=2, kernel_size=3, stride=(1, 0)), ValueError, "stride must be >= 1"),
    (dict(out_channels=2, kernel_size=3, dilation=0), ValueError, "dilation must be >= 1"),
    (dict(out_channels=2, kernel_size=3, padding=-1), ValueError, "padding must be >= 0"),
    (dict(out_channels=2, kernel_size=3, padding=(1, 2, 3)), TypeError, "padding must be an int or a pair"),
    (dict(out_channels=2, kernel_size=3, padding=(0, 0, -1, 0)), ValueError, "padding must be >= 0"),
    (dict(out_channels=2, kernel_size=3, padding="full"), ValueError, "padding must be 'same', 'valid'"),
    (dict(out_channels=2, kernel_size=3, stride=2, padding="same"), ValueError, "padding='same' needs stride 1"),
    (dict(out_channels=3, kernel_size=3, groups=2), ValueError, "out_channels=3 is not divisible by groups=2"),
    (dict(out_channels=2, kernel_size=3, groups=0), ValueError, "groups must be >= 1"),
    (dict(out_channels=2, kernel_size=3, bias=1), TypeError, "bias must be True or False"),
])
def test_conv2d_constructor_errors(kwargs, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        Conv2d(**kwargs)


def test_conv2d_params_init_and_flops():
    g = nc.Graph()
    g.conv2d(g.input((6, 10, 9)), out_channels=8, kernel_size=(3, 2), padding=1, groups=2, name="c")
    m = nc.Model(g, seed=3)
    w, b = m.params["c.weight"], m.params["c.bias"]
    assert w.shape == (8, 3, 3, 2) and b.shape == (8,) and w.dtype == b.dtype == np.float32
    bound = 1 / np.sqrt(3 * 3 * 2)  # PyTorch: kaiming_uniform(a=sqrt(5)) -> U(-1/sqrt(fan_in), ...)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert np.abs(b).max() <= bound
    assert m.output_shape == (8, 10, 10)
    assert m.flops() == 2 * 8 * 10 * 10 * 3 * 3 * 2 + 8 * 10 * 10
    g2 = nc.Graph()
    g2.conv2d(g2.input((6, 10, 9)), out_channels=8, kernel_size=3, bias=False, name="c")
    assert set(nc.Model(g2).params) == {"c.weight"}


def test_conv2d_first_layer_skips_input_gradient():
    g = nc.Graph()
    g.conv2d(g.input((2, 6, 6)), out_channels=3, kernel_size=3, name="c")
    m = nc.Model(g, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    y = m.forward(x, training=True)
    assert m.backward(np.ones_like(y), input_grad=False) is None
    assert np.allclose(m.grads["c.bias"], 2 * 4 * 4)


@pytest.mark.parametrize("k, pad, stride, groups", [(1, 0, 1, 1), (3, 1, 1, 1), (5, 2, 1, 1), (3, 1, 2, 2)])
def test_im2col_backward_without_the_input_gradient(k, pad, stride, groups, monkeypatch):
    # A first layer's backward (no input gradient) compiles im2col's kernel without the
    # input-gradient code: its weight and bias gradients are bit for bit those of the pass that
    # also makes gx, and (stride 1, one group) within 1e-4 of a float64 loop reference.
    from _conv_cases import naive
    from numbacnn.testing import run_fenced

    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "im2col")
    layer = Conv2d(out_channels=4, kernel_size=k, padding=pad, stride=stride, groups=groups)
    rng = np.random.default_rng(k * 7 + stride)
    shape = (3, 4, 7, 8)
    x = rng.standard_normal(shape).astype(np.float32)
    P, Q = layer.output_shape(shape[1:])[1:]
    gy = rng.standard_normal((shape[0], 4, P, Q)).astype(np.float32)
    params = {n: v.astype(np.float32) for n, v in layer.init_params([shape[1:]], rng).items()}
    runs = {want: run_fenced(layer, [x], gy, params, needs_input_grad=(want,)) for want in (True, False)}
    assert runs[False].gxs[0] is None and runs[True].gxs[0] is not None
    for name in ("weight", "bias"):
        np.testing.assert_array_equal(runs[False].grads[name], runs[True].grads[name], err_msg=name)
    if stride == 1 and groups == 1:
        _, _, gw, gb = naive(x.astype(np.float64), params["weight"].astype(np.float64),
                             params["bias"].astype(np.float64), gy.astype(np.float64), pad)
        np.testing.assert_allclose(runs[False].grads["weight"], gw, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(runs[False].grads["bias"], gb, rtol=1e-4, atol=1e-4)
