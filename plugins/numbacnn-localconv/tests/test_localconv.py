"""numbacnn-localconv: the conformance kit on CPU and (tiny shapes) CUDA, PyTorch's unfold as an oracle."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer
from numbacnn_localconv.localconv import LocalConv


def localconv_ref(stride, pads):
    """Naive NumPy: pad, then one einsum per output position with that position's weight."""
    sh, sw = stride
    top, bottom, left, right = pads

    def ref(x, weight, bias=None):
        P, Q, K, C, R, S = weight.shape
        xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        y = np.zeros((x.shape[0], K, P, Q))
        for p in range(P):
            for q in range(Q):
                patch = xp[:, :, p * sh:p * sh + R, q * sw:q * sw + S]
                y[:, :, p, q] = np.einsum("ncrs,kcrs->nk", patch, weight[p, q])
        return y if bias is None else y + bias

    return ref


CASES = [
    # config, input shape, (stride, (top, bottom, left, right))
    (dict(out_channels=3, kernel_size=3, padding=1), (2, 2, 5, 5), ((1, 1), (1, 1, 1, 1))),
    (dict(out_channels=2, kernel_size=(2, 3), stride=2, bias=False), (2, 3, 6, 7), ((2, 2), (0, 0, 0, 0))),
    (dict(out_channels=2, kernel_size=2, stride=(1, 2), padding=(0, 1, 2, 0)), (3, 1, 4, 5), ((1, 2), (0, 1, 2, 0))),
    (dict(out_channels=1, kernel_size=3, padding="same"), (1, 2, 4, 3), ((1, 1), (1, 1, 1, 1))),
]
BAD = [([(2, 10)], "expected an input of shape (C, H, W), found (10,)"),
       ([(2, 1, 2, 2)], "smaller than the 3x3 kernel")]


@pytest.mark.parametrize("config, shape, geometry", CASES)
def test_localconv_cpu(config, shape, geometry):
    layer = LocalConv(**config)
    check_layer(layer, [shape], localconv_ref(*geometry), cuda=False)


def test_localconv_shape_errors():
    check_layer(LocalConv(2, 3), [(2, 1, 4, 4)], localconv_ref((1, 1), (0, 0, 0, 0)), cuda=False,
                threads=False, bad_shapes=BAD)


def test_localconv_parameter_layout():
    g = nc.Graph()
    g.output(g.add_layer(LocalConv(4, (3, 2), stride=2, padding=1), g.input((3, 9, 8)), name="lc"))
    model = nc.Model(g)
    assert model.shapes["lc"] == (4, 5, 5)
    assert model.params["lc.weight"].shape == (5, 5, 4, 3, 3, 2)
    assert model.params["lc.bias"].shape == (4, 5, 5)
    assert model.flops() == 2 * 4 * 5 * 5 * 3 * 3 * 2


def test_localconv_matches_torch_unfold():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    g = nc.Graph()
    g.output(g.add_layer(LocalConv(3, 3, stride=2, padding=(1, 0, 2, 1)), g.input((2, 7, 6)), name="lc"))
    model = nc.Model(g, seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 7, 6)).astype(np.float32)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = model.backward(gy)

    P, Q, K, C, R, S = model.params["lc.weight"].shape
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(model.params["lc.weight"], requires_grad=True)
    tb = torch.tensor(model.params["lc.bias"], requires_grad=True)
    cols = F.unfold(F.pad(tx, (2, 1, 1, 0)), (R, S), stride=2)          # (N, C*R*S, P*Q)
    ty = torch.einsum("njl,lkj->nkl", cols, tw.reshape(P * Q, K, C * R * S)).reshape(2, K, P, Q) + tb
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.grads["lc.weight"], tw.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.grads["lc.bias"], tb.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(out_channels=0, kernel_size=3), ValueError, "out_channels must be at least 1, found 0"),
    (dict(out_channels=2, kernel_size=(3, 3, 3)), TypeError, "kernel_size must be an int or 2 ints"),
    (dict(out_channels=2, kernel_size=3, stride=2, padding="same"), ValueError, "padding='same' needs stride 1"),
    (dict(out_channels=2, kernel_size=3, padding="full"), ValueError, "padding must be 'same', 'valid'"),
    (dict(out_channels=2, kernel_size=3, bias=1), TypeError, "bias must be True or False"),
])
def test_localconv_rejects_bad_hyper_parameters(kwargs, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        LocalConv(**kwargs)


@pytest.mark.parametrize("config, shape, geometry", [
    (dict(out_channels=2, kernel_size=3, padding=1), (2, 1, 3, 3), ((1, 1), (1, 1, 1, 1))),
    (dict(out_channels=1, kernel_size=(2, 3), stride=(2, 1), padding=(0, 1, 1, 0), bias=False), (1, 2, 4, 4),
     ((2, 1), (0, 1, 1, 0))),
])
def test_localconv_cuda(numbacnn_cuda, config, shape, geometry):
    check_layer(LocalConv(**config), [shape], localconv_ref(*geometry), cuda=True, threads=False)
