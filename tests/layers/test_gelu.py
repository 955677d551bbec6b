import math

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

GELU = nc.get_layer("gelu")


def gelu_ref(approximate):
    """The textbook formulas, element by element, in float64."""
    def ref(x):
        y = np.empty_like(x)
        for i in np.ndindex(x.shape):
            v = float(x[i])
            if approximate == "tanh":
                y[i] = 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
            else:
                y[i] = v * 0.5 * math.erfc(-v / math.sqrt(2))
        return y
    return ref


@pytest.mark.parametrize("approximate, shape", [("none", (1, 1)), ("none", (2, 3, 5, 7)), ("tanh", (3, 11)),
                                                ("tanh", (2, 4, 3))])
def test_gelu_cpu(approximate, shape):
    check_layer(GELU(approximate=approximate), [shape], gelu_ref(approximate))


def torch_parity(approximate, x, dtype, device="cpu"):
    torch = pytest.importorskip("torch")
    x = np.asarray(x, dtype)
    gy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    g = nc.Graph()
    g.output(g.gelu(g.input(x.shape[1:]), approximate=approximate))
    model = nc.Model(g, dtype=dtype).to(device)
    host = lambda a: a if isinstance(a, np.ndarray) else a.copy_to_host()  # noqa: E731
    y = host(model.forward(x, training=True))
    gx = host(model.backward(gy))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.gelu(xt, approximate=approximate)
    yt.backward(torch.tensor(gy))
    # float64: within 1e-12 of PyTorch, relative, or 1e-13 absolute where the value is about 0
    # (tanh(x) one ulp from -1 for x < -19 leaves ~1e-14 where PyTorch gets exactly 0). In
    # float32, 1 + erf(x / sqrt(2)) cancels for x < -2, and PyTorch's vectorised erff is off
    # by up to ~5e-7 absolute there (its scalar path agrees with ours to the bit).
    rtol, atol = (1e-12, 1e-13) if dtype == "float64" else (2e-6, 1e-6)
    assert y.dtype == gx.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=rtol, atol=atol, err_msg="output")
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=rtol, atol=atol, err_msg="input gradient")


def inputs(shape, seed):
    """Normal values (scaled 3), with 0, -0.0, tails (+-6, +-10, -30) and tiny values planted."""
    x = (np.random.default_rng(seed).standard_normal(shape) * 3).reshape(-1)
    x[:8] = [0.0, -0.0, 6.0, -6.0, 10.0, -10.0, -30.0, 1e-8]
    return x.reshape(shape)


@pytest.mark.parametrize("approximate, shape, dtype", [
    ("none", (1, 9), "float64"), ("none", (3, 5, 7), "float32"), ("none", (2, 3, 5, 5), "float64"),
    ("tanh", (1, 3, 4, 5), "float32"), ("tanh", (4, 13), "float64"), ("tanh", (2, 2, 3, 3), "float64")])
def test_gelu_matches_torch(approximate, shape, dtype):
    torch_parity(approximate, inputs(shape, seed=len(shape)), dtype)


def test_gelu_exact_in_float64_over_a_dense_range():
    # 2001 points over [-12, 12]: both modes stay within 1e-12 of PyTorch's float64.
    x = np.linspace(-12, 12, 2001).reshape(3, 667)
    torch_parity("none", x, "float64")
    torch_parity("tanh", x, "float64")


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="approximate argument must be either none or tanh, found 'erf'"):
        GELU(approximate="erf")
    assert GELU().config == {"approximate": "none"}


def test_gelu_in_place_in_inference():
    g = nc.Graph()
    g.output(g.gelu(g.linear(g.input((6,)), out_features=5), approximate="tanh"))
    model = nc.Model(g)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), model.forward(x, training=False, grad=True))


@pytest.mark.cuda
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_cuda(approximate):
    check_layer(GELU(approximate=approximate), [(2, 3, 3, 3)], gelu_ref(approximate), cuda=True, threads=False)


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_cuda_matches_torch(approximate):
    torch_parity(approximate, inputs((2, 9), seed=0), "float32", device="cuda")
    torch_parity(approximate, inputs((2, 9), seed=1), "float64", device="cuda")
