"""numbacnn-swish: the conformance kit on CPU and (tiny shapes) CUDA, and PyTorch as an oracle."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer
from numbacnn_swish.swish import Swish


def swish_ref(x, beta):
    return x / (1.0 + np.exp(-beta[0] * x))


@pytest.mark.parametrize("beta, shape", [(1.0, (2, 3, 4, 5)), (-0.5, (3, 7)), (2.5, (1, 1, 1, 1))])
def test_swish_cpu(beta, shape):
    check_layer(Swish(beta), [shape], swish_ref, cuda=False)


def test_swish_examples_pass_the_kit():
    report = nc.testing.check_installed_layer(Swish)
    assert report.passed, "\n".join(report)


def test_swish_matches_torch():
    torch = pytest.importorskip("torch")
    g = nc.Graph()
    g.output(g.add_layer(Swish(0.7), g.input((3, 4, 4)), name="act"))
    model = nc.Model(g)
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    gy = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    y = model.forward(x, training=True)
    gx = model.backward(gy)

    tx = torch.tensor(x, requires_grad=True)
    tb = torch.tensor([0.7], requires_grad=True)
    ty = tx * torch.sigmoid(tb * tx)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.grads["act.beta"], tb.grad.numpy(), rtol=1e-4)


def test_swish_rejects_bad_beta():
    with pytest.raises(TypeError, match="beta must be a number, found '1'"):
        Swish("1")
    with pytest.raises(ValueError, match="beta must be finite"):
        Swish(float("inf"))


def test_swish_cuda(numbacnn_cuda):
    check_layer(Swish(1.5), [(2, 3, 3, 3)], swish_ref, cuda=True, threads=False)
