"""Device errors on a machine without CUDA: clear, before anything moves."""

import sys

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import device
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


def test_broken_numba_cuda_is_reported_not_read_as_no_gpu(monkeypatch):
    # The simulator flag gets past the driver check; numba.cuda then fails to import, as a
    # numba-cuda built for another NumPy does. That is not "no GPU": say what failed.
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    monkeypatch.setitem(sys.modules, "numba.cuda", None)
    monkeypatch.setattr(device, "_warned", set())
    with pytest.warns(RuntimeWarning, match="CUDA is unavailable: numba-cuda is installed but failed to load "
                                            r"\(ModuleNotFoundError: .*numba.cuda"):
        assert not cuda_available()
    with pytest.raises(nc.DeviceError, match="'cuda' is not available: numba-cuda is installed but failed to load"):
        check_device("cuda")


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA (or the simulator is on)")
def test_no_gpu_says_so_without_a_warning(recwarn):
    assert "no NVIDIA driver was found" in device.cuda_unavailable_reason()
    assert not recwarn.list


def test_graphs_and_cublas_are_the_defaults_on_a_real_gpu_only(monkeypatch):
    import warnings

    from numbacnn import _cublas, _cuda_graph, device

    for env in (_cublas.ENV, _cuda_graph.ENV):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(device, "is_simulator", lambda: True)
    assert not _cuda_graph.enabled() and not _cublas.enabled()  # the simulator: only when asked
    monkeypatch.setattr(device, "is_simulator", lambda: False)
    monkeypatch.setattr(_cublas, "unavailable_reason", lambda: None)
    assert _cuda_graph.enabled() and _cublas.enabled()
    monkeypatch.setattr(_cublas, "unavailable_reason", lambda: "libcublas.so.13 not found (planted)")
    monkeypatch.setattr(_cublas, "_said", [])
    with pytest.warns(RuntimeWarning, match="several times slower: libcublas.so.13 not found"):
        assert not _cublas.enabled()  # a GPU without the library: numbacnn's own products, said once
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not _cublas.enabled()
    for env in (_cublas.ENV, _cuda_graph.ENV):
        monkeypatch.setenv(env, "0")
    assert not _cuda_graph.enabled() and not _cublas.enabled()
    monkeypatch.setattr(device, "is_simulator", lambda: True)
    for env in (_cublas.ENV, _cuda_graph.ENV):
        monkeypatch.setenv(env, "1")
    assert _cuda_graph.enabled() and _cublas.enabled()


class _FakeCublas:
    """libcublas's entry points as _cublas calls them, recording each call."""

    def __init__(self, create_status=0):
        self.calls, self.create_status = [], create_status

    def cublasCreate_v2(self, ref):
        self.calls.append("create")
        return self.create_status

    def cublasSetStream_v2(self, handle, stream):
        self.calls.append(("stream", stream))
        return 0

    def cublasSetWorkspace_v2(self, handle, pointer, size):
        self.calls.append(("workspace", pointer, size))
        return 0


def _fake_device_array(monkeypatch):
    import types

    from numba import cuda

    monkeypatch.setattr(cuda, "device_array", lambda shape, dtype: types.SimpleNamespace(
        device_ctypes_pointer=types.SimpleNamespace(value=4096)), raising=False)


def test_cublas_sets_its_workspace_again_after_every_stream_change(monkeypatch):
    # cublasSetStream puts a handle back on cuBLAS's own workspace, which would then allocate
    # inside a graph capture; each change of stream is followed by cublasSetWorkspace.
    import threading

    from numbacnn import _cublas

    _fake_device_array(monkeypatch)
    monkeypatch.setattr(_cublas, "_local", threading.local())
    monkeypatch.setattr(_cublas, "_WORKSPACES", [])
    lib = _FakeCublas()
    _cublas._handle(lib, 0)
    _cublas._handle(lib, 0)  # same stream: nothing to set
    _cublas._handle(lib, 77)  # a capture stream
    _cublas._handle(lib, 0)
    ws = ("workspace", 4096, _cublas.WORKSPACE)
    assert lib.calls == ["create", ("stream", None), ws, ("stream", 77), ws, ("stream", None), ws]


def test_a_cublas_that_loads_but_cannot_start_is_unavailable(monkeypatch):
    import threading

    from numbacnn import _cublas

    _fake_device_array(monkeypatch)
    monkeypatch.setattr(_cublas, "_local", threading.local())
    monkeypatch.setattr(device, "is_simulator", lambda: False)
    monkeypatch.setattr(_cublas, "_library", lambda: _FakeCublas(create_status=3))  # CUBLAS_STATUS_ALLOC_FAILED
    reason = _cublas.unavailable_reason.__wrapped__()
    assert reason.startswith("cuBLAS loaded but could not start") and "status 3" in reason
    monkeypatch.setattr(_cublas, "_library", lambda: _FakeCublas())
    assert _cublas.unavailable_reason.__wrapped__() is None
