import zlib

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer, run_fenced

Softmax = nc.get_layer("softmax")


def softmax_ref(dim):
    """Line by line along ``dim`` (moved last), max subtracted; float64."""
    def ref(x):
        lines = np.moveaxis(x, dim, -1)
        y = np.empty_like(lines)
        for at in np.ndindex(lines.shape[:-1]):
            e = np.exp(lines[at] - lines[at].max())
            y[at] = e / e.sum()
        return np.moveaxis(y, -1, dim)
    return ref


def softmax_grad_ref(y, gy, dim):
    """The input gradient through each line's Jacobian, diag(y) - y y^T."""
    ys, gys = np.moveaxis(y, dim, -1), np.moveaxis(gy, dim, -1)
    gx = np.empty_like(ys)
    for at in np.ndindex(ys.shape[:-1]):
        s = ys[at]
        gx[at] = (np.diag(s) - np.outer(s, s)).T @ gys[at]
    return np.moveaxis(gx, -1, dim)


@pytest.mark.parametrize("dim, shape", [(1, (1, 1)), (1, (3, 10)), (-1, (2, 3, 5)), (1, (2, 3, 4, 5)),
                                        (3, (2, 3, 4, 5)), (-4, (1, 2, 3, 2, 3))])
def test_softmax_cpu(dim, shape):
    check_layer(Softmax(dim=dim), [shape], softmax_ref(dim))


def test_softmax_large_logits_do_not_overflow():
    # exp(1000) overflows float64; subtracting each line's max first keeps every value finite.
    x = np.random.default_rng(0).standard_normal((3, 6)) + np.array([[1000.0], [-1000.0], [0.0]])
    check_layer(Softmax(dim=1), [x.shape], softmax_ref(1), inputs=[x], threads=False)
    g = nc.Graph()
    g.output(g.softmax(g.input((6,))))
    y = nc.Model(g).forward((x * 30).astype(np.float32))
    assert y.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)


def _torch_softmax(name):
    torch = pytest.importorskip("torch")
    return getattr(torch.nn.functional, name)


def torch_parity(name, dim, shape, dtype, device="cpu", scale=3.0):
    """Our output and input gradient against PyTorch's, on one seeded input."""
    import torch

    fn = _torch_softmax(name)
    rng = np.random.default_rng(zlib.crc32(f"{name} {dim} {shape}".encode()))
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    g = nc.Graph()
    g.output(g.layer(name, g.input(shape[1:]), dim=dim))
    model = nc.Model(g, dtype=dtype).to(device)
    host = lambda a: a if isinstance(a, np.ndarray) else a.copy_to_host()  # noqa: E731
    y = host(model.forward(x, training=True))
    gx = host(model.backward(gy))
    xt = torch.tensor(x, requires_grad=True)
    yt = fn(xt, dim=dim)
    yt.backward(torch.tensor(gy))
    rtol, atol = (1e-12, 1e-14) if dtype == "float64" else (2e-5, 2e-6)
    assert y.dtype == gx.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=rtol, atol=atol, err_msg=f"{name} output")
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=rtol, atol=atol, err_msg=f"{name} input gradient")


# Logits, per-pixel channels, odd sizes, batch 1, an inner axis past the 256-position runs, rank 5.
PARITY = [(1, (1, 10), "float64"), (1, (7, 1000), "float32"), (1, (5, 3, 7, 9), "float32"),
          (1, (2, 5, 67, 5), "float64"), (-1, (3, 4, 5), "float64"), (3, (2, 3, 4, 5), "float32"),
          (-3, (4, 2, 3, 5, 2), "float64"), (2, (1, 3, 130), "float32")]


@pytest.mark.parametrize("dim, shape, dtype", PARITY)
def test_softmax_matches_torch(dim, shape, dtype):
    torch_parity("softmax", dim, shape, dtype)


def test_softmax_matches_torch_on_large_logits():
    torch_parity("softmax", 1, (4, 9, 5), "float32", scale=1e4)


