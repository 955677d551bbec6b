"""The workspace a training step's nodes share for scratch (``Ctx.scratch``)."""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np

from .device import align_slack, aligned_start

__all__ = ["Workspace"]


class _Views:
    """One context's scratch views for one signature: (view, byte offset) per request."""

    __slots__ = ("items", "__weakref__")

    def __init__(self) -> None:
        self.items: list[tuple[Any, int]] = []


class Workspace:
    """Scratch memory shared by every node of one model's training step, as Caffe's and
    cuDNN's workspaces are: ``Ctx.scratch`` hands out views of one buffer, laid out from its
    start again on every forward or backward call, so the model holds the largest call's
    scratch once instead of every node's. Only one thread uses it at a time (the executor's
    training lock); inference passes have none (their arena already shares scratch).

    The buffer grows to the largest call seen; growing drops every context's cached views of
    the old buffer (so it is freed once the call that grew it returns), and a context's next
    call makes new ones."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.buf: Any = None
        self._lead = 0
        # A 64-byte line of slack, for offset 0 to start on the buffer's first line; the
        # capacity is the buffer less the whole slack, whatever its start, so growth does not
        # depend on where the allocation landed.
        self._slack = align_slack(backend, np.uint8)
        self._views: "weakref.WeakSet[_Views]" = weakref.WeakSet()

    @property
    def nbytes(self) -> int:
        return 0 if self.buf is None else int(self.buf.size)

    def views(self) -> _Views:
        """A new list of cached views, emptied whenever the buffer is replaced."""
        v = _Views()
        self._views.add(v)
        return v

    def view(self, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        """The bytes from ``offset`` on as an array of ``shape``, exactly its size."""
        end = offset + math.prod(shape) * dtype.itemsize
        if self.buf is None or end + self._slack > self.buf.size:
            self.drop()
            self.buf = self.backend.empty((end + self._slack,), np.uint8)
            self._lead = aligned_start(self.buf)  # offsets count from the buffer's first 64-byte line
        return self.buf[self._lead + offset:self._lead + end].view(dtype).reshape(shape)

    def drop(self) -> None:
        """Forget the buffer and every view of it that a context keeps."""
        for v in list(self._views):
            v.items.clear()
        self.buf = None
