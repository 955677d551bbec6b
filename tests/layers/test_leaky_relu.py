import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer


def leaky_relu_ref(slope):
    def ref(x):
        y = x.copy()
        for i in np.ndindex(x.shape):
            if x[i] <= 0:
                y[i] = slope * x[i]
        return y
    return ref


# slope 0 is relu; a negative slope makes backward read the saved input instead of the output.
@pytest.mark.parametrize("slope, shape", [(0.01, (1, 1, 1, 1)), (0.2, (2, 3, 5, 7)), (0.0, (3, 11)), (-0.5, (2, 4, 3))])
def test_leaky_relu_cpu(slope, shape):
    check_layer(nc.get_layer("leaky_relu")(negative_slope=slope), [shape], leaky_relu_ref(slope))


def test_leaky_relu_default_slope_is_torch_default():
    assert nc.get_layer("leaky_relu")().config == {"negative_slope": 0.01}


@pytest.mark.parametrize("bad, error", [("0.1", TypeError), (None, TypeError), (float("inf"), ValueError), (float("nan"), ValueError)])
def test_leaky_relu_rejects_bad_slope(bad, error):
    with pytest.raises(error, match="negative_slope"):
        nc.get_layer("leaky_relu")(negative_slope=bad)


@pytest.mark.parametrize("slope", [0.01, -0.3])
def test_leaky_relu_matches_torch(slope):
    torch = pytest.importorskip("torch")
    g = nc.Graph()
    g.output(g.leaky_relu(g.input((3, 4, 4)), negative_slope=slope))
    model = nc.Model(g, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    gy = np.random.default_rng(1).standard_normal((2, 3, 4, 4))
    y = model.forward(x, training=True)
    gx = model.backward(gy)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.leaky_relu(xt, slope)
    yt.backward(torch.tensor(gy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12)


def test_leaky_relu_in_place_in_inference():
    # After a linear, the executor lets leaky_relu overwrite its input in inference without gradients.
    g = nc.Graph()
    g.output(g.leaky_relu(g.linear(g.input((6,)), out_features=5), negative_slope=-0.2))
    model = nc.Model(g)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), model.forward(x, training=False, grad=True))


@pytest.mark.cuda
@pytest.mark.parametrize("slope", [0.1, -0.5])
def test_leaky_relu_cuda(slope):
    check_layer(nc.get_layer("leaky_relu")(negative_slope=slope), [(2, 3, 3, 3)], leaky_relu_ref(slope),
                cuda=True, threads=False)
