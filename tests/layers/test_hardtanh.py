import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

Hardtanh = nc.get_layer("hardtanh")


def hardtanh_ref(lo, hi):
    def ref(x):
        y = x.copy()
        for i in np.ndindex(x.shape):
            if x[i] < lo:
                y[i] = lo
            elif x[i] > hi:
                y[i] = hi
        return y
    return ref


def off_edges(shape, lo, hi, seed=0):
    """Random values around and beyond both edges, none within 0.01 of one (finite differences
    would straddle the kink)."""
    x = np.random.default_rng(seed).uniform(lo - 2, hi + 2, shape)
    x[(np.abs(x - lo) < 0.01) | (np.abs(x - hi) < 0.01)] = (lo + hi) / 2
    return x


@pytest.mark.parametrize("lo, hi, shape", [(-1.0, 1.0, (1, 1)), (-1.0, 1.0, (2, 3, 5, 7)), (-0.5, 2.0, (3, 11)),
                                           (0.0, 0.25, (2, 4, 3))])
def test_hardtanh_cpu(lo, hi, shape):
    check_layer(Hardtanh(min_val=lo, max_val=hi), [shape], hardtanh_ref(lo, hi), inputs=[off_edges(shape, lo, hi)])


def torch_parity(config, x, dtype, device="cpu"):
    torch = pytest.importorskip("torch")
    x = np.asarray(x, dtype)
    gy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    g = nc.Graph()
    g.output(g.hardtanh(g.input(x.shape[1:]), **config))
    model = nc.Model(g, dtype=dtype).to(device)
    host = lambda a: a if isinstance(a, np.ndarray) else a.copy_to_host()  # noqa: E731
    y = host(model.forward(x, training=True))
    gx = host(model.backward(gy))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.hardtanh(xt, config.get("min_val", -1.0), config.get("max_val", 1.0))
    yt.backward(torch.tensor(gy))
    assert y.dtype == gx.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(gx, xt.grad.numpy())
    np.testing.assert_array_equal(np.signbit(y), np.signbit(yt.detach().numpy()))  # -0.0 kept as torch.clamp


def with_edges(shape, lo, hi, seed):
    """Random values with the edges themselves, -0.0 and infinities planted: the gradient is 0
    at an edge and beyond it (PyTorch's x <= min_val or x >= max_val)."""
    x = np.random.default_rng(seed).uniform(lo - 2, hi + 2, shape).reshape(-1)
    x[:6] = [lo, hi, -0.0, 0.0, -np.inf, np.inf]
    return x.reshape(shape)


@pytest.mark.parametrize("config, shape, dtype", [
    ({}, (1, 9), "float64"), ({}, (3, 5, 7), "float32"), ({"min_val": -0.5, "max_val": 2.0}, (2, 3, 5, 5), "float64"),
    ({"min_val": 0.0, "max_val": 6.0}, (1, 3, 4, 5), "float32"), ({"min_val": -3.0, "max_val": -1.0}, (4, 13), "float32"),
    ({"min_val": 0.5, "max_val": 0.5}, (2, 7), "float64")])
def test_hardtanh_matches_torch_at_and_beyond_the_edges(config, shape, dtype):
    lo, hi = config.get("min_val", -1.0), config.get("max_val", 1.0)
    torch_parity(config, with_edges(shape, lo, hi, seed=len(shape)), dtype)


def test_hardtanh_infinite_edges():
    # hardtanh(-inf, 2) is a one-sided clamp; torch accepts infinite edges too.
    torch_parity({"min_val": -np.inf, "max_val": 2.0}, with_edges((2, 9), -3.0, 2.0, seed=3), "float64")


@pytest.mark.parametrize("kwargs, error, text", [
    ({"min_val": 2.0, "max_val": 1.0}, ValueError, "min_val cannot be greater than max_val, found min_val=2.0"),
    ({"min_val": "0"}, TypeError, "min_val must be a number"), ({"max_val": None}, TypeError, "max_val must be a number"),
    ({"max_val": float("nan")}, ValueError, "max_val must be a number, not NaN"),
    ({"min_val": True}, TypeError, "min_val must be a number")])
def test_hardtanh_rejects_bad_edges(kwargs, error, text):
    with pytest.raises(error, match=text):
        Hardtanh(**kwargs)


def test_hardtanh_defaults_are_torch_defaults():
    assert Hardtanh().config == {"min_val": -1.0, "max_val": 1.0}


def test_hardtanh_in_place_in_inference():
    g = nc.Graph()
    g.output(g.hardtanh(g.linear(g.input((6,)), out_features=5), min_val=-0.3, max_val=0.4))
    model = nc.Model(g)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), model.forward(x, training=False, grad=True))


@pytest.mark.cuda
def test_hardtanh_cuda():
    check_layer(Hardtanh(min_val=-0.5, max_val=1.5), [(2, 3, 3, 3)], hardtanh_ref(-0.5, 1.5),
                inputs=[off_edges((2, 3, 3, 3), -0.5, 1.5)], cuda=True, threads=False)


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_hardtanh_cuda_matches_torch_at_the_edges():
    torch_parity({}, with_edges((2, 9), -1.0, 1.0, seed=0), "float32", device="cuda")
