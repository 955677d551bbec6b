"""What the window-pooling tests of every rank share: case ids, a one-layer model, and the
comparison with PyTorch's functional pooling (forward and input gradient, float32 and float64).

Each rank's test file keeps its own configurations and naive NumPy reference; only the
harness is here, so every rank is held to the same assertions.
"""

from __future__ import annotations

import numpy as np

import numbacnn as nc


def case_ids(configs: list[tuple[dict, tuple, tuple]]) -> list[str]:
    """Readable ids for (kwargs, input shape, output shape) cases."""
    return [f"{'-'.join(f'{k}{v}' for k, v in kw.items())}-{'x'.join(map(str, shape))}" for kw, shape, _ in configs]


def pool_model(layer: nc.Layer, shape: tuple[int, ...], dtype: str = "float32") -> nc.Model:
    """``layer`` alone in a model (its node named 'pool'), for a batch of ``shape``."""
    g = nc.Graph()
    g.output(g.add_layer(layer, g.input(shape[1:]), name="pool"))
    return nc.Model(g, dtype=dtype)


def check_matches_torch(layer: nc.Layer, torch_fn: str, kw: dict, shape: tuple[int, ...], out: tuple[int, ...],
                        dtype: str, tol: float, exact_y: bool) -> None:
    """``layer`` against ``torch.nn.functional.<torch_fn>(x, **kw)`` on random data: same
    dtype and shape out, y equal (``exact_y``, as a max picks an input) or within ``tol``, and
    the input gradient within ``tol``."""
    import pytest

    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    model = pool_model(layer, shape, dtype)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = model.backward(gy)
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(torch.nn.functional, torch_fn)(tx, **kw)
    ty.backward(torch.tensor(gy))
    assert y.dtype == gx.dtype == np.dtype(dtype)
    assert y.shape == tuple(ty.shape) == (shape[0], *out)
    if exact_y:
        np.testing.assert_array_equal(y, ty.detach().numpy())
    else:
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=tol, atol=tol)
