"""global_max_pool2d: (N, C) maxima, gradients to each plane's first maximum (last NaN), as
PyTorch's adaptive_max_pool2d(x, 1).flatten(1) routes them."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer, run_fenced

GlobalMaxPool2d = nc.get_layer("global_max_pool2d")


def global_max_ref(x, gy=None):
    N, C = x.shape[:2]
    flat = x.reshape(N, C, -1)
    at = np.argmax(flat, axis=2)  # the first maximum
    y = np.take_along_axis(flat, at[..., None], axis=2)[..., 0]
    if gy is None:
        return y
    gx = np.zeros_like(flat)
    np.put_along_axis(gx, at[..., None], gy[..., None], axis=2)
    return y, gx.reshape(x.shape)


SHAPES = [(2, 3, 5, 4), (1, 1, 1, 1), (3, 2, 7, 7), (1, 4, 1, 6)]


@pytest.mark.parametrize("shape", SHAPES)
def test_global_max_pool2d_cpu(shape):
    check_layer(GlobalMaxPool2d(), [shape], global_max_ref, cuda=False, bad_shapes=[
        ([(2, 3, 4)], "expected an input of shape (C, H, W), found (3, 4)"),
        ([(2, 8)], "expected an input of shape (C, H, W), found (8,)"),
    ])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES + [(2, 5, 3, 9)])
def test_global_max_pool2d_matches_torch(shape, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, shape).astype(dtype)  # ties: the first maximum takes the gradient
    x.reshape(-1)[::7] = np.nan
    g = nc.Graph()
    g.output(g.global_max_pool2d(g.input(shape[1:]), name="gmp"))
    model = nc.Model(g, dtype=dtype)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = model.backward(gy)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.adaptive_max_pool2d(tx, 1).flatten(1)
    ty.backward(torch.tensor(gy))
    assert y.shape == tuple(ty.shape) == shape[:2] and y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(gx, tx.grad.numpy())


def test_global_max_pool2d_shape_config_and_flops():
    layer = GlobalMaxPool2d()
    assert layer.config == {}
    assert layer.output_shape((64, 7, 7)) == (64,)
    assert layer.flops([(64, 7, 7)], (64,)) == 64 * 49
    with pytest.raises(TypeError, match="global_max_pool2d"):
        GlobalMaxPool2d(2)


@pytest.mark.cuda
def test_global_max_pool2d_cuda():
    check_layer(GlobalMaxPool2d(), [(2, 3, 4, 5)], global_max_ref, cuda=True, threads=False)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 2, 1, 9), (3, 1, 6, 1)])
def test_global_max_pool2d_fenced(shape):
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal(shape), rng.standard_normal(shape[:2])
    run = run_fenced(GlobalMaxPool2d(), [x], gy)
    want_y, want_gx = global_max_ref(x, gy)
    np.testing.assert_array_equal(run.y, want_y)
    np.testing.assert_array_equal(run.gxs[0], want_gx)
