import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer


def add_ref(*xs):
    y = np.zeros_like(xs[0])
    for x in xs:
        for i in np.ndindex(x.shape):
            y[i] += x[i]
    return y


@pytest.mark.parametrize("shapes", [[(1, 1, 1, 1)] * 2, [(2, 3, 5, 7)] * 2, [(3, 11)] * 3, [(2, 2, 3, 3)] * 4])
def test_add_cpu(shapes):
    check_layer(nc.get_layer("add")(), shapes, add_ref, bad_shapes=[
        ([(2, 64, 8, 8), (2, 32, 8, 8)], "add expects inputs of one shape, found (64, 8, 8) and (32, 8, 8)"),
        ([(2, 4, 8, 8), (2, 4, 8, 8), (2, 4, 8, 7)], "found (4, 8, 8) and (4, 8, 7)"),
        ([(2, 12), (2, 3, 2, 2)], "found (12,) and (3, 2, 2)"),
    ])


def test_add_needs_two_inputs():
    g = nc.Graph()
    x = g.input((3, 4, 4))
    with pytest.raises(nc.GraphError, match="two or more inputs, found 1"):
        g.add(x)


def test_add_of_a_value_with_itself_doubles_the_gradient():
    g = nc.Graph()
    x = g.input((2, 3, 3))
    g.output(g.add(x, x))
    model = nc.Model(g, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3))
    gy = np.random.default_rng(1).standard_normal((2, 2, 3, 3))
    gy0 = gy.copy()
    np.testing.assert_array_equal(model.forward(x, training=True), 2 * x)
    np.testing.assert_array_equal(model.backward(gy), 2 * gy0)
    np.testing.assert_array_equal(gy, gy0)  # the caller's gradient is summed into a copy


def test_add_skips_gradients_nobody_needs():
    # Without the input gradient, only the branch with a parameter upstream gets one.
    g = nc.Graph()
    x = g.input((5,))
    g.output(g.add(g.linear(x, out_features=5, name="fc"), x))
    model = nc.Model(g, dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 5))
    gy = np.random.default_rng(1).standard_normal((3, 5))
    model.forward(x, training=True)
    assert model.backward(gy, input_grad=False) is None
    np.testing.assert_allclose(model.grads["fc.weight"], gy.T @ x, rtol=1e-12)
    np.testing.assert_allclose(model.grads["fc.bias"], gy.sum(0), rtol=1e-12)


@pytest.mark.cuda
def test_add_cuda():
    check_layer(nc.get_layer("add")(), [(2, 2, 3, 3)] * 3, add_ref, cuda=True, threads=False)


def _operands(size):
    """Two float32 vectors of ``size`` (an int, or "min", "min-1", "min+7" around PARALLEL_MIN)
    holding NaN, both infinities, inf + -inf and -0.0 + -0.0 where they are long enough."""
    from numbacnn._threads import PARALLEL_MIN

    n = size if isinstance(size, int) else PARALLEL_MIN + int(size[3:] or 0)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    if n >= 4:
        a[[n // 2, n // 3, n - 1, n - 2]] = [np.nan, np.inf, np.inf, -0.0]
        b[[n - 1, n - 2]] = [-np.inf, -0.0]
    with np.errstate(invalid="ignore"):  # inf + -inf
        return a, b, a + b


SIZES = [1, 1000, "min-1", "min", "min+7"]


@pytest.mark.parametrize("size", SIZES)
def test_add_kernel_both_sides_of_parallel_min(size):
    # Serial below PARALLEL_MIN elements, parallel from there: exact sums either way, NaN and
    # the infinities as NumPy has them, and the output may be the first input.
    from numbacnn.layers import add_cpu

    a, b, want = _operands(size)
    y = np.full(a.size, 7.0, np.float32)
    add_cpu.add_forward(a, b, y)
    np.testing.assert_array_equal(y.view(np.uint32), want.view(np.uint32))
    add_cpu.add_forward(a, b, a)
    np.testing.assert_array_equal(a.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("size", SIZES)
def test_add_relu_kernel_both_sides_of_parallel_min(size):
    # Inference's fused add + relu: relu's rule on a + b (NaN kept, -0.0 and negatives to +0),
    # serial below PARALLEL_MIN elements and parallel from there; the output may be a.
    from numbacnn.layers import add_cpu

    a, b, s = _operands(size)
    want = np.where(s <= 0, np.float32(0), s)  # NaN <= 0 is False: NaN stays
    y = np.full(a.size, 7.0, np.float32)
    add_cpu.add_relu_forward(a, b, y)
    np.testing.assert_array_equal(y.view(np.uint32), want.view(np.uint32))
    add_cpu.add_relu_forward(a, b, a)
    np.testing.assert_array_equal(a.view(np.uint32), want.view(np.uint32))
