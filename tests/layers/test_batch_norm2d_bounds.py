"""batch_norm2d's CPU kernels on seeded random sizes and modes, every array fenced (run_fenced):
a read past an array brings NaN, a write past it fails the run. Forward, input and parameter
gradients and the running statistics against per-channel NumPy loops (float64)."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import run_fenced

BatchNorm2d = nc.get_layer("batch_norm2d")


def bn_ref(x, gy, w, b, mean, var, eps, batch_stats):
    """y, gx, gw, gb with the given statistics (the batch's when ``batch_stats``)."""
    y, gx = np.empty_like(x), np.empty_like(x)
    C = x.shape[1]
    gw, gb = np.empty(C), np.empty(C)
    for c in range(C):
        k = 1 / np.sqrt(var[c] + eps)
        xhat = (x[:, c] - mean[c]) * k
        y[:, c] = xhat * w[c] + b[c]
        g = gy[:, c]
        gw[c], gb[c] = (g * xhat).sum(), g.sum()
        gx[:, c] = w[c] * k * (g - g.mean() - xhat * (g * xhat).mean()) if batch_stats else w[c] * k * g
    return y, gx, gw, gb


def _cases(count, seed):
    rng = np.random.default_rng(seed)
    out = [(dict(), (1, 2, 1, 3), True), (dict(affine=False), (2, 1, 1, 1), True), (dict(), (1, 1, 1, 1), False),
           (dict(momentum=None), (2, 3, 2, 3), True), (dict(momentum=None, affine=False), (1, 2, 3, 1), False)]
    while len(out) < count:
        kw = dict(affine=bool(rng.random() < 0.7), track_running_stats=bool(rng.random() < 0.8),
                  momentum=float(rng.choice([0.1, 0.5])))
        shape = tuple(int(v) for v in rng.integers(1, 6, 4))
        training = bool(rng.random() < 0.6)
        if (training or not kw["track_running_stats"]) and shape[0] * shape[2] * shape[3] == 1:
            continue  # batch statistics of a single value: an error
        out.append((kw, shape, training))
    return out


CASES = _cases(12, seed=5)


@pytest.mark.parametrize("kw, shape, training", CASES)
def test_batch_norm2d_random_sizes_fenced(kw, shape, training):
    rng = np.random.default_rng(sum(shape))
    layer = BatchNorm2d(**kw)
    C = shape[1]
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(shape)
    params = {"weight": rng.standard_normal(C), "bias": rng.standard_normal(C)} if layer.affine else {}
    run = run_fenced(layer, [x], gy, params, training=training)
    batch_stats = training or not layer.track_running_stats
    if batch_stats:
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    else:
        mean, var = np.zeros(C), np.ones(C)
    w, b = (params["weight"], params["bias"]) if layer.affine else (np.ones(C), np.zeros(C))
    y, gx, gw, gb = bn_ref(x, gy, w, b, mean, var, layer.eps, batch_stats)
    np.testing.assert_allclose(run.y, y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(run.gxs[0], gx, rtol=1e-9, atol=1e-9)
    if layer.affine:
        np.testing.assert_allclose(run.grads["weight"], gw, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(run.grads["bias"], gb, rtol=1e-10, atol=1e-10)
    if training and layer.track_running_stats:
        M = shape[0] * shape[2] * shape[3]
        m = 1.0 if layer.momentum is None else layer.momentum  # None: the first batch counts in full
        np.testing.assert_allclose(run.buffers["running_mean"], m * mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(run.buffers["running_var"], 1 - m + m * var * M / (M - 1), rtol=1e-10, atol=1e-10)
        if layer.momentum is None:
            assert run.buffers["num_batches_tracked"].tolist() == [1.0]
    if not training or batch_stats:
        np.testing.assert_array_equal(run_fenced(layer, [x], None, params, training=training).y, run.y)
