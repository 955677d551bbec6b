"""numbacnn-spp: the conformance kit on CPU and (tiny shapes) CUDA, PyTorch's adaptive max pooling as an oracle."""

import math

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer
from numbacnn_spp.spp import SPP


def spp_ref(levels):
    """Naive NumPy: for each level, each channel and each bin, the max over the bin's rectangle."""

    def ref(x):
        N, C, H, W = x.shape
        out = []
        for level in levels:
            y = np.empty((N, C, level, level))
            for i in range(level):
                h0, h1 = math.floor(i * H / level), math.ceil((i + 1) * H / level)
                for j in range(level):
                    w0, w1 = math.floor(j * W / level), math.ceil((j + 1) * W / level)
                    y[:, :, i, j] = x[:, :, h0:h1, w0:w1].max(axis=(2, 3))
            out.append(y.reshape(N, -1))
        return np.concatenate(out, axis=1)

    return ref


BAD = [([(2, 12)], "expected an input of shape (C, H, W), found (12,)"),
       ([(2, 3, 4)], "expected an input of shape (C, H, W), found (3, 4)")]


@pytest.mark.parametrize("levels, shape", [
    ((1, 2, 4), (2, 3, 8, 8)),    # bins tile the plane
    ((1, 2, 4), (2, 2, 7, 9)),    # uneven bins that overlap
    ((1, 2, 4), (1, 2, 3, 2)),    # a plane smaller than the finest grid
    ((3, 1, 2), (2, 1, 5, 6)),   # levels in any order
])
def test_spp_cpu(levels, shape):
    check_layer(SPP(levels), [shape], spp_ref(levels), cuda=False, bad_shapes=BAD)


def test_spp_any_input_size_gives_one_length():
    for H, W in [(4, 4), (9, 5), (1, 1)]:
        g = nc.Graph()
        g.output(g.add_layer(SPP(), g.input((5, H, W)), name="spp"))
        model = nc.Model(g)
        assert model.output_shape == (5 * (1 + 4 + 16),)
        assert model.forward(np.ones((2, 5, H, W), np.float32)).shape == (2, 105)


def test_one_spp_model_takes_any_input_size():
    # What spatial pyramid pooling is for: one model, one classifier, images of any size.
    g = nc.Graph()
    h = g.relu(g.conv2d(g.input((3, None, None)), out_channels=4, kernel_size=3, padding=1, name="conv"))
    g.output(g.linear(g.spp(h, levels=[1, 2, 4], name="spp"), out_features=5, name="fc"))
    model = nc.Model(g, seed=0)
    assert model.shapes["spp"] == (4 * 21,) and model.params["fc.weight"].shape == (5, 84)
    rng = np.random.default_rng(0)
    for H, W in [(13, 11), (20, 20), (13, 11)]:
        x = rng.standard_normal((2, 3, H, W)).astype(np.float32)
        assert model.forward(x).shape == (2, 5)
        y = model.forward(x, training=True)
        gx = model.backward(np.ones_like(y))
        assert y.shape == (2, 5) and gx.shape == x.shape and np.isfinite(gx).all()


def test_spp_matches_torch_adaptive_max_pool():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    levels = (1, 2, 4)
    g = nc.Graph()
    g.output(g.add_layer(SPP(levels), g.input((3, 7, 10)), name="spp"))
    model = nc.Model(g)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 10)).astype(np.float32)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = model.backward(gy)

    tx = torch.tensor(x, requires_grad=True)
    ty = torch.cat([F.adaptive_max_pool2d(tx, level).flatten(1) for level in levels], dim=1)
    ty.backward(torch.tensor(gy))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_spp_nan_propagates():
    g = nc.Graph()
    g.output(g.add_layer(SPP(), g.input((1, 2, 2)), name="spp"))
    x = np.array([[[[1.0, np.nan], [3.0, 2.0]]]], np.float32)
    y = nc.Model(g).forward(x)
    assert np.isnan(y[0, 0]) and np.isnan(y[0, 2]) and y[0, 3] == 3.0  # level 1, level 2 bins (0, 1), (1, 0)


@pytest.mark.parametrize("levels, error, text", [
    ((), TypeError, "levels must be a non-empty sequence of ints, found ()"),
    (4, TypeError, "levels must be a non-empty sequence of ints, found 4"),
    ((1, 2.0), TypeError, "levels must be a non-empty sequence of ints"),
    ((1, 0), ValueError, "levels must be at least 1, found [1, 0]"),
])
def test_spp_rejects_bad_levels(levels, error, text):
    with pytest.raises(error) as e:
        SPP(levels)
    assert text in str(e.value)


@pytest.mark.parametrize("levels, shape", [((1, 2, 4), (2, 2, 5, 6)), ((1, 2, 4), (1, 1, 3, 2))])
def test_spp_cuda(numbacnn_cuda, levels, shape):
    check_layer(SPP(levels), [shape], spp_ref(levels), cuda=True, threads=False)
