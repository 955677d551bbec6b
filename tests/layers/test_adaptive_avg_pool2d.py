"""adaptive_avg_pool2d: a naive reference over PyTorch's bins (overlapping, and more outputs
than inputs), PyTorch parity, free input sizes, fenced random sizes, the messages."""

from functools import partial

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

from _pool_cases import adaptive_cases, check_fenced

AdaptiveAvgPool2d = nc.get_layer("adaptive_avg_pool2d")


def _bins(size, out):
    # Output i pools inputs floor(i * size / out) .. ceil((i + 1) * size / out), by float
    # arithmetic here (the kernels use integer division).
    return [(int(np.floor(i * size / out)), int(np.ceil((i + 1) * size / out))) for i in range(out)]


def adaptive_avg_ref(x, output_size, gy=None):
    P, Q = (output_size, output_size) if isinstance(output_size, int) else output_size
    N, C, H, W = x.shape
    P, Q = P or H, Q or W
    y, gx = np.zeros((N, C, P, Q)), np.zeros_like(x)
    for i, (h0, h1) in enumerate(_bins(H, P)):
        for j, (w0, w1) in enumerate(_bins(W, Q)):
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
            if gy is not None:
                gx[:, :, h0:h1, w0:w1] += gy[:, :, i, j, None, None] / ((h1 - h0) * (w1 - w0))
    return y if gy is None else (y, gx)


# (output_size, input shape, expected per-sample output shape)
CONFIGS = [
    ((2, 3), (2, 3, 6, 9), (3, 2, 3)),  # bins tile the plane
    ((3, 2), (1, 2, 7, 5), (2, 3, 2)),  # overlapping bins, batch 1
    (1, (2, 4, 5, 3), (4, 1, 1)),
    (4, (2, 2, 3, 2), (2, 4, 4)),  # more outputs than inputs: bins repeat inputs
    ((5, None), (2, 3, 7, 4), (3, 5, 4)),  # None keeps the input's width
    ((None, 3), (1, 1, 2, 11), (1, 2, 3)),
]
IDS = [f"out{o}-{'x'.join(map(str, s))}" for o, s, _ in CONFIGS]


@pytest.mark.parametrize("output_size, shape, out", CONFIGS[:4], ids=IDS[:4])
def test_adaptive_avg_pool2d_cpu(output_size, shape, out):
    layer = AdaptiveAvgPool2d(output_size)
    assert layer.output_shape(shape[1:]) == out
    check_layer(layer, [shape], partial(adaptive_avg_ref, output_size=output_size), cuda=False)


def _model(layer, shape, dtype="float32"):
    g = nc.Graph()
    g.output(g.add_layer(layer, g.input(shape[1:]), name="pool"))
    return nc.Model(g, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output_size, shape, out", CONFIGS, ids=IDS)
def test_adaptive_avg_pool2d_matches_torch(output_size, shape, out, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    model = _model(AdaptiveAvgPool2d(output_size), shape, dtype)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = model.backward(gy)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.adaptive_avg_pool2d(tx, output_size)
    ty.backward(torch.tensor(gy))
    tol = 1e-6 if dtype == "float32" else 1e-14
    assert y.dtype == gx.dtype == np.dtype(dtype)
    assert y.shape == tuple(ty.shape) == (shape[0], *out)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=tol, atol=tol)


def test_adaptive_avg_pool2d_gives_one_output_size_for_any_input_size():
    layer = AdaptiveAvgPool2d((2, 2))
    for hw in [(2, 2), (5, 7), (31, 17), (1, 1)]:
        assert layer.output_shape((6, *hw)) == (6, 2, 2)
    assert AdaptiveAvgPool2d((None, 2)).output_shape((6, 9, 4)) == (6, 9, 2)


def test_adaptive_avg_pool2d_shape_errors():
    check_layer(AdaptiveAvgPool2d(2), [(1, 2, 3, 3)], partial(adaptive_avg_ref, output_size=2), cuda=False,
                bad_shapes=[
                    ([(1, 3, 4)], "expected an input of shape (C, H, W), found (3, 4)"),
                    ([(1, 1, 2, 3, 4)], "expected an input of shape (C, H, W), found (1, 2, 3, 4)"),
                ])


@pytest.mark.parametrize("size, exc, text", [
    (0, ValueError, "output_size must be >= 1 (or None: the input's size), found 0"),
    ((2, -1), ValueError, "output_size must be >= 1"),
    ((2, 2, 2), TypeError, "output_size must be an int or a pair of ints or None, found (2, 2, 2)"),
    (2.0, TypeError, "output_size must be an int or a pair of ints or None"),
    (None, TypeError, "output_size must be an int or a pair of ints or None, found None"),
    ((True, 2), TypeError, "output_size must be an int or a pair"),
])
def test_adaptive_avg_pool2d_bad_output_size(size, exc, text):
    with pytest.raises(exc, match=text.replace("(", r"\(").replace(")", r"\)")):
        AdaptiveAvgPool2d(size)


def test_adaptive_avg_pool2d_builder_config_and_spec():
    g = nc.Graph()
    h = g.adaptive_avg_pool2d(g.input((4, 9, 7)), output_size=(3, None), name="pool")
    model = nc.Model(g)
    assert model.output_shape == (4, 3, 7)
    assert h.config == {"output_size": [3, None]}
    again = nc.Model.from_spec(model.to_spec())
    assert again.output_shape == (4, 3, 7)
    assert model.flops() == 4 * 3 * 7 * 3 * 1


@pytest.mark.cuda
@pytest.mark.parametrize("output_size, shape", [((3, 2), (1, 2, 7, 5)), (4, (2, 1, 3, 2))])
def test_adaptive_avg_pool2d_cuda(output_size, shape):
    check_layer(AdaptiveAvgPool2d(output_size), [shape], partial(adaptive_avg_ref, output_size=output_size),
                cuda=True, threads=False)


CASES = adaptive_cases(16, seed=3)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{o}@{s}" for o, s in CASES])
def test_adaptive_avg_pool2d_random_sizes_fenced(i):
    output_size, shape = CASES[i]
    check_fenced(AdaptiveAvgPool2d(output_size), shape, partial(adaptive_avg_ref, output_size=output_size), seed=i,
                 exact_y=False)
