"""Device memory for ``CudaBackend.new``: blocks freed by Python are kept by size and handed out
again, as PyTorch's caching allocator does.

Why: numba-cuda allocates every device array with cuMemAlloc and frees it with cuMemFree
(which waits for the device), and a layer called outside a model asks for its output and
scratch arrays on every call; on an H200 one ``cuda.device_array`` cost 16.8 us of the host's
time before anything ran (README, GPU). Here an array's memory is a block from the pool; when
the last array or view over it is collected, its ``MemoryPointer``'s finalizer puts the block
back, and the next request of that size (rounded up to ``GRANULE`` bytes) takes it without a
driver call.

Reuse is safe for the same reason it is in PyTorch: numbacnn launches everything on the
default stream, so work queued on a block before it was freed runs before work queued after it
was handed out again; CUDA graph replays are ordered with the default stream by events, and a
captured graph keeps every array its launches point into, so those blocks never come back
while the graph lives. When an allocation fails, the cached blocks are released and it is tried
once more. ``empty()`` releases them on request (``numbacnn.device.empty_cache()``) and has
numba free them at once.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from typing import Any, Callable

import numpy as np

__all__ = ["GRANULE", "Pool"]

GRANULE = 512  # bytes: what sizes are rounded up to (the driver's own alignment is 256)


class Pool:
    """Blocks by (context, rounded size). ``alloc(size)`` returns a block owning device memory
    (freed when it is collected), ``wrap(block, shape, dtype, release)`` an array over it whose
    collection calls ``release``, and ``flush()`` hands memory dropped from the pool back to the
    driver; all three are numba's unless a test passes its own.

    A release runs from a finalizer, which the garbage collector may call on any thread at any
    allocation, the pool's own included: it only appends to ``_returned`` (atomic, no lock),
    and the lock-holding methods move what it holds into the free lists first."""

    def __init__(self, alloc: Callable[[int], Any] | None = None,
                 wrap: Callable[[Any, tuple, np.dtype, Callable[[], None]], Any] | None = None,
                 context: Callable[[], Any] | None = None, flush: Callable[[], None] | None = None) -> None:
        self._alloc, self._wrap = alloc or _alloc, wrap or _wrap
        self._context, self._flush = context or _context, flush or _flush
        self._free: dict[tuple[Any, int], list[Any]] = {}
        self._returned: deque[tuple[tuple[Any, int], Any]] = deque()
        self._lock = threading.Lock()
        self._cached = 0
        self.hits = self.misses = 0

    @property
    def cached_bytes(self) -> int:
        """Bytes held for reuse."""
        with self._lock:
            self._take_returned()
            return self._cached

    def array(self, shape: tuple[int, ...], dtype: Any) -> Any:
        dtype = np.dtype(dtype)
        shape = tuple(int(s) for s in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        size = max(GRANULE, -(-nbytes // GRANULE) * GRANULE)
        key = (self._context(), size)
        with self._lock:
            self._take_returned()
            blocks = self._free.get(key)
            block = blocks.pop() if blocks else None
            if block is not None:
                self._cached -= size
                self.hits += 1
            else:
                self.misses += 1
        if block is None:
            try:
                block = self._alloc(size)
            except Exception:  # out of memory, most likely: give back what is cached and try again
                if not self.empty():
                    raise
                block = self._alloc(size)
        return self._wrap(block, shape, dtype, functools.partial(self._returned.append, (key, block)))

    def _take_returned(self) -> None:
        """Move released blocks into the free lists (the lock held)."""
        while self._returned:
            key, block = self._returned.popleft()
            self._free.setdefault(key, []).append(block)
            self._cached += key[1]

    def empty(self) -> int:
        """Drop every cached block and hand its memory back to the driver; the bytes dropped."""
        with self._lock:
            self._take_returned()
            dropped, self._cached = self._cached, 0
            self._free.clear()
        self._flush()
        return dropped


def _context() -> int:
    from numba import cuda

    handle = cuda.current_context().handle  # ctypes.c_void_p or cuda.bindings' CUcontext
    return int(handle.value or 0) if hasattr(handle, "value") else int(handle)


def _flush() -> None:
    # numba queues a dropped block's cuMemFree (freed past 10 of them or 20% of the memory);
    # clearing the queue frees them now (a no-op while a capture defers clean-up).
    from numba import cuda

    cuda.current_context().deallocations.clear()


def _alloc(size: int) -> Any:
    from numba import cuda

    return cuda.current_context().memalloc(size)


def _wrap(block: Any, shape: tuple, dtype: np.dtype, release: Callable[[], None]) -> Any:
    from numba.cuda.cudadrv import devicearray, driver

    strides, step = [], dtype.itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    pointer = driver.MemoryPointer(block.context, block.device_pointer, block.size, finalizer=release)
    return devicearray.DeviceNDArray(shape, tuple(reversed(strides)), dtype, gpu_data=pointer)
