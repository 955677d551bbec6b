"""spp's CPU kernels on seeded random levels and sizes (planes smaller than the finest grid
among them), every array fenced (numbacnn.testing.run_fenced): a read past an array brings
NaN into the results, a write past it fails the run. Forward and input gradient against loops
over the bins."""

import numpy as np
import pytest

from numbacnn.testing import run_fenced
from numbacnn_spp.spp import SPP


def spp_ref(x, gy, levels):
    """y and gx: bin (i, j) of level l spans rows floor(i H / l) to ceil((i + 1) H / l), and
    likewise columns; its gradient goes to its first largest element."""
    N, C, H, W = x.shape
    y, gx = np.empty((N, gy.shape[1])), np.zeros_like(x)
    f = 0
    for level in levels:
        for c in range(C):
            for i in range(level):
                for j in range(level):
                    h0, h1 = i * H // level, -(-(i + 1) * H // level)
                    w0, w1 = j * W // level, -(-(j + 1) * W // level)
                    for n in range(N):
                        patch = x[n, c, h0:h1, w0:w1]
                        at = np.unravel_index(np.argmax(patch), patch.shape)
                        y[n, f] = patch[at]
                        gx[n, c, h0 + at[0], w0 + at[1]] += gy[n, f]
                    f += 1
    return y, gx


_rng = np.random.default_rng(4)
# Three levels, as the rest of the suite uses: the kernels are compiled per tuple length.
CASES = [((1, 2, 4), (1, 1, 1, 1)), ((6, 5, 3), (1, 2, 2, 7))] + [
    (tuple(int(v) for v in _rng.integers(1, 7, 3)), tuple(int(v) for v in (*_rng.integers(1, 3, 2), *_rng.integers(1, 9, 2))))
    for _ in range(8)]


@pytest.mark.parametrize("levels, shape", CASES)
def test_spp_random_levels_and_sizes_fenced(levels, shape):
    rng = np.random.default_rng(sum(shape))
    layer = SPP(levels)
    x = rng.standard_normal(shape)
    gy = rng.standard_normal((shape[0], *layer.output_shape(shape[1:])))
    run = run_fenced(layer, [x], gy)
    y, gx = spp_ref(x, gy, levels)
    np.testing.assert_array_equal(run.y, y)
    np.testing.assert_allclose(run.gxs[0], gx, rtol=1e-12, atol=1e-12)
