"""localconv's CPU kernels on seeded random geometries, every array fenced
(numbacnn.testing.run_fenced): a read past an array brings NaN into the results, a write past
it fails the run. Forward, input, weight and bias gradients against per-tap NumPy products."""

import numpy as np
import pytest

from numbacnn import ShapeError
from numbacnn.testing import run_fenced
from numbacnn_localconv.localconv import LocalConv


def localconv_ref(x, w, b, gy, stride, pads):
    """y, gx, gw, gb by loops over the kernel taps, each a product of strided slices of the
    zero-padded input with that tap's per-position weights (float64)."""
    (sh, sw), (top, bottom, left, right) = stride, pads
    P, Q, K, C, R, S = w.shape
    N, _, H, W = x.shape
    xp = np.zeros((N, C, H + top + bottom, W + left + right))
    xp[:, :, top:top + H, left:left + W] = x
    y, gxp, gw = np.zeros((N, K, P, Q)), np.zeros_like(xp), np.zeros_like(w)
    for r in range(R):
        for s in range(S):
            rows, cols = slice(r, r + sh * (P - 1) + 1, sh), slice(s, s + sw * (Q - 1) + 1, sw)
            tap = xp[:, :, rows, cols]
            y += np.einsum("ncpq,pqkc->nkpq", tap, w[..., r, s])
            gxp[:, :, rows, cols] += np.einsum("nkpq,pqkc->ncpq", gy, w[..., r, s])
            gw[..., r, s] = np.einsum("nkpq,ncpq->pqkc", gy, tap)
    if b is not None:
        y += b
    return y, gxp[:, :, top:top + H, left:left + W], gw, gy.sum(axis=0)


def _cases(count, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        R, S = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        padding = [0, int(rng.integers(0, 3)), (int(rng.integers(0, 3)), int(rng.integers(0, 3))),
                   tuple(int(v) for v in rng.integers(0, 3, 4)), "same" if stride == (1, 1) else "valid"][rng.integers(0, 5)]
        cfg = dict(out_channels=int(rng.integers(1, 4)), kernel_size=(R, S), stride=stride, padding=padding,
                   bias=bool(rng.random() < 0.7))
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 8)), int(rng.integers(1, 8)))
        try:
            LocalConv(**cfg).output_shape(shape[1:])
        except ShapeError:
            continue
        out.append((cfg, shape))
    return out


CASES = _cases(16, seed=9)


@pytest.mark.parametrize("cfg, shape", CASES, ids=[f"{c}@{s}" for c, s in CASES])
def test_localconv_random_geometries_fenced(cfg, shape):
    rng = np.random.default_rng(sum(shape))
    layer = LocalConv(**cfg)
    x = rng.standard_normal(shape)
    gy = rng.standard_normal((shape[0], *layer.output_shape(shape[1:])))
    run = run_fenced(layer, [x], gy)
    y, gx, gw, gb = localconv_ref(x, run.params["weight"], run.params.get("bias"), gy, layer.stride, layer.pads)
    np.testing.assert_allclose(run.y, y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(run.gxs[0], gx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(run.grads["weight"], gw, rtol=1e-10, atol=1e-10)
    if layer.bias:
        np.testing.assert_allclose(run.grads["bias"], gb, rtol=1e-10, atol=1e-10)
