import math

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

ELU = nc.get_layer("elu")


def elu_ref(alpha):
    def ref(x):
        y = x.copy()
        for i in np.ndindex(x.shape):
            if x[i] <= 0:
                y[i] = alpha * math.expm1(x[i])
        return y
    return ref


@pytest.mark.parametrize("alpha, shape", [(1.0, (1, 1)), (1.0, (2, 3, 5, 7)), (0.3, (3, 11)), (-1.5, (2, 4, 3)),
                                          (0.0, (2, 5))])
def test_elu_cpu(alpha, shape):
    check_layer(ELU(alpha=alpha), [shape], elu_ref(alpha))


def torch_parity(alpha, x, dtype, device="cpu"):
    torch = pytest.importorskip("torch")
    x = np.asarray(x, dtype)
    gy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    g = nc.Graph()
    g.output(g.elu(g.input(x.shape[1:]), alpha=alpha))
    model = nc.Model(g, dtype=dtype).to(device)
    host = lambda a: a if isinstance(a, np.ndarray) else a.copy_to_host()  # noqa: E731
    y = host(model.forward(x, training=True))
    gx = host(model.backward(gy))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.elu(xt, alpha)
    yt.backward(torch.tensor(gy))
    rtol, atol = (1e-14, 0) if dtype == "float64" else (1e-6, 1e-7)
    assert y.dtype == gx.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=rtol, atol=atol, err_msg="output")
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=rtol, atol=atol, err_msg="input gradient")


def inputs(shape, seed):
    """Normal values with 0, -0.0, tiny negatives (where exp(x) - 1 would lose the digits expm1
    keeps) and very negative ones planted."""
    x = (np.random.default_rng(seed).standard_normal(shape) * 3).reshape(-1)
    x[:6] = [0.0, -0.0, -1e-10, -3e-9, -40.0, 1e-10]
    return x.reshape(shape)


@pytest.mark.parametrize("alpha, shape, dtype", [(1.0, (1, 9), "float64"), (1.0, (3, 5, 7), "float32"),
                                                 (0.5, (2, 3, 5, 5), "float64"), (2.0, (1, 3, 4, 5), "float32"),
                                                 (-0.7, (4, 13), "float64"), (1.3, (2, 2, 3, 3), "float64")])
def test_elu_matches_torch(alpha, shape, dtype):
    torch_parity(alpha, inputs(shape, seed=len(shape)), dtype)


@pytest.mark.parametrize("bad, error", [("1", TypeError), (None, TypeError), (True, TypeError),
                                        (float("inf"), ValueError), (float("nan"), ValueError)])
def test_elu_rejects_bad_alpha(bad, error):
    with pytest.raises(error, match="alpha must be"):
        ELU(alpha=bad)


def test_elu_default_alpha_is_torch_default():
    assert ELU().config == {"alpha": 1.0}


def test_elu_in_place_in_inference():
    # Its gradient reads the input, yet in inference without gradients it may write over it.
    g = nc.Graph()
    g.output(g.elu(g.linear(g.input((6,)), out_features=5), alpha=0.5))
    model = nc.Model(g)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), model.forward(x, training=False, grad=True))


@pytest.mark.cuda
@pytest.mark.parametrize("alpha", [1.0, -0.5])
def test_elu_cuda(alpha):
    check_layer(ELU(alpha=alpha), [(2, 3, 3, 3)], elu_ref(alpha), cuda=True, threads=False)


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_elu_cuda_matches_torch():
    torch_parity(0.5, inputs((2, 9), seed=0), "float32", device="cuda")
    torch_parity(1.0, inputs((2, 9), seed=1), "float64", device="cuda")
