"""Device errors on a machine without CUDA: clear, before anything moves."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.device import check_device, cuda_available


def small_model():
    g = nc.Graph()
    g.output(g.relu(g.input((2, 3, 3)), name="r"))
    return nc.Model(g)


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA (or the simulator is on)")
def test_cuda_without_gpu_or_simulator_is_refused_at_placement():
    model = small_model()
    with pytest.raises(nc.DeviceError, match="'cuda' is not available.*NUMBA_ENABLE_CUDASIM"):
        model.to("cuda")
    assert model.device == "cpu"
    assert model.forward(np.ones((1, 2, 3, 3), np.float32)).shape == (1, 2, 3, 3)


def test_unknown_device_names_the_choices():
    with pytest.raises(nc.DeviceError, match="unknown device 'tpu'; expected one of cpu, cuda"):
        check_device("tpu")
    with pytest.raises(nc.DeviceError, match="unknown device"):
        small_model().to("tpu")
