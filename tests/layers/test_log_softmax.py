import zlib

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer, run_fenced

LogSoftmax = nc.get_layer("log_softmax")


def log_softmax_ref(dim):
    """Line by line along ``dim`` (moved last): x - max - log(sum(exp(x - max))); float64."""
    def ref(x):
        lines = np.moveaxis(x, dim, -1)
        y = np.empty_like(lines)
        for at in np.ndindex(lines.shape[:-1]):
            shifted = lines[at] - lines[at].max()
            y[at] = shifted - np.log(np.exp(shifted).sum())
        return np.moveaxis(y, -1, dim)
    return ref


def log_softmax_grad_ref(y, gy, dim):
    """The input gradient through each line's Jacobian, I - 1 softmax^T."""
    ys, gys = np.moveaxis(y, dim, -1), np.moveaxis(gy, dim, -1)
    gx = np.empty_like(ys)
    for at in np.ndindex(ys.shape[:-1]):
        p = np.exp(ys[at])
        gx[at] = (np.eye(p.size) - np.outer(np.ones(p.size), p)).T @ gys[at]
    return np.moveaxis(gx, -1, dim)


@pytest.mark.parametrize("dim, shape", [(1, (1, 1)), (1, (3, 10)), (-1, (2, 3, 5)), (1, (2, 3, 4, 5)),
                                        (-3, (2, 3, 4, 5))])
def test_log_softmax_cpu(dim, shape):
    check_layer(LogSoftmax(dim=dim), [shape], log_softmax_ref(dim))


def test_log_softmax_large_logits_stay_finite():
    x = np.random.default_rng(0).standard_normal((3, 6)) + np.array([[1000.0], [-1000.0], [0.0]])
    check_layer(LogSoftmax(dim=-1), [x.shape], log_softmax_ref(-1), inputs=[x], threads=False)


def torch_parity(dim, shape, dtype, device="cpu", scale=3.0):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(zlib.crc32(f"log_softmax {dim} {shape}".encode()))
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    g = nc.Graph()
    g.output(g.log_softmax(g.input(shape[1:]), dim=dim))
    model = nc.Model(g, dtype=dtype).to(device)
    host = lambda a: a if isinstance(a, np.ndarray) else a.copy_to_host()  # noqa: E731
    y = host(model.forward(x, training=True))
    gx = host(model.backward(gy))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.log_softmax(xt, dim=dim)
    yt.backward(torch.tensor(gy))
    rtol, atol = (1e-12, 1e-13) if dtype == "float64" else (2e-5, 1e-5)
    assert y.dtype == gx.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=rtol, atol=atol, err_msg="output")
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=rtol, atol=atol, err_msg="input gradient")


# Logits, per-pixel channels, odd sizes, batch 1, an inner axis past the 256-position runs, rank 5.
PARITY = [(1, (1, 10), "float64"), (1, (7, 1000), "float32"), (1, (5, 3, 7, 9), "float32"),
          (1, (2, 5, 67, 5), "float64"), (-1, (3, 4, 5), "float64"), (2, (2, 3, 4, 5), "float32"),
          (-2, (4, 2, 3, 5, 2), "float64")]


@pytest.mark.parametrize("dim, shape, dtype", PARITY)
def test_log_softmax_matches_torch(dim, shape, dtype):
    torch_parity(dim, shape, dtype)


def test_log_softmax_matches_torch_on_large_logits():
    torch_parity(1, (4, 9, 5), "float32", scale=1e4)


@pytest.mark.parametrize("shape, dim, dtype", [((3, 4, 71), 1, np.float32), ((2, 1, 2, 67, 5), -3, np.float64),
                                               ((5, 5, 3, 137), 2, np.float64), ((1, 130), -1, np.float32)])
def test_log_softmax_geometry_fenced(shape, dim, dtype):
    rng = np.random.default_rng(zlib.crc32(str(shape).encode()))
    layer = LogSoftmax(dim=dim)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    run = run_fenced(layer, [x], gy)
    want = log_softmax_ref(dim)(x.astype(np.float64))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(run.y, want, rtol=tol, atol=tol, err_msg=f"forward, dim {dim}, {shape}")
    np.testing.assert_allclose(run.gxs[0], log_softmax_grad_ref(want, gy.astype(np.float64), dim),
                               rtol=10 * tol, atol=10 * tol, err_msg=f"input gradient, dim {dim}, {shape}")
    np.testing.assert_array_equal(run_fenced(layer, [x], None, training=False).y, run.y)


def test_log_softmax_shares_softmax_rules():
    with pytest.raises(ValueError, match="log_softmax over dim 0, the batch axis"):
        LogSoftmax(dim=0)
    with pytest.raises(TypeError, match="dim must be an int"):
        LogSoftmax(dim="1")
    g = nc.Graph()
    g.output(g.log_softmax(g.input((4,)), dim=2, name="lp"))
    with pytest.raises(nc.ShapeError, match=r"log_softmax node 'lp': Dimension out of range \(expected to be in "
                                            r"range of \[-2, 1\], but got 2\)"):
        nc.Model(g)


@pytest.mark.cuda
@pytest.mark.parametrize("dim, shape", [(1, (2, 5)), (1, (2, 3, 2, 3))])
def test_log_softmax_cuda(dim, shape):
    check_layer(LogSoftmax(dim=dim), [shape], log_softmax_ref(dim), cuda=True, threads=False)


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_log_softmax_cuda_matches_torch():
    torch_parity(1, (2, 3, 2, 3), "float32", device="cuda")
    torch_parity(-1, (3, 5), "float64", device="cuda")
