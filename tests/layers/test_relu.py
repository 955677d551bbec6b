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
