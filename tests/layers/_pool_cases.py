"""What the pooling tests share: case ids, a one-layer model, the comparison with PyTorch's
functional pooling (forward and input gradient, float32 and float64), random adaptive cases
and the fenced comparison with a naive reference.

Each rank's test file keeps its own configurations and naive NumPy reference; only the
harness is here, so every rank is held to the same assertions.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

import numbacnn as nc
from numbacnn.testing import run_fenced


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


def adaptive_cases(count: int, seed: int) -> list[tuple[tuple[int, int], tuple[int, int, int, int]]]:
    """``count`` random (output_size, input shape) cases for an adaptive pooling: outputs of
    1 to 6 a side, planes of 1 to 11 (so smaller, equal and larger planes all occur)."""
    rng = np.random.default_rng(seed)
    return [((int(rng.integers(1, 7)), int(rng.integers(1, 7))),
             (int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 12)), int(rng.integers(1, 12))))
            for _ in range(count)]


def check_fenced(layer: nc.Layer, shape: tuple[int, ...], ref: Callable[..., tuple[np.ndarray, np.ndarray]], seed: int,
                 exact_y: bool) -> None:
    """``layer`` run fenced (float64, guard bands around every buffer) on random data against
    the naive ``ref(x, gy=gy) -> (y, gx)``: y equal (``exact_y``) or within 1e-12, the input
    gradient within 1e-12."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    gy = rng.standard_normal((shape[0], *layer.output_shape(shape[1:])))
    run = run_fenced(layer, [x], gy)
    want_y, want_gx = ref(x, gy=gy)
    if exact_y:
        np.testing.assert_array_equal(run.y, want_y, err_msg=f"forward of {layer!r} on {shape}")
    else:
        np.testing.assert_allclose(run.y, want_y, rtol=1e-12, atol=1e-12, err_msg=f"forward of {layer!r} on {shape}")
    np.testing.assert_allclose(run.gxs[0], want_gx, rtol=1e-12, atol=1e-12, err_msg=f"input gradient of {layer!r}")


def check_max_fenced(layer: nc.Layer, shape: tuple[int, ...], ref: Callable[..., tuple[np.ndarray, np.ndarray]],
                     seed: int) -> tuple[Any, np.ndarray]:
    """A max pooling run fenced on random data (float32 for every fourth seed, else float64)
    against the naive float64 ``ref(x, gy=gy) -> (y, gx)``: y exactly (a max picks an
    input), the input gradient within 1e-6. Returns the run and its x, for further checks."""
    dtype = np.float32 if seed % 4 == 3 else np.float64
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    gy = rng.standard_normal((shape[0], *layer.output_shape(shape[1:]))).astype(dtype)
    run = run_fenced(layer, [x], gy)
    want_y, want_gx = ref(x.astype(np.float64), gy=gy.astype(np.float64))
    np.testing.assert_array_equal(run.y, want_y.astype(dtype), err_msg=f"forward of {layer!r} on {shape}")
    np.testing.assert_allclose(run.gxs[0], want_gx, rtol=1e-6, atol=1e-6, err_msg=f"input gradient of {layer!r}")
    return run, x
