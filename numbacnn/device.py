"""Devices: "cpu" and "cuda"; availability, allocation, host<->device transfer, synchronize,
and the one way code reaches a device's kernels.

Only the executor moves data between host and device, through ``Backend.to_device`` and
``Backend.to_host``, which count what they move (a test forbids activation transfers in a
training step). ``numba.cuda`` is imported only when CUDA is asked for.

Kernels come in twin modules, ``<stem>_cpu`` and ``<stem>_cuda``, with one interface (the same
``__all__``, the same signatures); ``kernel_module(stem, device)`` gives the one for a device
and ``array_device(a)`` says which device an array lives on, so no caller branches on array
types or imports a device's module by hand.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from types import ModuleType
from typing import Any, Sequence

import numpy as np

__all__ = ["DEVICES", "DeviceError", "cuda_available", "cuda_unavailable_reason", "is_simulator", "get_backend",
           "empty_cache", "gpu_switch", "check_device", "kernel_module", "array_device"]

DEVICES = ("cpu", "cuda")


class DeviceError(RuntimeError):
    """A device was asked for that is unknown or not available, or a layer cannot run there."""


def is_simulator() -> bool:
    """True when Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` before import)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def gpu_switch(env: str) -> bool | None:
    """A CUDA speed switch that is on by default on a real GPU (CUDA graphs, cuBLAS): the
    environment variable's choice (``1`` on, anything else off) when it is set, False under
    the simulator (tests ask for the path they check), None for "the GPU's default"."""
    value = os.environ.get(env)
    if value is not None:
        return value == "1"
    return False if is_simulator() else None


_warned: set[str] = set()


def cuda_unavailable_reason() -> str | None:
    """Why numbacnn's CUDA kernels cannot run here, in one phrase; None when they can.

    No NVIDIA driver and no simulator answers at once, without importing ``numba.cuda``, so
    CPU-only runs never load a GPU stack. An installed numba-cuda that fails to import or to
    initialise the driver is not "no GPU": its error is part of the reason, and a warning
    says so once per process.
    """
    if not is_simulator() and not (os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")):
        return "no NVIDIA driver was found (/dev/nvidiactl, /proc/driver/nvidia) and the CUDA simulator is off"
    if importlib.util.find_spec("numba_cuda") is None and importlib.util.find_spec("numba.cuda") is None:
        return "numba-cuda is not installed (pip install numbacnn[cuda])"
    try:
        cuda = importlib.import_module("numba.cuda")
        if cuda.is_available():
            return None
        return f"numba.cuda found no usable GPU ({_driver_error() or 'no device, or no libNVVM'})"
    except Exception as e:
        return _broken(f"numba-cuda is installed but failed to load ({type(e).__name__}: {e})")


def _driver_error() -> str | None:
    # numba.cuda.is_available() keeps the driver's initialisation error instead of raising it.
    try:
        from numba.cuda.cudadrv.driver import driver

        return driver.initialization_error
    except Exception:
        return None


def _broken(reason: str) -> str:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"CUDA is unavailable: {reason}", RuntimeWarning, stacklevel=3)
    return reason


def cuda_available() -> bool:
    """A CUDA GPU, or the simulator, can run numbacnn's CUDA kernels (see ``cuda_unavailable_reason``)."""
    return cuda_unavailable_reason() is None


def check_device(device: str) -> str:
    """Validate a device name and its availability; returns the canonical name."""
    name = str(device).lower()
    if name.startswith("cuda:"):
        name = "cuda"
    if name not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if name == "cuda":
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise DeviceError(
                f"device 'cuda' is not available: {reason} (install numbacnn[cuda] on a machine with an "
                f"NVIDIA GPU, or set NUMBA_ENABLE_CUDASIM=1 before importing numbacnn to run the kernels "
                f"in the simulator)"
            )
    return name


def array_device(a: Any) -> str:
    """The device array ``a`` lives on: "cuda" for a ``numba.cuda`` device array, else "cpu"."""
    return "cuda" if not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host") else "cpu"


_MODULES: dict[tuple[str, str], ModuleType] = {}


def kernel_module(stem: str, device: str) -> ModuleType:
    """``<stem>_<device>``: the kernel module of ``stem`` (e.g. ``"numbacnn.losses"``) for
    ``device``, imported on first use."""
    module = _MODULES.get((stem, device))
    if module is None:
        module = _MODULES[stem, device] = importlib.import_module(f"{stem}_{device}")
    return module


#: The boundary, in bytes, at which numbacnn starts every host buffer it carves for values
#: and scratch (the inference arena, the training step's heap). NumPy's
#: large allocations start 16 bytes past a page; a column matrix 16 or 48 bytes off a 64-byte
#: line ran vgg_small's conv1_1 at batch 256 (im2col, 2 threads) in 4.08 ms against 3.26
#: aligned, an output 16 bytes off in 3.40.
ALIGN = 64


def align_slack(backend: Any, dtype: Any) -> int:
    """Elements to allocate beyond what is asked, so that a start on the boundary fits: for a
    host backend (named "cpu": NumPy arrays, whose starts ``aligned_start`` reads) ALIGN /
    itemsize, else 0 (device memory is aligned, and ``aligned_start`` is 0 there)."""
    return ALIGN // np.dtype(dtype).itemsize if getattr(backend, "name", None) == "cpu" else 0


def aligned_start(a: Any) -> int:
    """Elements from the start of the flat array ``a`` to its first ALIGN-byte boundary (0 for
    device arrays)."""
    if not isinstance(a, np.ndarray):
        return 0
    return (-a.ctypes.data % ALIGN) // a.itemsize


class _Backend:
    """What both devices share: fills and sums through the twin kernel modules."""

    name = ""

    def __init__(self) -> None:
        self.h2d = 0
        self.d2h = 0
        self.allocations = 0
        self._fill = kernel_module("numbacnn._device", self.name).fill

    def empty(self, shape: Sequence[int], dtype: Any) -> Any:
        """An uninitialised buffer for the executor (counted in ``allocations``)."""
        self.allocations += 1
        return self.new(shape, dtype)

    def new(self, shape: Sequence[int], dtype: Any) -> Any:
        """An uninitialised array its caller keeps (a loss's gradient): not counted."""
        raise NotImplementedError

    def upload(self, tag: str, a: np.ndarray) -> Any:
        """The host array ``a`` as the device sees it, for a call's own use (a loss's labels):
        on the CPU ``a`` itself; on CUDA a copy in a buffer kept for ``tag`` and the shape,
        which the calling thread's next ``upload`` of that tag overwrites."""
        return a

    def reusable(self, tag: str, shape: Sequence[int], dtype: Any) -> Any:
        """A buffer for a call's own scratch, never handed to its caller (a loss's per-row
        values): on CUDA kept per thread, tag, shape and dtype, so a step allocates nothing."""
        return self.new(shape, dtype)

    def fill(self, a: Any, value: float) -> None:
        """Set every element of ``a`` to ``value`` (a device array must be contiguous)."""
        self._fill(a, value)

    def fill_zero(self, a: Any) -> None:
        self.fill(a, 0)

    def add(self, out: Any, a: Any, b: Any) -> None:
        """``out = a + b`` (``out`` may be ``a``), contiguous arrays of one shape."""
        kernel_module("numbacnn.layers.add", self.name).add_forward(a.reshape(a.size), b.reshape(b.size),
                                                                    out.reshape(out.size))


class CpuBackend(_Backend):
    """Host memory: NumPy arrays."""

    name = "cpu"

    def new(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype)

    def to_device(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a)

    def to_host(self, a: np.ndarray) -> np.ndarray:
        return a.copy()  # C order, as the kernels wrote it

    def assign(self, dst: np.ndarray, src: np.ndarray) -> None:
        np.copyto(dst, src)

    def synchronize(self) -> None:
        pass


class CudaBackend(_Backend):
    """GPU memory through ``numba.cuda`` device arrays; counts host<->device copies."""

    name = "cuda"

    def __init__(self) -> None:
        import threading

        from numba import cuda

        from ._cuda_pool import Pool

        self._cuda = cuda
        self._kept = threading.local()  # per thread: {(tag, shape, dtype): buffer}
        # Freed blocks handed out again (numbacnn/_cuda_pool.py); NUMBACNN_CUDA_POOL=0 allocates
        # every array from the driver. The simulator's arrays are NumPy's.
        self.pool = None if is_simulator() or os.environ.get("NUMBACNN_CUDA_POOL", "1") == "0" else Pool()
        super().__init__()

    def reusable(self, tag: str, shape: Sequence[int], dtype: Any) -> Any:
        kept = self._kept.__dict__.setdefault("buffers", {})
        key = (tag, tuple(shape), np.dtype(dtype))
        buf = kept.get(key)
        if buf is None:
            if len(kept) >= 64:
                kept.clear()  # many shapes over time: start again rather than pile up memory
            buf = kept[key] = self.new(shape, dtype)
        return buf

    def upload(self, tag: str, a: np.ndarray) -> Any:
        buf = self.reusable(tag, a.shape, a.dtype)
        self.put(buf, a)
        return buf

    def new(self, shape: Sequence[int], dtype: Any) -> Any:
        if self.pool is None:
            return self._cuda.device_array(tuple(shape), dtype=dtype)
        return self.pool.array(tuple(shape), dtype)

    def to_device(self, a: Any) -> Any:
        if array_device(a) == "cuda":
            return a
        self.h2d += 1
        a = np.ascontiguousarray(a)
        if self.pool is None:
            return self._cuda.to_device(a)
        out = self.pool.array(a.shape, a.dtype)
        out.copy_to_device(a)
        return out

    def to_host(self, a: Any) -> np.ndarray:
        if isinstance(a, np.ndarray):
            return a.copy()
        self.d2h += 1
        return a.copy_to_host()

    def assign(self, dst: Any, src: Any) -> None:
        dst.copy_to_device(src)

    def put(self, dst: Any, src: Any) -> None:
        """Copy ``src``, a host or device array, into the device buffer ``dst`` (from the host:
        counted in ``h2d``)."""
        if isinstance(src, np.ndarray):
            self.h2d += 1
            src = np.ascontiguousarray(src)
        dst.copy_to_device(src)

    def synchronize(self) -> None:
        self._cuda.synchronize()


_BACKENDS: dict[str, Any] = {}


def empty_cache() -> int:
    """Give the CUDA memory that numbacnn keeps for reuse back to the driver (as
    ``torch.cuda.empty_cache()``); returns the bytes released (0 without a CUDA backend)."""
    backend = _BACKENDS.get("cuda")
    pool = getattr(backend, "pool", None)
    return pool.empty() if pool is not None else 0


def get_backend(device: str) -> Any:
    """The (shared) backend object of a device, created on first use."""
    name = check_device(device)
    if name not in _BACKENDS:
        _BACKENDS[name] = CpuBackend() if name == "cpu" else CudaBackend()
    return _BACKENDS[name]
