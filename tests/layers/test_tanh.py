import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer


def tanh_ref(x):
    e = np.exp(-2 * np.abs(x))
    return np.sign(x) * (1 - e) / (1 + e)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (4, 10)])
def test_tanh_cpu(shape):
    check_layer(nc.get_layer("tanh")(), [shape], tanh_ref)


def test_tanh_extreme_inputs_stay_finite():
    x = np.array([[-1e4, -20.0, 0.0, 20.0, 1e4]])
    check_layer(nc.get_layer("tanh")(), [x.shape], tanh_ref, inputs=[x], threads=False)


def test_tanh_matches_torch():
    torch = pytest.importorskip("torch")
    g = nc.Graph()
    g.output(g.tanh(g.input((3, 4, 4))))
    model = nc.Model(g, dtype="float64")
    x = 2 * np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    gy = np.random.default_rng(1).standard_normal((2, 3, 4, 4))
    y = model.forward(x, training=True)
    gx = model.backward(gy)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.tanh(xt)
    yt.backward(torch.tensor(gy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_tanh_in_place_in_inference():
    # After a linear, the executor lets tanh overwrite its input in inference without gradients.
    g = nc.Graph()
    g.output(g.tanh(g.linear(g.input((6,)), out_features=5)))
    model = nc.Model(g)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), model.forward(x, training=False, grad=True))


@pytest.mark.cuda
def test_tanh_cuda():
    check_layer(nc.get_layer("tanh")(), [(2, 3, 3, 3)], tanh_ref, cuda=True, threads=False)


@pytest.mark.parametrize("size", [1, 1000, "min-1", "min", "min+7"])
def test_tanh_kernels_both_sides_of_parallel_min(size):
    # Serial below PARALLEL_MIN elements, parallel from there: the same values either way,
    # NaN carried through and the infinities saturating, against NumPy in float64.
    from numbacnn._threads import PARALLEL_MIN
    from numbacnn.layers import tanh_cpu

    n = size if isinstance(size, int) else PARALLEL_MIN + int(size[3:] or 0)
    rng = np.random.default_rng(0)
    x = (2 * rng.standard_normal(n)).astype(np.float32)
    if n >= 3:
        x[[n // 2, n // 3, n - 1]] = [np.nan, np.inf, -np.inf]
    y = np.full(n, 7.0, np.float32)
    tanh_cpu.tanh_forward(x, y)
    np.testing.assert_allclose(y, np.tanh(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
    gy = rng.standard_normal(n).astype(np.float32)
    gx = np.full(n, 7.0, np.float32)
    tanh_cpu.tanh_backward(y, gy, gx)
    y64 = y.astype(np.float64)
    np.testing.assert_allclose(gx, gy * (1 - y64 * y64), rtol=1e-6, atol=1e-7)
