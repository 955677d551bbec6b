import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer


def flatten_ref(x):
    N = x.shape[0]
    y = np.empty((N, x.size // N))
    for n in range(N):
        y[n] = list(np.nditer(x[n], order="C"))
    return y


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 11), (2, 2, 3)])
def test_flatten_cpu(shape):
    check_layer(nc.get_layer("flatten")(), [shape], flatten_ref)


def test_flatten_output_shape_and_flops():
    g = nc.Graph()
    h = g.flatten(g.input((3, 4, 5)), name="flat")
    g.output(h)
    model = nc.Model(g)
    assert model.output_shape == (60,)
    assert model.flops() == 0


@pytest.mark.parametrize("bad, error", [(0, ValueError), (2, ValueError), ("1", TypeError), (1.0, TypeError)])
def test_flatten_rejects_other_start_dims(bad, error):
    with pytest.raises(error, match="start_dim"):
        nc.get_layer("flatten")(start_dim=bad)


def test_flatten_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    g = nc.Graph()
    g.output(g.flatten(g.input((3, 4, 5))))
    np.testing.assert_array_equal(nc.Model(g).forward(x), torch.nn.Flatten()(torch.from_numpy(x)).numpy())


def test_flatten_then_linear_trains_end_to_end():
    g = nc.Graph()
    h = g.flatten(g.input((2, 3, 3)))
    g.output(g.linear(h, out_features=4, name="fc"))
    model = nc.Model(g, dtype="float64")
    x = np.random.default_rng(0).standard_normal((5, 2, 3, 3))
    gy = np.random.default_rng(1).standard_normal((5, 4))
    model.forward(x, training=True)
    gx = model.backward(gy)
    w = model.params["fc.weight"]
    np.testing.assert_allclose(gx, (gy @ w).reshape(x.shape), rtol=1e-12)
    np.testing.assert_allclose(model.grads["fc.weight"], gy.T @ x.reshape(5, -1), rtol=1e-12)



def test_flatten_in_inference_shares_its_input_buffer():
    g = nc.Graph()
    h = g.flatten(g.add(g.input((2, 3, 3), name="a"), g.input((2, 3, 3), name="b")))
    g.output(g.linear(g.sigmoid(h), out_features=4))
    model = nc.Model(g)
    x = np.random.default_rng(0).standard_normal((2, 5, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(*x), model.forward(*x, training=False, grad=True))

@pytest.mark.cuda
def test_flatten_cuda():
    check_layer(nc.get_layer("flatten")(), [(2, 3, 2, 2)], flatten_ref, cuda=True, threads=False)
