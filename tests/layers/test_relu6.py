import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

ReLU6 = nc.get_layer("relu6")


def relu6_ref(x):
    return np.minimum(np.maximum(x, 0.0), 6.0)


def off_edges(shape, seed=0):
    x = np.random.default_rng(seed).uniform(-2, 8, shape)
    x[(np.abs(x) < 0.01) | (np.abs(x - 6) < 0.01)] = 3.0
    return x


@pytest.mark.parametrize("shape", [(1, 1), (2, 3, 5, 7), (3, 11)])
def test_relu6_cpu(shape):
    check_layer(ReLU6(), [shape], relu6_ref, inputs=[off_edges(shape)])


def torch_parity(x, dtype, device="cpu"):
    torch = pytest.importorskip("torch")
    x = np.asarray(x, dtype)
    gy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    g = nc.Graph()
    g.output(g.relu6(g.input(x.shape[1:])))
    model = nc.Model(g, dtype=dtype).to(device)
    host = lambda a: a if isinstance(a, np.ndarray) else a.copy_to_host()  # noqa: E731
    y = host(model.forward(x, training=True))
    gx = host(model.backward(gy))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.relu6(xt)
    yt.backward(torch.tensor(gy))
    assert y.dtype == gx.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(gx, xt.grad.numpy())


def with_edges(shape, seed):
    """0, 6, -0.0 and infinities planted: PyTorch's relu6 gradient is 0 at x <= 0 and x >= 6."""
    x = np.random.default_rng(seed).uniform(-2, 8, shape).reshape(-1)
    x[:5] = [0.0, 6.0, -0.0, -np.inf, np.inf]
    return x.reshape(shape)


@pytest.mark.parametrize("shape, dtype", [((1, 9), "float64"), ((3, 5, 7), "float32"), ((2, 3, 5, 5), "float64"),
                                          ((1, 3, 4, 5), "float32"), ((4, 13), "float32")])
def test_relu6_matches_torch_at_and_beyond_the_edges(shape, dtype):
    torch_parity(with_edges(shape, seed=len(shape)), dtype)


def test_relu6_is_hardtanh_between_0_and_6_on_its_kernels():
    layer = ReLU6()
    assert layer.config == {} and (layer.min_val, layer.max_val) == (0.0, 6.0)
    with pytest.raises(TypeError, match="layer 'relu6'"):
        ReLU6(min_val=1.0)
    assert nc.layer_info("relu6")["devices"] == ["cpu", "cuda"]


@pytest.mark.cuda
def test_relu6_cuda():
    check_layer(ReLU6(), [(2, 3, 3, 3)], relu6_ref, inputs=[off_edges((2, 3, 3, 3))], cuda=True, threads=False)


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_relu6_cuda_matches_torch_at_the_edges():
    torch_parity(with_edges((2, 9), seed=0), "float32", device="cuda")
