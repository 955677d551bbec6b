"""What the batch-norm tests of ranks 1 and 3 share: parameters, a one-layer model (node
'bn'), and the step-by-step comparison with torch.nn.BatchNorm1d/3d.

Each rank's test file keeps its own configurations, data and naive reference.
"""

from __future__ import annotations

import numpy as np

import numbacnn as nc


def bn_params(C: int, seed: int = 3) -> dict[str, np.ndarray]:
    """A weight in [0.5, 2) and a normal bias per channel."""
    rng = np.random.default_rng(seed)
    return {"weight": rng.uniform(0.5, 2.0, C), "bias": rng.standard_normal(C)}


def bn_model(layer: nc.Layer, shape: tuple[int, ...], dtype: str = "float32", device: str = "cpu") -> nc.Model:
    """``layer`` alone in a model (its node named 'bn'), for a batch of ``shape``."""
    g = nc.Graph()
    g.output(g.add_layer(layer, g.input(shape[1:]), name="bn"))
    return nc.Model(g, dtype=dtype, device=device)


def check_bn_matches_torch(torch_cls: str, layer: nc.Layer, kw: dict, shape: tuple[int, ...], dtype: str,
                           rng: np.random.Generator, trainings: tuple[bool, ...], scale: float,
                           shift: float) -> None:
    """``layer`` (built from ``kw``) against ``torch.nn.<torch_cls>(C, **kw)`` over a sequence of
    steps (``trainings``: training or eval each), on x = normal * scale + shift: y, the input,
    weight and bias gradients and the running statistics agree after every step."""
    import pytest

    torch = pytest.importorskip("torch")
    C = shape[1]
    model = bn_model(layer, shape, dtype)
    tbn = getattr(torch.nn, torch_cls)(C, dtype=getattr(torch, dtype), **kw)
    if tbn.affine:
        for key, value in bn_params(C).items():
            model.params[f"bn.{key}"][...] = value
            getattr(tbn, key).data[...] = torch.tensor(value)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    for training in trainings:
        tbn.train(training)
        x = (rng.standard_normal(shape) * scale + shift).astype(dtype)
        gy = rng.standard_normal(shape).astype(dtype)
        model.zero_grad()
        y = model.forward(x, training=training, grad=True)
        gx = model.backward(gy)
        assert y.dtype == gx.dtype == np.dtype(dtype)
        tx = torch.tensor(x, requires_grad=True)
        ty = tbn(tx)
        ty.backward(torch.tensor(gy))
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
        np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)
        if tbn.affine:
            for key in ("weight", "bias"):
                np.testing.assert_allclose(model.grads[f"bn.{key}"], getattr(tbn, key).grad.numpy(), **tol)
            tbn.zero_grad()
        if tbn.track_running_stats:
            for key in ("running_mean", "running_var"):
                np.testing.assert_allclose(model.buffers[f"bn.{key}"], getattr(tbn, key).numpy(), **tol)
            if tbn.momentum is None:
                assert model.buffers["bn.num_batches_tracked"][0] == tbn.num_batches_tracked.item()
        else:
            assert model.buffers == {}
