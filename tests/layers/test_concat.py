import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer


def concat_ref(*xs):
    N = xs[0].shape[0]
    C = sum(x.shape[1] for x in xs)
    y = np.empty((N, C, *xs[0].shape[2:]))
    c0 = 0
    for x in xs:
        for c in range(x.shape[1]):
            y[:, c0 + c] = x[:, c]
        c0 += x.shape[1]
    return y


BAD = [
    ([(2, 64, 28, 28), (2, 32, 14, 14)],
     "concat along channels needs equal spatial sizes, found (64, 28, 28) and (32, 14, 14)"),
    ([(2, 4, 8, 8), (2, 4, 8, 8), (2, 4, 8, 7)], "found (4, 8, 8) and (4, 8, 7)"),
    ([(2, 12), (2, 3, 2, 2)], "concat expects inputs of one rank, found (12,) and (3, 2, 2)"),
]


@pytest.mark.parametrize("shapes", [
    [(1, 1, 1, 1), (1, 1, 1, 1)],
    [(2, 3, 5, 7), (2, 2, 5, 7)],
    [(3, 1, 3, 3), (3, 4, 3, 3), (3, 2, 3, 3)],
    [(2, 3), (2, 5)],
    [(1, 3, 4, 5), (1, 2, 4, 5), (1, 4, 4, 5)],  # one sample: NumPy copies, not the kernels
])
def test_concat_cpu(shapes):
    check_layer(nc.get_layer("concat")(), shapes, concat_ref, bad_shapes=BAD)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (2, ValueError), (-3, ValueError), ("1", TypeError)])
def test_concat_rejects_other_dims(bad, error):
    with pytest.raises(error, match="dim"):
        nc.get_layer("concat")(dim=bad)


def test_concat_skips_gradients_nobody_needs():
    g = nc.Graph()
    x = g.input((4,))
    g.output(g.concat(g.linear(x, out_features=3, name="fc"), x))
    model = nc.Model(g, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 4))
    gy = np.random.default_rng(1).standard_normal((2, 7))
    model.forward(x, training=True)
    assert model.backward(gy, input_grad=False) is None
    np.testing.assert_allclose(model.grads["fc.weight"], gy[:, :3].T @ x, rtol=1e-12)


def test_concat_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, c, 3, 4)) for c in (2, 1, 3)]
    g = nc.Graph()
    g.output(g.concat(*(g.input((c, 3, 4), name=f"x{c}") for c in (2, 1, 3))))
    model = nc.Model(g, dtype="float64")
    gy = rng.standard_normal((2, 6, 3, 4))
    y = model.forward(*xs, training=True)
    gxs = model.backward(gy)
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    yt = torch.cat(ts, dim=1)
    yt.backward(torch.tensor(gy))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    for gx, t in zip(gxs, ts):
        np.testing.assert_array_equal(gx, t.grad.numpy())


@pytest.mark.cuda
def test_concat_cuda():
    check_layer(nc.get_layer("concat")(), [(2, 1, 3, 3), (2, 3, 3, 3), (2, 2, 3, 3)], concat_ref,
                cuda=True, threads=False)


def test_concat_float32_batch_matches_numpy_and_torch():
    # A batch of many samples and inputs of unequal sizes: each sample's slice of every input
    # lands at its own row offset (the CPU kernels copy one slice per sample).
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    chans = (5, 7, 1, 3)
    xs = [rng.standard_normal((9, c, 6, 5), dtype=np.float32) for c in chans]
    g = nc.Graph()
    g.output(g.concat(*(g.input((c, 6, 5), name=f"x{i}") for i, c in enumerate(chans))))
    model = nc.Model(g)
    gy = rng.standard_normal((9, sum(chans), 6, 5), dtype=np.float32)
    y = model.forward(*xs, training=True)
    gxs = model.backward(gy)
    np.testing.assert_array_equal(y, concat_ref(*xs).astype(np.float32))
    np.testing.assert_array_equal(y, torch.cat([torch.from_numpy(x) for x in xs], dim=1).numpy())
    bounds = np.cumsum((0, *chans))
    for gx, c0, c1 in zip(gxs, bounds[:-1], bounds[1:]):
        assert gx.dtype == np.float32
        np.testing.assert_array_equal(gx, gy[:, c0:c1])
