import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

GlobalAvgPool2d = nc.get_layer("global_avg_pool2d")


def global_avg_pool_ref(x):
    N, C, H, W = x.shape
    y = np.zeros((N, C))
    for n in range(N):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    y[n, c] += x[n, c, h, w]
    return y / (H * W)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 1, 1, 1), (3, 2, 7, 7), (1, 4, 1, 6)])
def test_global_avg_pool2d_cpu(shape):
    check_layer(GlobalAvgPool2d(), [shape], global_avg_pool_ref, cuda=False, bad_shapes=[
        ([(2, 3, 4)], "expected an input of shape (C, H, W), found (3, 4)"),
        ([(2, 8)], "expected an input of shape (C, H, W), found (8,)"),
    ])


def test_global_avg_pool2d_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 7, 6)).astype(np.float32)
    g = nc.Graph()
    g.output(g.global_avg_pool2d(g.input(x.shape[1:]), name="gap"))
    model = nc.Model(g)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = model.backward(gy)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.adaptive_avg_pool2d(tx, 1).flatten(1)
    ty.backward(torch.tensor(gy))
    assert y.shape == tuple(ty.shape) == (3, 5)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_global_avg_pool2d_shape_config_and_flops():
    layer = GlobalAvgPool2d()
    assert layer.config == {}
    assert layer.output_shape((64, 7, 7)) == (64,)
    assert layer.flops([(64, 7, 7)], (64,)) == 64 * 49
    with pytest.raises(TypeError, match="global_avg_pool2d"):
        GlobalAvgPool2d(2)


@pytest.mark.cuda
def test_global_avg_pool2d_cuda():
    check_layer(GlobalAvgPool2d(), [(2, 3, 4, 5)], global_avg_pool_ref, cuda=True, threads=False)