def _random_case(rng, stretch):
    """A random rank (2 to 5, batch included), sizes and dim (positive or negative); with
    ``stretch``, an axis after dim runs past one or two of the CPU kernels' 256-position runs,
    unevenly."""
    rank = int(rng.integers(1, 5))
    shape = [int(s) for s in rng.integers(1, 6, rank + 1)]
    dim = int(rng.integers(1, rank + 1))
    if stretch and rank > 1:
        dim = min(dim, rank - 1)
        shape[int(rng.integers(dim + 1, rank + 1))] = int(rng.integers(120, 600))
    return tuple(shape), (dim - rank - 1 if rng.random() < 0.5 else dim)


@pytest.mark.parametrize("seed", range(12))
def test_softmax_random_geometry_fenced(seed):
    rng = np.random.default_rng(seed)
    shape, dim = _random_case(rng, stretch=seed % 3 != 0)
    dtype = np.float64 if seed % 2 else np.float32
    layer = Softmax(dim=dim)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    run = run_fenced(layer, [x], gy)
    want = softmax_ref(dim)(x.astype(np.float64))
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(run.y, want, rtol=tol, atol=tol, err_msg=f"forward, dim {dim}, {shape}")
    np.testing.assert_allclose(run.gxs[0], softmax_grad_ref(want, gy.astype(np.float64), dim), rtol=10 * tol,
                               atol=10 * tol, err_msg=f"input gradient, dim {dim}, {shape}")
    np.testing.assert_array_equal(run_fenced(layer, [x], None, training=False).y, run.y)


@pytest.mark.parametrize("K", [5, 37, 300])
def test_softmax_in_place_in_inference(K):
    # After a linear, the executor lets softmax overwrite its input in inference without
    # gradients: the same values bit for bit. (Its sum once shared a loop with the writes to
    # y, which LLVM vectorised, reassociating the sum, only where y did not overlap x.)
    g = nc.Graph()
    g.output(g.softmax(g.linear(g.input((6,)), out_features=K), dim=-1))
    model = nc.Model(g)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), model.forward(x, training=False, grad=True))


@pytest.mark.parametrize("dim, error, text", [
    (0, ValueError, "dim 0, the batch axis"), (True, TypeError, "dim must be an int"),
    (1.0, TypeError, "dim must be an int"), (None, TypeError, "dim must be an int")])
def test_softmax_rejects_bad_dim(dim, error, text):
    with pytest.raises(error, match=text):
        Softmax(dim=dim)


def test_softmax_shape_errors_name_the_node():
    for dim, text in [(3, "Dimension out of range (expected to be in range of [-3, 2], but got 3) for input (N, 4, 5)"),
                      (-4, "but got -4"), (-3, "dim -3 is the batch axis of input (N, 4, 5)")]:
        g = nc.Graph()
        g.output(g.softmax(g.input((4, 5)), dim=dim, name="probs"))
        with pytest.raises(nc.ShapeError) as e:
            nc.Model(g)
        assert "softmax node 'probs'" in str(e.value) and text in str(e.value)
    check_layer(Softmax(dim=2), [(2, 3, 4)], bad_shapes=[([(2, 3)], "Dimension out of range")], threads=False)


def test_softmax_default_dim_is_one():
    assert Softmax().config == {"dim": 1}


@pytest.mark.cuda
@pytest.mark.parametrize("dim, shape", [(1, (2, 5)), (1, (2, 3, 2, 3)), (-2, (1, 4, 3))])
def test_softmax_cuda(dim, shape):
    check_layer(Softmax(dim=dim), [shape], softmax_ref(dim), cuda=True, threads=False)


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_softmax_cuda_matches_torch():
    torch_parity("softmax", 1, (2, 3, 2, 3), "float32", device="cuda")
    torch_parity("softmax", -1, (3, 5), "float64", device="cuda")
