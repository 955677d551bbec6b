import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer


def sigmoid_ref(x):
    y = np.empty_like(x)
    for i in np.ndindex(x.shape):
        v = float(x[i])
        y[i] = 1 / (1 + np.exp(-v)) if v >= 0 else np.exp(v) / (1 + np.exp(v))
    return y


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (4, 10)])
def test_sigmoid_cpu(shape):
    check_layer(nc.get_layer("sigmoid")(), [shape], sigmoid_ref)


def test_sigmoid_extreme_inputs_stay_finite():
    big = np.array([[-1e4, -100.0, -30.0, -1e-8, 0.0, 1e-8, 30.0, 100.0, 1e4]])
    check_layer(nc.get_layer("sigmoid")(), [big.shape], sigmoid_ref, inputs=[big], threads=False)
    g = nc.Graph()
    g.output(g.sigmoid(g.input((9,))))
    model = nc.Model(g)
    y = model.forward(big.astype(np.float32), training=True)
    gx = model.backward(np.ones_like(y))
    assert np.isfinite(y).all() and np.isfinite(gx).all()
    assert y[0, 0] == 0 and y[0, -1] == 1 and y[0, 4] == 0.5
    # Precision near 0 on the negative side (exp(x)/(1+exp(x)) there, not 1 - something).
    np.testing.assert_allclose(y[0, 2], np.exp(-30.0) / (1 + np.exp(-30.0)), rtol=1e-6)


def test_sigmoid_matches_torch():
    torch = pytest.importorskip("torch")
    g = nc.Graph()
    g.output(g.sigmoid(g.input((3, 4, 4))))
    model = nc.Model(g, dtype="float64")
    x = 5 * np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    gy = np.random.default_rng(1).standard_normal((2, 3, 4, 4))
    y = model.forward(x, training=True)
    gx = model.backward(gy)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.sigmoid(xt)
    yt.backward(torch.tensor(gy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_sigmoid_in_place_in_inference():
    # After a linear, the executor lets sigmoid overwrite its input in inference without gradients.
    g = nc.Graph()
    g.output(g.sigmoid(g.linear(g.input((6,)), out_features=5)))
    model = nc.Model(g)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), model.forward(x, training=False, grad=True))


@pytest.mark.cuda
def test_sigmoid_cuda():
    x = np.array([[-1e4, -30.0, -1.5, -0.1, 0.0, 0.3, 2.0, 30.0, 1e4]])
    check_layer(nc.get_layer("sigmoid")(), [x.shape], sigmoid_ref, inputs=[x], cuda=True, threads=False)


@pytest.mark.parametrize("size", [1, 1000, "min-1", "min", "min+7"])
def test_sigmoid_kernels_both_sides_of_parallel_min(size):
    # Serial below PARALLEL_MIN elements, parallel from there: the same values either way,
    # NaN carried through and the infinities saturating, against NumPy in float64.
    from numbacnn._threads import PARALLEL_MIN
    from numbacnn.layers import sigmoid_cpu

    n = size if isinstance(size, int) else PARALLEL_MIN + int(size[3:] or 0)
    rng = np.random.default_rng(0)
    x = (4 * rng.standard_normal(n)).astype(np.float32)
    if n >= 3:
        x[[n // 2, n // 3, n - 1]] = [np.nan, np.inf, -np.inf]
    y = np.full(n, 7.0, np.float32)
    sigmoid_cpu.sigmoid_forward(x, y)
    with np.errstate(over="ignore"):
        want = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-7)
    gy = rng.standard_normal(n).astype(np.float32)
    gx = np.full(n, 7.0, np.float32)
    sigmoid_cpu.sigmoid_backward(y, gy, gx)
    y64 = y.astype(np.float64)
    np.testing.assert_allclose(gx, gy * y64 * (1 - y64), rtol=1e-6, atol=1e-7)
