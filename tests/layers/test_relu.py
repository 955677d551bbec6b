import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer


def relu_ref(x):
    return np.where(x > 0, x, 0.0)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (4, 10)])
def test_relu_cpu(shape):
    check_layer(nc.get_layer("relu")(), [shape], relu_ref, cuda=False)


@pytest.mark.cuda
def test_relu_cuda():
    check_layer(nc.get_layer("relu")(), [(2, 3, 3, 3)], relu_ref, cuda=True, threads=False)


@pytest.mark.parametrize("size", [1, 1000, "min-1", "min", "min+7"])
def test_relu_kernels_both_sides_of_parallel_min(size):
    # Serial below PARALLEL_MIN elements, parallel from there: the same values either way,
    # NaN passed through forward and its gradient through backward, as in PyTorch.
    from numbacnn._threads import PARALLEL_MIN
    from numbacnn.layers import relu_cpu

    n = size if isinstance(size, int) else PARALLEL_MIN + int(size[3:] or 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32)
    x[n // 2] = np.nan
    y = np.full(n, 7.0, np.float32)
    relu_cpu.relu_forward(x, y)
    want = np.where(np.isnan(x) | (x > 0), x, np.float32(0))
    np.testing.assert_array_equal(y, want)
    gy = rng.standard_normal(n).astype(np.float32)
    gx = np.full(n, 7.0, np.float32)
    relu_cpu.relu_backward(y, gy, gx)
    np.testing.assert_array_equal(gx, np.where(np.isnan(y) | (y > 0), gy, np.float32(0)))
