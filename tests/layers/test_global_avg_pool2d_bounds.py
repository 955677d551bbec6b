"""global_avg_pool2d's CPU kernels on seeded random sizes (1x1 and batch 1 among them), every
array fenced (run_fenced): a read past an array brings NaN, a write past it fails the run."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import run_fenced

GlobalAvgPool2d = nc.get_layer("global_avg_pool2d")

_rng = np.random.default_rng(3)
SHAPES = [(1, 1, 1, 1), (1, 3, 1, 5), (2, 1, 7, 1)] + [tuple(int(v) for v in _rng.integers(1, 8, 4)) for _ in range(5)]


@pytest.mark.parametrize("shape", SHAPES)
def test_global_avg_pool2d_random_sizes_fenced(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(shape[:2])
    run = run_fenced(GlobalAvgPool2d(), [x], gy)
    y = np.zeros(shape[:2])
    for h in range(shape[2]):
        for w in range(shape[3]):
            y += x[:, :, h, w]
    np.testing.assert_allclose(run.y, y / (shape[2] * shape[3]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run.gxs[0], np.broadcast_to((gy / (shape[2] * shape[3]))[:, :, None, None], shape),
                               rtol=1e-12, atol=1e-12)
