"""Devices: "cpu" and "cuda"; availability, allocation, host<->device transfer, synchronize.

Only the executor moves data between host and device, through ``Backend.to_device`` and
``Backend.to_host``, which count what they move (a test forbids activation transfers in a
training step). ``numba.cuda`` is imported only when CUDA is asked for.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

__all__ = ["DEVICES", "DeviceError", "cuda_available", "is_simulator", "get_backend", "check_device"]

DEVICES = ("cpu", "cuda")


class DeviceError(RuntimeError):
    """A device was asked for that is unknown or not available, or a layer cannot run there."""


def is_simulator() -> bool:
    """True when Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` before import)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def cuda_available() -> bool:
    """A CUDA GPU, or the simulator, can run numbacnn's CUDA kernels.

    Without the simulator and without an NVIDIA driver in sight this answers False without
    importing ``numba.cuda``, so CPU-only runs never load a GPU stack.
    """
    if not is_simulator() and not (os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")):
        return False
    try:
        from numba import cuda
    except Exception:  # numba-cuda missing or broken: no CUDA, said plainly by check_device
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def check_device(device: str) -> str:
    """Validate a device name and its availability; returns the canonical name."""
    name = str(device).lower()
    if name.startswith("cuda:"):
        name = "cuda"
    if name not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if name == "cuda" and not cuda_available():
        raise DeviceError(
            "device 'cuda' is not available: no CUDA GPU was found and the CUDA simulator is off "
            "(install numbacnn[cuda] on a machine with an NVIDIA GPU, or set NUMBA_ENABLE_CUDASIM=1 "
            "before importing numbacnn to run the kernels in the simulator)"
        )
    return name


class CpuBackend:
    """Host memory: NumPy arrays."""

    name = "cpu"

    def __init__(self) -> None:
        self.h2d = 0
        self.d2h = 0
        self.allocations = 0

    def empty(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        self.allocations += 1
        return np.empty(shape, dtype)

    def fill_zero(self, a: np.ndarray) -> None:
        a.fill(0)

    def to_device(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a)

    def to_host(self, a: np.ndarray) -> np.ndarray:
        return np.array(a, copy=True)

    def assign(self, dst: np.ndarray, src: np.ndarray) -> None:
        np.copyto(dst, src)

    def add(self, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        """``out = a + b`` (``out`` may be ``a``), contiguous arrays of one shape, on both cores."""
        from .layers.add_cpu import add_forward

        add_forward(a.reshape(a.size), b.reshape(b.size), out.reshape(out.size))

    def synchronize(self) -> None:
        pass


class CudaBackend:
    """GPU memory through ``numba.cuda`` device arrays; counts host<->device copies."""

    name = "cuda"

    def __init__(self) -> None:
        from numba import cuda

        from . import _device_cuda

        self._cuda = cuda
        self._kernels = _device_cuda
        self.h2d = 0
        self.d2h = 0
        self.allocations = 0

    def empty(self, shape: Sequence[int], dtype: Any) -> Any:
        self.allocations += 1
        return self._cuda.device_array(tuple(shape), dtype=dtype)

    def fill_zero(self, a: Any) -> None:
        self._kernels.fill(a, 0.0)

    def to_device(self, a: Any) -> Any:
        if not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host"):
            return a
        self.h2d += 1
        return self._cuda.to_device(np.ascontiguousarray(a))

    def to_host(self, a: Any) -> np.ndarray:
        if isinstance(a, np.ndarray):
            return a.copy()
        self.d2h += 1
        return a.copy_to_host()

    def assign(self, dst: Any, src: Any) -> None:
        dst.copy_to_device(src)

    def add(self, out: Any, a: Any, b: Any) -> None:
        """``out = a + b`` (``out`` may be ``a``), contiguous device arrays of one shape."""
        from .layers.add_cuda import add_forward

        if out.size:
            add_forward(a.reshape(a.size), b.reshape(b.size), out.reshape(out.size))

    def synchronize(self) -> None:
        self._cuda.synchronize()


_BACKENDS: dict[str, Any] = {}


def get_backend(device: str) -> Any:
    """The (shared) backend object of a device, created on first use."""
    name = check_device(device)
    if name not in _BACKENDS:
        _BACKENDS[name] = CpuBackend() if name == "cpu" else CudaBackend()
    return _BACKENDS[name]
